import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { KeyPair } from '@nats-io/nkeys';
import { createUser } from '@nats-io/nkeys';
import { errors, type NatsConnection } from '@nats-io/transport-node';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { InputError } from '../models/errors.ts';
import { AuthStore, type LoadedCredentials, loadCredentials } from '../transport/auth.ts';
import {
  connectNats,
  NATS_URL_ENV,
  NatsTlsError,
  NatsUnreachableError,
  openTransport,
  type TlsFiles,
  type TlsRefusal,
  type Transport,
} from '../transport/connect.ts';
import type { Role } from '../transport/permissions.ts';
import { CREDS_ENV, clientCredsFile, credentialsFor } from './credentials.ts';
import { BusUnavailableError } from './errors.ts';
import { type KeyFlags, signerKey } from './keys.ts';

export const DEFAULT_DATA_DIR = '.plurigrid';
export const DATA_DIR_ENV = 'PLURIGRID_DATA_DIR';
/** Where a coordinator running the embedded server tells clients and workers on this machine its URL. */
const URL_FILE = 'nats.url';

export interface ConnectionFlags {
  nats?: string;
  dataDir: string;
  /** A `.creds` file to connect with (see credentials.ts for the defaults). */
  creds?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export const tlsFiles = (f: ConnectionFlags): TlsFiles | undefined =>
  f.tlsCa || f.tlsCert || f.tlsKey ? { ca: f.tlsCa, cert: f.tlsCert, key: f.tlsKey } : undefined;

/**
 * `--nats`: one or more comma-separated NATS URLs, checked here so that a typo is a usage error (exit 2) rather than
 * a server that cannot be reached. Blank (an empty environment variable) means unset.
 */
export function natsUrlOption(value: string): string | undefined {
  const servers = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (servers.length === 0) return undefined;
  for (const server of servers) {
    const url = URL.parse(server.includes('://') ? server : `nats://${server}`);
    if (!url || !['nats:', 'tls:'].includes(url.protocol) || !url.hostname) {
      throw new InvalidArgumentError(
        `"${server}" is not a NATS URL (expected nats://host:port, comma-separated for a cluster)`,
      );
    }
  }
  return servers.join(',');
}

export function addConnectionOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        '--nats <url>',
        "NATS server URL(s), comma-separated (default: the local coordinator's server)",
      )
        .env(NATS_URL_ENV)
        .argParser(natsUrlOption),
    )
    .addOption(
      new Option('--data-dir <dir>', 'data directory (keys, embedded server store, logs)')
        .env(DATA_DIR_ENV)
        .default(DEFAULT_DATA_DIR),
    )
    .addOption(
      new Option(
        '--creds <file>',
        "NATS credentials file (default: the one enrollment wrote, or on the coordinator's machine its operator keys)",
      ).env(CREDS_ENV),
    )
    .addOption(
      new Option('--tls-ca <file>', "CA certificate (PEM) that signed the NATS server's certificate").env(
        'PLURIGRID_TLS_CA',
      ),
    )
    .addOption(
      new Option('--tls-cert <file>', "TLS certificate (PEM): the server's, or a client certificate").env(
        'PLURIGRID_TLS_CERT',
      ),
    )
    .addOption(new Option('--tls-key <file>', 'private key (PEM) of --tls-cert').env('PLURIGRID_TLS_KEY'));
}

/** The server a client or worker should use: --nats (or its environment variable), else the local coordinator's. */
export function clientUrl(flags: ConnectionFlags): string {
  if (flags.nats) return flags.nats;
  const file = join(resolve(flags.dataDir), URL_FILE);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  throw new BusUnavailableError('no NATS server to talk to', [
    `start a coordinator first (\`plurigrid coordinator\` runs an embedded server and writes ${file}),`,
    `or pass --nats <url> / set ${NATS_URL_ENV}`,
  ]);
}

/** A client's or worker's connection (no JetStream resources: only the coordinator reaches the JetStream API). */
export interface Connection {
  nc: NatsConnection;
  url: string;
  /** The credentials it connected with (none on a server without authentication). */
  creds: LoadedCredentials | undefined;
  close(): Promise<void>;
}

/** Who a connection is: its role, key pair, and where enrollment keeps its credentials. */
export interface ConnectAs {
  role: Role;
  keyPair: KeyPair;
  saved: string;
}

/** What to change when a TLS handshake cannot succeed (see {@link NatsTlsError}). */
const TLS_HINTS: Record<TlsRefusal, readonly string[]> = {
  untrusted: ["pass --tls-ca <file>: the CA certificate (PEM) that signed the NATS server's certificate"],
  'wrong-name': [
    "the server's certificate must be made out for the address in --nats (an IP address: subjectAltName IP:<address>)",
  ],
  'client-certificate': [
    'pass --tls-cert <file> and --tls-key <file>: a client certificate (PEM) signed by the CA the server trusts, for ' +
      'client authentication (extendedKeyUsage clientAuth, or none)',
  ],
  'no-tls': ['leave out --tls-ca, --tls-cert and --tls-key, or start the server with TLS'],
};

/**
 * Turns "the server refused us" into an error that says what to do. `embedded`: the connection was the coordinator's
 * own, to the server it started, which it makes with its --tls-cert.
 */
function refused(err: unknown, embedded = false): never {
  if (err instanceof NatsTlsError) {
    const hints =
      embedded && err.reason === 'client-certificate'
        ? [
            'the coordinator connects to its embedded server with --tls-cert: that certificate must allow client ' +
              'authentication too (extendedKeyUsage serverAuth,clientAuth, or none)',
          ]
        : TLS_HINTS[err.reason];
    throw new BusUnavailableError(err.message, hints, { cause: err });
  }
  if (err instanceof NatsUnreachableError) throw new BusUnavailableError(err.message, [], { cause: err });
  if (err instanceof errors.AuthorizationError || err instanceof errors.UserAuthenticationExpiredError) {
    throw new BusUnavailableError(`the NATS server refused these credentials (${(err as Error).message})`, [
      'pass --creds <file> from the operator (`plurigrid creds`), or enroll with a token (`plurigrid enroll-token`)',
    ]);
  }
  throw err;
}

/**
 * Connects a client or worker (never starts a server of its own). `as` says who it is; by default a client whose
 * key is the one it signs with (`--key`, `--worker`, `--creds`, else the user's own): a client's key is its ledger
 * account.
 */
export async function openClient(
  flags: ConnectionFlags & Partial<KeyFlags>,
  name: string,
  as?: ConnectAs,
): Promise<Connection> {
  const url = clientUrl(flags);
  const where = { explicit: flags.creds, dataDir: flags.dataDir };
  let creds: LoadedCredentials | undefined;
  if (as) creds = await credentialsFor(as.role, as.keyPair, { ...where, saved: as.saved });
  else if (flags.creds) creds = await loadCredentials(flags.creds);
  else {
    const signer = await signerKey(flags as KeyFlags);
    creds = await credentialsFor('client', signer.keyPair, {
      ...where,
      saved: clientCredsFile(flags.dataDir),
    });
  }
  let nc: NatsConnection;
  try {
    nc = await connectNats({ url, name, firstConnectTimeoutMs: 10_000, creds, tls: tlsFiles(flags) });
  } catch (err) {
    refused(err);
  }
  let closing: Promise<void> | undefined;
  return {
    nc,
    url,
    creds,
    close: () => {
      closing ??= nc.drain().catch(() => {});
      return closing;
    },
  };
}

/**
 * The coordinator's transport: the given server, or an embedded one whose URL it publishes in the data dir. The
 * embedded server runs with authentication from the operator keys in `<data-dir>/auth` (made on first start), and
 * with TLS when --tls-cert is given; the coordinator connects with a coordinator JWT it issues itself (or --creds).
 */
export async function openServerSide(
  flags: ConnectionFlags & { replicas?: number },
  name: string,
): Promise<Transport & { auth: AuthStore | undefined; userKey: string | undefined }> {
  const dataDir = resolve(flags.dataDir);
  const embedded = !flags.nats;
  const auth =
    embedded || (await AuthStore.exists(dataDir))
      ? await AuthStore.open(dataDir, { create: embedded })
      : undefined;
  const creds = flags.creds
    ? await loadCredentials(flags.creds)
    : auth && (await credentialsFor('coordinator', createUser(), { saved: '', dataDir }));
  const tls = tlsFiles(flags);
  let serverConfig: string | undefined;
  if (embedded && auth) serverConfig = (await auth.serverConfig()) + (tls ? serverTls(tls) : '');
  let transport: Transport;
  try {
    transport = await openTransport({
      ...(flags.nats ? { url: flags.nats } : {}),
      dataDir,
      name,
      creds,
      tls,
      serverConfig,
      ...(flags.replicas !== undefined ? { replicas: flags.replicas } : {}),
    });
  } catch (err) {
    refused(err, embedded);
  }
  const userKey = creds?.key;
  if (!transport.embedded) return { ...transport, auth, userKey };
  await mkdir(dataDir, { recursive: true });
  const file = join(dataDir, URL_FILE);
  await writeFile(file, `${transport.url}\n`);
  const close = transport.close;
  return {
    ...transport,
    auth,
    userKey,
    close: async () => {
      await rm(file, { force: true });
      await close();
    },
  };
}

/**
 * The embedded server's TLS block: its certificate, and with a CA, client certificates required and checked against
 * it (mutual TLS). The server still listens on 127.0.0.1 only.
 */
function serverTls(tls: TlsFiles): string {
  if (!tls.cert || !tls.key) {
    throw new InputError('the embedded NATS server needs a certificate to serve TLS', [
      tls.cert
        ? '--tls-cert needs its private key: pass --tls-key'
        : '--tls-cert and --tls-key: the server certificate (PEM) and its key; --tls-ca then makes clients present ' +
          'certificates signed by that CA',
    ]);
  }
  const q = (p: string) => JSON.stringify(resolve(p));
  return [
    'tls {',
    `  cert_file: ${q(tls.cert)}`,
    `  key_file: ${q(tls.key)}`,
    ...(tls.ca ? [`  ca_file: ${q(tls.ca)}`, '  verify: true'] : []),
    '  timeout: 5',
    '}',
    '',
  ].join('\n');
}
