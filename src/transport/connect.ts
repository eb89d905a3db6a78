/**
 * Connections: `connectNats` for a client that reconnects forever, `openTransport` for the usual start-up (use the
 * given server or start the embedded one, create the resources), and a zod-validated JSON codec for wire messages.
 */
import { connect as tcpConnect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, credsAuthenticator, jwtAuthenticator, type NatsConnection } from '@nats-io/transport-node';
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

function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = tcpConnect({ host, port });
    const finish = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(2_000, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
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
 * The client's `waitOnFirstConnect` loop cannot be cancelled, so before handing over to it we wait (bounded) until
 * at least one server accepts TCP connections; a wrong URL then fails with a message instead of hanging forever.
 */
async function awaitReachable(url: string, timeoutMs: number): Promise<void> {
  const targets = servers(url)
    .map(hostPort)
    .filter((t) => t !== null);
  if (targets.length === 0 || !Number.isFinite(timeoutMs)) return;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const results = await Promise.all(targets.map((t) => reachable(t.host, t.port)));
    if (results.some(Boolean)) return;
    if (Date.now() >= deadline) {
      throw new NatsUnreachableError(
        `cannot reach the NATS server at ${url} (no answer within ${Math.round(timeoutMs / 1000)} s); check --nats / ` +
          `${NATS_URL_ENV}, or leave both unset to use the embedded server`,
      );
    }
    await sleep(200);
  }
}

/** A connection that waits for its first server and then reconnects forever (every 250 ms while the server is down). */
export async function connectNats(options: ConnectOptions): Promise<NatsConnection> {
  await awaitReachable(options.url, options.firstConnectTimeoutMs ?? DEFAULT_FIRST_CONNECT_TIMEOUT_MS);
  const { creds, bearer, tls } = options;
  return await connect({
    servers: servers(options.url),
    name: options.name,
    // With credentials, replies come to the user's own inbox prefix: the only one its permissions let it read.
    ...(creds ? { authenticator: credsAuthenticator(creds.text), inboxPrefix: inboxPrefix(creds.key) } : {}),
    ...(bearer ? { authenticator: jwtAuthenticator(bearer.jwt), inboxPrefix: inboxPrefix(bearer.key) } : {}),
    ...(tls && (tls.ca || tls.cert) ? { tls: { caFile: tls.ca, certFile: tls.cert, keyFile: tls.key } } : {}),
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
    const resources = await ensureResources(nc);
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
