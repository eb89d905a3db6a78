import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { InputError } from '../models/errors.ts';
import { connectNats, NATS_URL_ENV, openTransport, type Transport } from '../transport/connect.ts';
import { ensureResources } from '../transport/resources.ts';

export const DEFAULT_DATA_DIR = '.plurigrid';
/** Where a coordinator running the embedded server tells clients and workers on this machine its URL. */
const URL_FILE = 'nats.url';

export interface ConnectionFlags {
  nats?: string;
  dataDir: string;
}

export function addConnectionOptions(cmd: Command): Command {
  return cmd
    .option(
      '--nats <url>',
      `NATS server URL(s), comma-separated (default: $${NATS_URL_ENV}, else the embedded server)`,
    )
    .option('--data-dir <dir>', 'data directory (keys, embedded server store, logs)', DEFAULT_DATA_DIR);
}

/** The server a client or worker should use: --nats, the environment, or the local coordinator's embedded one. */
export function clientUrl(flags: ConnectionFlags): string {
  const given = flags.nats?.trim() || process.env[NATS_URL_ENV]?.trim();
  if (given) return given;
  const file = join(resolve(flags.dataDir), URL_FILE);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  throw new InputError('no NATS server to talk to', [
    `start a coordinator first (\`plurigrid coordinator\` runs an embedded server and writes ${file}),`,
    `or pass --nats <url> / set ${NATS_URL_ENV}`,
  ]);
}

/** Connects a client or worker (never starts a server of its own). */
export async function openClient(flags: ConnectionFlags, name: string): Promise<Transport> {
  const url = clientUrl(flags);
  const nc = await connectNats({ url, name, firstConnectTimeoutMs: 10_000 });
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
