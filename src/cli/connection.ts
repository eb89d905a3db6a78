import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { type Command, InvalidArgumentError, Option } from 'commander';
import {
  connectNats,
  NATS_URL_ENV,
  NatsUnreachableError,
  openTransport,
  type Transport,
} from '../transport/connect.ts';
import { ensureResources } from '../transport/resources.ts';
import { BusUnavailableError } from './errors.ts';

export const DEFAULT_DATA_DIR = '.plurigrid';
export const DATA_DIR_ENV = 'PLURIGRID_DATA_DIR';
/** Where a coordinator running the embedded server tells clients and workers on this machine its URL. */
const URL_FILE = 'nats.url';

export interface ConnectionFlags {
  nats?: string;
  dataDir: string;
}

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
    );
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

/** Connects a client or worker (never starts a server of its own). */
export async function openClient(flags: ConnectionFlags, name: string): Promise<Transport> {
  const url = clientUrl(flags);
  let nc: NatsConnection;
  try {
    nc = await connectNats({ url, name, firstConnectTimeoutMs: 10_000 });
  } catch (err) {
    if (err instanceof NatsUnreachableError) throw new BusUnavailableError(err.message, [], { cause: err });
    throw err;
  }
  const resources = await ensureResources(nc);
  let closing: Promise<void> | undefined;
  return {
    nc,
    url,
    embedded: false,
    resources,
    close: () => {
      closing ??= nc.drain().catch(() => {});
      return closing;
    },
  };
}

/** The coordinator's transport: the given server, or an embedded one whose URL it publishes in the data dir. */
export async function openServerSide(flags: ConnectionFlags, name: string): Promise<Transport> {
  const dataDir = resolve(flags.dataDir);
  const transport = await openTransport({ ...(flags.nats ? { url: flags.nats } : {}), dataDir, name });
  if (!transport.embedded) return transport;
  await mkdir(dataDir, { recursive: true });
  const file = join(dataDir, URL_FILE);
  await writeFile(file, `${transport.url}\n`);
  const close = transport.close;
  return {
    ...transport,
    close: async () => {
      await rm(file, { force: true });
      await close();
    },
  };
}
