/**
 * Connections: `connectNats` for a client that reconnects forever, `openTransport` for the usual start-up (use the
 * given server or start the embedded one, create the resources), and a zod-validated JSON codec for wire messages.
 */
import { readFile } from 'node:fs/promises';
import { isIP, connect as tcpConnect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type ConnectionOptions,
  checkServerIdentity,
  createSecureContext,
  type TLSSocket,
  connect as tlsConnect,
} from 'node:tls';
import {
  connect,
  credsAuthenticator,
  jwtAuthenticator,
  type NatsConnection,
  type TlsOptions,
} from '@nats-io/transport-node';
import type { z } from 'zod';
import { InputError, parseInput } from '../models/errors.ts';
import type { LoadedCredentials } from './auth.ts';
import { type EmbeddedNats, startEmbeddedNats } from './nats-server.ts';
import { inboxPrefix } from './permissions.ts';
import { ensureResources, type Resources } from './resources.ts';
import { type StatusWatch, watchStatus } from './status.ts';

/** Environment variable naming the NATS server to use instead of the embedded one. */
export const NATS_URL_ENV = 'PLURIGRID_NATS_URL';
const DEFAULT_FIRST_CONNECT_TIMEOUT_MS = 30_000;

export interface ConnectOptions {
  /** One URL, or several separated by commas (`nats://a:4222,nats://b:4222`). */
  url: string;
  /** Connection name shown by the server (e.g. `plurigrid-coordinator`). */
  name: string;
  /**
   * How long to wait for the first connection before failing with a clear error (default 30 s; `Infinity` waits
   * forever). Once connected, the client reconnects forever.
   */
  firstConnectTimeoutMs?: number;
  /** The user's credentials (a `.creds` file's content); none on a server without authentication. */
  creds?: Pick<LoadedCredentials, 'key' | 'text'>;
  /** A bearer JWT of user `key` instead (an enrollment token's, which needs no seed). */
  bearer?: { jwt: string; key: string };
  /** TLS: the CA that signed the server's certificate, and a client certificate where the server asks for one. */
  tls?: TlsFiles;
}

/** PEM files for TLS (`--tls-ca`, `--tls-cert`, `--tls-key`). */
export interface TlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

function servers(url: string): string[] {
  return url
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function hostPort(server: string): { host: string; port: number } | null {
  try {
    const u = new URL(server.includes('://') ? server : `nats://${server}`);
    return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port ? Number(u.port) : 4222 };
  } catch {
    return null;
  }
}

/** No server at the given URL(s) accepted a connection in time. */
export class NatsUnreachableError extends Error {
  readonly code = 'unavailable';
  constructor(message: string) {
    super(message);
    this.name = 'NatsUnreachableError';
  }
}

/**
 * Why a TLS handshake cannot succeed: `untrusted` (the server's certificate is not signed by a CA we trust),
 * `wrong-name` (signed, but not made out for the address we dialled), `client-certificate` (the server wants a client
 * certificate we did not send, or refuses the one we sent), `no-tls` (we have TLS files; the server has no TLS).
 */
export type TlsRefusal = 'untrusted' | 'wrong-name' | 'client-certificate' | 'no-tls';

/**
 * The server and this client cannot agree on TLS. Unlike a server that is down, waiting does not help: a certificate
 * or a flag has to change, so the first connection fails at once with this (an unavailable server, to the CLI).
 */
export class NatsTlsError extends NatsUnreachableError {
  readonly reason: TlsRefusal;
  /** The server, as `host:port`. */
  readonly server: string;
  /** The TLS library's code (an OpenSSL verification result or alert), where there is one. */
  readonly tlsCode: string | undefined;
  constructor(reason: TlsRefusal, server: string, message: string, tlsCode?: string) {
    super(message);
    this.name = 'NatsTlsError';
    this.reason = reason;
    this.server = server;
    this.tlsCode = tlsCode;
  }
}

/** The contents of the TLS files, read once per first connection (nats.js reads the files again on each reconnect). */
interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** Reads and checks the TLS files: a missing file, or a certificate that is not its key's, is the user's to fix. */
async function loadTls(files: TlsFiles | undefined): Promise<TlsMaterial | undefined> {
  if (!files || !(files.ca || files.cert || files.key)) return undefined;
  if (!files.cert !== !files.key) {
    throw new InputError('incomplete TLS client certificate', [
      files.cert
        ? 'a certificate (--tls-cert) needs its private key (--tls-key)'
        : 'a private key (--tls-key) needs its certificate (--tls-cert)',
    ]);
  }
  const issues: string[] = [];
  const read = async (what: string, path: string | undefined) => {
    if (!path) return undefined;
    try {
      return await readFile(path);
    } catch (err) {
      issues.push(`${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      return undefined;
    }
  };
  const material = {
    ca: await read('CA certificate (--tls-ca)', files.ca),
    cert: await read('certificate (--tls-cert)', files.cert),
    key: await read('private key (--tls-key)', files.key),
  };
  if (issues.length > 0) throw new InputError('cannot read the TLS files', issues);
  try {
    createSecureContext(material);
  } catch (err) {
    throw new InputError('the TLS files do not load', [(err as Error).message]);
  }
  return material;
}

/** `host:port`, with an IPv6 address in brackets. */
const address = (t: { host: string; port: number }) =>
  isIP(t.host) === 6 ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;

/** How long one look at a server may take: TCP connect, its INFO line, the TLS handshake. */
const PROBE_TIMEOUT_MS = 3_000;

/**
 * Alerts by which a server refuses a client's certificate (or the lack of one), as Node names them: the alert's name
 * after a protocol part that depends on the OpenSSL version (`ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE` in OpenSSL 3.0,
 * `ERR_SSL_SSL/TLS_ALERT_BAD_CERTIFICATE` in 3.5, `ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`).
 */
const CLIENT_CERTIFICATE_ALERT =
  /^ERR_SSL_.*_ALERT_(BAD_CERTIFICATE|UNSUPPORTED_CERTIFICATE|CERTIFICATE_[A-Z_]+|UNKNOWN_CA|ACCESS_DENIED)$/;

function parseInfo(line: string): { tls_required?: boolean; tls_available?: boolean } | undefined {
  const m = /^INFO\s+(\{.*\})\s*$/.exec(line);
  if (!m) return undefined;
  try {
    return JSON.parse(m[1]!) as { tls_required?: boolean; tls_available?: boolean };
  } catch {
    return undefined;
  }
}

/**
 * One look at a server before nats.js takes over: `up` when it sends its INFO and, if it speaks TLS, the handshake
 * succeeds with our files; `down` when it does not answer; a {@link NatsTlsError} when the handshake cannot succeed.
 * nats.js's first-connect loop would retry a refused handshake forever, and in TLS 1.3 a server checks a client's
 * certificate only after the handshake, so a refused client just sees the connection drop. This handshake is capped
 * at TLS 1.2, where the server's verdict on our certificate is an alert inside the handshake; a server that speaks
 * only TLS 1.3 leaves the question open (`up`) and nats.js finds out for itself. A server that completes the
 * handshake and sees us leave logs nothing; one that refuses us logs why, as it would for nats.js.
 */
function probe(target: { host: string; port: number }, material: TlsMaterial | undefined): Promise<Probe> {
  const server = address(target);
  return new Promise((done) => {
    const socket = tcpConnect(target);
    let secure: TLSSocket | undefined;
    let settled = false;
    const finish = (result: Probe) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      secure?.destroy();
      socket.destroy();
      done(result);
    };
    const timer = setTimeout(() => finish('down'), PROBE_TIMEOUT_MS);
    socket.once('error', () => finish('down'));
    socket.once('close', () => finish('down'));
    let head = '';
    const onData = (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n');
      if (end < 0) {
        if (head.length > 65_536) finish('up'); // not a NATS server's INFO: not ours to judge
        return;
      }
      socket.off('data', onData);
      socket.pause();
      const info = parseInfo(head.slice(0, end));
      if (!info) return finish('up');
      if (!info.tls_required && !(material && info.tls_available)) {
        return finish(
          material
            ? new NatsTlsError(
                'no-tls',
                server,
                `TLS files were given, but the NATS server at ${server} does not offer TLS`,
              )
            : 'up',
        );
      }
      secure = tlsConnect({
        socket,
        ...(isIP(target.host) ? {} : { servername: target.host }),
        ...material,
        // Both checks are made below, where a failure can say which: the chain, then the name (against the host we
        // dialled: Node would check an IP address's certificate against "localhost").
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
        maxVersion: 'TLSv1.2',
      });
      secure.once('secureConnect', () => {
        const tls = secure!;
        if (!tls.authorized) {
          const code = String(tls.authorizationError);
          return finish(
            new NatsTlsError(
              'untrusted',
              server,
              `the NATS server at ${server} presented a certificate this client does not trust (${code}): ` +
                (material?.ca ? 'the CA given did not sign it' : 'no CA that signed it was given'),
              code,
            ),
          );
        }
        const wrongName = checkServerIdentity(target.host, tls.getPeerCertificate());
        if (wrongName) {
          return finish(
            new NatsTlsError(
              'wrong-name',
              server,
              `the NATS server at ${server} presented a certificate that is not made out for ${target.host} ` +
                `(${wrongName.message})`,
              (wrongName as NodeJS.ErrnoException).code,
            ),
          );
        }
        finish('up');
      });
      secure.once('error', (err: NodeJS.ErrnoException) => {
        if (!err.code || !CLIENT_CERTIFICATE_ALERT.test(err.code)) return finish('up');
        finish(
          new NatsTlsError(
            'client-certificate',
            server,
            material?.cert
              ? `the NATS server at ${server} refused this client certificate (${err.code})`
              : `the NATS server at ${server} requires a client certificate, and none was given (${err.code})`,
            err.code,
          ),
        );
      });
    };
    socket.on('data', onData);
  });
}

type Probe = 'up' | 'down' | NatsTlsError;

/**
 * The client's `waitOnFirstConnect` loop cannot be cancelled, and retries a refused TLS handshake forever, so before
 * handing over to it we wait (bounded) until at least one server answers and would complete a handshake with us: a
 * wrong URL then fails with a message instead of hanging forever, and a TLS mismatch at once, saying which.
 */
async function awaitServer(url: string, material: TlsMaterial | undefined, timeoutMs: number): Promise<void> {
  const targets = servers(url)
    .map(hostPort)
    .filter((t) => t !== null);
  if (targets.length === 0) return;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const results = await Promise.all(targets.map((t) => probe(t, material)));
    if (results.includes('up')) return;
    const refusal = results.find((r) => r instanceof NatsTlsError);
    if (refusal) throw refusal;
    if (Date.now() >= deadline) {
      throw new NatsUnreachableError(
        `cannot reach the NATS server at ${url} (no answer within ${Math.round(timeoutMs / 1000)} s); check --nats / ` +
          `${NATS_URL_ENV}, or leave both unset to use the embedded server`,
      );
    }
    await sleep(200);
  }
}

/**
 * nats.js's TLS options: the files (read again on each reconnect, so renewed certificates are picked up) and a check
 * of the server's name that works for IP addresses. nats.js's Node transport hands these options to `tls.connect`,
 * but names no server when it dials an IP address, and Node then checks the certificate against "localhost": a
 * certificate made out for the address we dialled (subjectAltName IP:…) would be refused. So a check against
 * "localhost" that no URL asked for is a check against the IP addresses in the URLs instead.
 */
function natsTls(url: string, files: TlsFiles | undefined) {
  if (!files || !(files.ca || files.cert)) return undefined;
  const hosts = servers(url)
    .map(hostPort)
    .filter((t) => t !== null)
    .map((t) => t.host);
  const options: TlsOptions & Pick<ConnectionOptions, 'checkServerIdentity'> = {
    caFile: files.ca,
    certFile: files.cert,
    keyFile: files.key,
    checkServerIdentity: (name, cert) => {
      if (name !== 'localhost' || hosts.includes('localhost')) return checkServerIdentity(name, cert);
      const ips = hosts.filter((h) => isIP(h));
      return ips.some((ip) => checkServerIdentity(ip, cert) === undefined)
        ? undefined
        : checkServerIdentity(ips[0] ?? name, cert);
    },
  };
  return options;
}

/** A connection that waits for its first server and then reconnects forever (every 250 ms while the server is down). */
export async function connectNats(options: ConnectOptions): Promise<NatsConnection> {
  const { creds, bearer, tls } = options;
  await awaitServer(
    options.url,
    await loadTls(tls),
    options.firstConnectTimeoutMs ?? DEFAULT_FIRST_CONNECT_TIMEOUT_MS,
  );
  const tlsOptions = natsTls(options.url, tls);
  return await connect({
    servers: servers(options.url),
    name: options.name,
    // With credentials, replies come to the user's own inbox prefix: the only one its permissions let it read.
    ...(creds ? { authenticator: credsAuthenticator(creds.text), inboxPrefix: inboxPrefix(creds.key) } : {}),
    ...(bearer ? { authenticator: jwtAuthenticator(bearer.jwt), inboxPrefix: inboxPrefix(bearer.key) } : {}),
    ...(tlsOptions ? { tls: tlsOptions } : {}),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    waitOnFirstConnect: true,
    // Async stack traces allocate two Errors per request; at thousands of requests a second that is most of the
    // client's cost, and our errors carry their own context.
    noAsyncTraces: true,
  });
}

/** The part of a pino logger the connection watchers use. */
export interface StatusLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** While the bus stays unreachable, a reminder this often (the client retries every 250 ms, silently). */
const STILL_DOWN_EVERY_MS = 30_000;

/**
 * Logs the connection's health: a warning when it is lost and the client starts reconnecting (then a reminder every
 * `stillDownEveryMs` while it stays lost), info once it is back. Each line carries `nats_status` (the nats.js status
 * type) and, where known, `server`, `down_ms` and `attempts`.
 */
export function logConnectionStatus(
  nc: NatsConnection,
  log: StatusLog,
  options: { stillDownEveryMs?: number } = {},
): StatusWatch {
  const every = options.stillDownEveryMs ?? STILL_DOWN_EVERY_MS;
  let downSince: number | undefined;
  let warnedAt = 0;
  let attempts = 0;
  return watchStatus(nc, (s) => {
    const now = Date.now();
    switch (s.type) {
      case 'disconnect':
        downSince ??= now;
        warnedAt = now;
        attempts = 0;
        log.warn({ nats_status: s.type, server: s.server }, 'lost the connection to NATS; reconnecting');
        break;
      case 'reconnecting':
        attempts++;
        if (now - warnedAt >= every) {
          warnedAt = now;
          log.warn(
            { nats_status: s.type, attempts, down_ms: now - (downSince ?? now) },
            'still cannot reach NATS; retrying',
          );
        }
        break;
      case 'reconnect':
        log.info(
          { nats_status: s.type, server: s.server, attempts, down_ms: now - (downSince ?? now) },
          'reconnected to NATS',
        );
        downSince = undefined;
        attempts = 0;
        break;
      case 'ldm':
        log.warn({ nats_status: s.type, server: s.server }, 'NATS server is shutting down (lame duck mode)');
        break;
      case 'staleConnection':
        log.warn({ nats_status: s.type }, 'NATS connection went stale (no pongs); reconnecting');
        break;
      case 'error':
        log.warn({ nats_status: s.type, err: s.error.message }, 'NATS server reported an error');
        break;
      default:
        break;
    }
  });
}

export interface TransportOptions {
  /** NATS server URL; default `PLURIGRID_NATS_URL`, else the embedded server. */
  url?: string;
  /** Plurigrid data dir (the embedded server keeps its store and log here). */
  dataDir: string;
  /** Connection name. */
  name: string;
  firstConnectTimeoutMs?: number;
  creds?: ConnectOptions['creds'];
  tls?: TlsFiles;
  /** The embedded server's configuration beyond the command line (authentication, TLS); see nats-server.ts. */
  serverConfig?: string;
  /** Copies of each stream and bucket; default 3 when the server is part of a cluster, else 1. */
  replicas?: number;
  log?: (line: string) => void;
}

export interface Transport {
  nc: NatsConnection;
  url: string;
  /** True when this transport started its own nats-server. */
  embedded: boolean;
  resources: Resources;
  /** Drains the connection, then stops the embedded server if this transport started one. Idempotent. */
  close(): Promise<void>;
}

/** Connects (to `url`, `PLURIGRID_NATS_URL`, or a freshly started embedded server) and ensures the resources. */
export async function openTransport(options: TransportOptions): Promise<Transport> {
  const given = options.url?.trim() || process.env[NATS_URL_ENV]?.trim() || undefined;
  let server: EmbeddedNats | undefined;
  let nc: NatsConnection | undefined;
  try {
    if (!given)
      server = await startEmbeddedNats({
        dataDir: options.dataDir,
        log: options.log,
        config: options.serverConfig,
      });
    const url = given ?? server!.url;
    nc = await connectNats({
      url,
      name: options.name,
      firstConnectTimeoutMs: options.firstConnectTimeoutMs,
      creds: options.creds,
      tls: options.tls,
    });
    // A clustered server names its cluster in its INFO: then every resource is kept on three servers by default.
    const replicas = options.replicas ?? (nc.info?.cluster ? 3 : 1);
    const resources = await ensureResources(nc, { replicas });
    const conn = nc;
    let closing: Promise<void> | undefined;
    const close = () => {
      closing ??= (async () => {
        try {
          if (!conn.isClosed()) await conn.drain();
        } catch {
          // already closed or draining: nothing left to flush
        } finally {
          await server?.stop();
        }
      })();
      return closing;
    };
    return { nc: conn, url, embedded: server !== undefined, resources, close };
  } catch (err) {
    await nc?.close().catch(() => {});
    await server?.stop();
    throw err;
  }
}

/** A wire message that is not valid JSON or does not match its schema; `issues` name each bad path. */
export class MessageDecodeError extends InputError {
  constructor(what: string, issues: readonly string[]) {
    super(what, issues);
    this.name = 'MessageDecodeError';
  }
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

/** JSON bytes of a value (UTF-8). */
export function encode(value: unknown): Uint8Array {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`cannot encode ${typeof value} as JSON`);
  return textEncoder.encode(text);
}

/**
 * Parses JSON bytes and validates them with `schema`. Throws a {@link MessageDecodeError} whose message names `what`
 * and every bad path (`invalid status reply: job.status: expected one of "queued", …, got "lost"`).
 */
export function decode<S extends z.ZodType>(bytes: Uint8Array, schema: S, what: string): z.output<S> {
  let value: unknown;
  try {
    value = JSON.parse(textDecoder.decode(bytes));
  } catch (err) {
    throw new MessageDecodeError(`invalid ${what}`, [`(root): not valid JSON (${(err as Error).message})`]);
  }
  try {
    return parseInput(schema, value, `invalid ${what}`);
  } catch (err) {
    if (err instanceof InputError) throw new MessageDecodeError(`invalid ${what}`, err.issues);
    throw err;
  }
}
