/**
 * The embedded default: a private `nats-server -js` on loopback with its store under the data dir, used when no
 * `--nats` / `PLURIGRID_NATS_URL` is given. Debian's `nats-server` package (2.9.x) provides the binary.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, connect as tcpConnect } from 'node:net';
import { delimiter, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const BINARY = 'nats-server';
/** Where Debian's package and manual installs put the binary when it is not on PATH. */
const EXTRA_DIRS = ['/usr/sbin', '/usr/local/bin'];
const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;

export const INSTALL_HINT =
  'install it with `sudo apt-get install nats-server` (Debian/Ubuntu), or connect to a running NATS server ' +
  'with JetStream instead: pass --nats nats://host:4222 or set PLURIGRID_NATS_URL';

/** No nats-server binary could be found or installed. */
export class NatsServerMissingError extends Error {
  constructor(detail?: string) {
    super(
      `nats-server was not found on PATH, in /usr/sbin or in /usr/local/bin${detail ? ` (${detail})` : ''}; ${INSTALL_HINT}`,
    );
    this.name = 'NatsServerMissingError';
  }
}

/** The embedded server did not come up; the message ends with the tail of its log. */
export class NatsServerStartError extends Error {
  readonly logTail: string;
  constructor(message: string, logTail: string) {
    super(logTail ? `${message}\n--- nats-server log (last lines) ---\n${logTail}` : message);
    this.name = 'NatsServerStartError';
    this.logTail = logTail;
  }
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The path of the `nats-server` binary (PATH first, then /usr/sbin, /usr/local/bin), or null. */
export function findNatsServer(): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, BINARY);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isDebianLike(): boolean {
  if (process.platform !== 'linux') return false;
  if (existsSync('/etc/debian_version')) return true;
  try {
    const osRelease = readFileSync('/etc/os-release', 'utf8');
    return /^(ID|ID_LIKE)=.*\b(debian|ubuntu)\b/m.test(osRelease);
  } catch {
    return false;
  }
}

function findOnPath(name: string): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/sbin']) {
    if (dir && isExecutable(join(dir, name))) return join(dir, name);
  }
  return null;
}

/** Runs a command with captured output; resolves with its exit status and the last lines it printed. */
function runQuiet(cmd: string, args: string[]): Promise<{ status: number; tail: string }> {
  return new Promise((done) => {
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
    let out = '';
    const keep = (chunk: Buffer) => {
      out = (out + chunk.toString('utf8')).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (err) => done({ status: -1, tail: err.message }));
    child.on('close', (code) =>
      done({ status: code ?? -1, tail: out.trim().split('\n').slice(-10).join('\n') }),
    );
  });
}

export interface EnsureBinaryOptions {
  /** Where to say what is being done (default: one line on stderr). */
  log?: (line: string) => void;
}

/**
 * The path of `nats-server`. When it is missing and this process runs as root on Debian/Ubuntu, installs it with
 * `apt-get install -y nats-server` (running `apt-get update` first if the install fails); otherwise throws a
 * {@link NatsServerMissingError} that says how to install it.
 */
export async function ensureNatsServerBinary(options: EnsureBinaryOptions = {}): Promise<string> {
  const found = findNatsServer();
  if (found) return found;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const aptGet = findOnPath('apt-get');
  if (process.getuid?.() !== 0 || !isDebianLike() || !aptGet) throw new NatsServerMissingError();

  log('plurigrid: nats-server is missing; installing it (apt-get install -y nats-server)…');
  let result = await runQuiet(aptGet, ['install', '-y', 'nats-server']);
  if (result.status !== 0) {
    log('plurigrid: apt-get install failed; running apt-get update and trying again…');
    const update = await runQuiet(aptGet, ['update']);
    if (update.status !== 0) throw new NatsServerMissingError(`apt-get update failed:\n${update.tail}`);
    result = await runQuiet(aptGet, ['install', '-y', 'nats-server']);
  }
  if (result.status !== 0) {
    throw new NatsServerMissingError(`apt-get install -y nats-server failed:\n${result.tail}`);
  }
  const installed = findNatsServer();
  if (!installed)
    throw new NatsServerMissingError('apt-get install -y nats-server succeeded but left no binary there');
  log(`plurigrid: installed ${installed}`);
  return installed;
}

export interface EmbeddedNatsOptions {
  /** Plurigrid data dir: the store goes to `<dataDir>/nats`, the log to `<dataDir>/nats-server.log`. */
  dataDir: string;
  /**
   * Client port on 127.0.0.1. Omitted: the port the previous embedded server on this data dir had, while it is free
   * (so a restart keeps the URL), else a free port chosen by the server.
   */
  port?: number;
  /** Path of the binary; default {@link ensureNatsServerBinary}. */
  binary?: string;
  /** How long to wait for "Server is ready" (default 10 s). */
  readyTimeoutMs?: number;
  /**
   * Server configuration (nats-server syntax) beyond what the command line sets: the authentication block
   * (auth.ts `serverConfig`), TLS. Written to `<dataDir>/nats-server.conf` (mode 0600) and passed with `-c`.
   */
  config?: string;
  log?: (line: string) => void;
}

export interface EmbeddedNats {
  url: string;
  port: number;
  pid: number;
  storeDir: string;
  logFile: string;
  /** SIGTERM, wait for exit (SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
}

/** What we record in `<dataDir>/nats-server.json` so a later start can tell a live owner from an orphan. */
interface ServerRecord {
  pid: number;
  port: number;
  url: string;
  store_dir: string;
  owner_pid: number;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;
const FATAL_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function killAll(): void {
  for (const child of running) {
    try {
      child.kill('SIGTERM');
    } catch {
      // already gone
    }
  }
}

/**
 * A fatal signal with nobody else listening would end this process without an 'exit' event: stop the servers, then
 * re-raise the signal so the process still dies of it. When someone else listens (a CLI with its own graceful
 * shutdown), that listener decides, and the 'exit' hook stops the servers at the end.
 */
function onFatalSignal(signal: NodeJS.Signals): void {
  if (process.listenerCount(signal) > 1) return;
  killAll();
  uninstallSignalHooks();
  process.kill(process.pid, signal);
}

function installHooks(): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Last resort when the owner exits without calling stop(): a synchronous SIGTERM from process 'exit'.
    process.on('exit', killAll);
  }
  for (const signal of FATAL_SIGNALS) {
    if (!process.listeners(signal).includes(onFatalSignal)) process.on(signal, onFatalSignal);
  }
}

/** Restores Node's default signal handling once no embedded server is left. */
function uninstallSignalHooks(): void {
  for (const signal of FATAL_SIGNALS) process.removeListener(signal, onFatalSignal);
}

/** True while `pid` runs; a zombie (exited, not yet reaped by its new parent) counts as gone. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return true; // no /proc: trust kill(0)
  }
}

/** True when `pid` is a nats-server using `storeDir` (Linux /proc; false where that cannot be checked). */
async function isOurServer(pid: number, storeDir: string): Promise<boolean> {
  try {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\u0000');
    const sd = argv.indexOf('-sd');
    return argv[0]!.endsWith(BINARY) && sd > 0 && argv[sd + 1] === storeDir;
  } catch {
    return false;
  }
}

async function waitForExit(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return true;
    await sleep(50);
  }
  return !isAlive(pid);
}

/**
 * Looks at the record a previous start left behind. A server whose owner is still alive belongs to someone else:
 * refuse (two servers on one store would corrupt it). A server whose owner died is an orphan: stop it.
 */
async function reclaimStore(
  recordFile: string,
  storeDir: string,
  log: (line: string) => void,
): Promise<void> {
  let record: ServerRecord;
  try {
    record = JSON.parse(await readFile(recordFile, 'utf8')) as ServerRecord;
  } catch {
    return;
  }
  if (!Number.isInteger(record.pid) || !isAlive(record.pid) || !(await isOurServer(record.pid, storeDir)))
    return;
  if (record.owner_pid !== process.pid && isAlive(record.owner_pid)) {
    throw new NatsServerStartError(
      `another plurigrid process (pid ${record.owner_pid}) already runs an embedded nats-server (pid ${record.pid}) ` +
        `on ${record.url} with the store ${storeDir}; connect to it with --nats ${record.url}, or use another data dir`,
      '',
    );
  }
  if (record.owner_pid === process.pid) {
    throw new NatsServerStartError(
      `this process already runs an embedded nats-server (pid ${record.pid}) on ${record.url} with the store ` +
        `${storeDir}; stop it before starting another`,
      '',
    );
  }
  log(`plurigrid: stopping orphaned nats-server (pid ${record.pid}) left by a process that exited`);
  process.kill(record.pid, 'SIGTERM');
  if (!(await waitForExit(record.pid, STOP_GRACE_MS))) {
    process.kill(record.pid, 'SIGKILL');
    await waitForExit(record.pid, 2_000);
  }
}

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

async function readFrom(path: string, offset: number): Promise<string> {
  try {
    const handle = await open(path, 'r');
    try {
      const size = (await handle.stat()).size;
      if (size <= offset) return '';
      const buf = Buffer.alloc(size - offset);
      await handle.read(buf, 0, buf.length, offset);
      return buf.toString('utf8');
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}

function tail(text: string, lines = 15): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = tcpConnect({ host: '127.0.0.1', port });
    const finish = (ok: boolean) => {
      socket.destroy();
      done(ok);
    };
    socket.setTimeout(1_000, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/** Where the port of the last embedded server is kept, so a restart comes back on the same URL. */
const PORT_FILE = 'nats-port';

async function rememberedPort(file: string): Promise<number | undefined> {
  try {
    const port = Number((await readFile(file, 'utf8')).trim());
    return Number.isInteger(port) && port > 0 && port < 65536 ? port : undefined;
  } catch {
    return undefined;
  }
}

async function rememberPort(file: string, port: number): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${port}\n`);
  await rename(tmp, file);
}

/** True when nothing listens on 127.0.0.1:`port` (bound the way nats-server binds it: with SO_REUSEADDR). */
function portFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const probe = createServer();
    probe.once('error', () => done(false));
    probe.listen({ host: '127.0.0.1', port, exclusive: true }, () => probe.close(() => done(true)));
  });
}

/**
 * Starts `nats-server -js -a 127.0.0.1 -p <port> -sd <dataDir>/nats` with its log in `<dataDir>/nats-server.log`
 * and resolves once it accepts connections. Without `port` the server comes back on the port the last embedded
 * server on this data dir had (kept in `<dataDir>/nats-port`), so clients and workers that hold its URL reconnect
 * by themselves; when that port is taken by someone else, or on a first start, the server binds a free port itself
 * (`-p -1`) and we read it from its log ("Listening for client connections on 127.0.0.1:<port>"), which has no
 * window for another process to take the port in between. The server is stopped when this process exits (normally,
 * or by SIGINT/SIGTERM/SIGHUP when no other handler is installed), and a later start on the same data dir stops a
 * server orphaned by a process that was killed outright (SIGKILL).
 */
export async function startEmbeddedNats(options: EmbeddedNatsOptions): Promise<EmbeddedNats> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const dataDir = resolve(options.dataDir);
  const storeDir = join(dataDir, 'nats');
  const portFile = join(dataDir, PORT_FILE);
  if (
    options.port !== undefined &&
    !(Number.isInteger(options.port) && options.port > 0 && options.port < 65536)
  ) {
    throw new RangeError(`port must be an integer in 1..65535, got ${options.port}`);
  }
  const binary = options.binary ?? (await ensureNatsServerBinary({ log }));
  await mkdir(storeDir, { recursive: true });
  const recordFile = join(dataDir, 'nats-server.json');
  // First, so that a port held by our own orphan counts as free.
  await reclaimStore(recordFile, storeDir, log);

  let configFile: string | undefined;
  if (options.config !== undefined) {
    configFile = join(dataDir, 'nats-server.conf');
    const tmp = `${configFile}.${process.pid}.tmp`;
    await writeFile(tmp, options.config, { mode: 0o600 });
    await rename(tmp, configFile);
  }
  const launchWith = (port: number | undefined) =>
    launch({
      binary,
      dataDir,
      storeDir,
      recordFile,
      port,
      configFile,
      readyTimeoutMs: options.readyTimeoutMs,
    });
  if (options.port !== undefined) {
    const server = await launchWith(options.port);
    await rememberPort(portFile, server.port);
    return server;
  }
  const previous = await rememberedPort(portFile);
  let server: EmbeddedNats | undefined;
  if (previous !== undefined) {
    if (!(await portFree(previous))) {
      log(
        `plurigrid: port ${previous} of the previous embedded nats-server is taken by another process; starting ` +
          'on a free port instead (clients given the old URL must be given the new one)',
      );
    } else {
      try {
        server = await launchWith(previous);
      } catch (err) {
        // Most likely someone bound the port between our check and the server's own bind.
        if (!(err instanceof NatsServerStartError)) throw err;
        log(
          `plurigrid: the embedded nats-server did not start on its previous port ${previous}; starting on a free ` +
            `port instead (clients given the old URL must be given the new one): ${err.message.split('\n')[0]}`,
        );
      }
    }
  }
  server ??= await launchWith(undefined);
  if (server.port !== previous) await rememberPort(portFile, server.port);
  return server;
}

interface LaunchOptions {
  binary: string;
  dataDir: string;
  storeDir: string;
  recordFile: string;
  /** undefined: a free port, chosen by the server. */
  port: number | undefined;
  configFile: string | undefined;
  readyTimeoutMs: number | undefined;
}

/** One nats-server process, up and accepting connections, or a {@link NatsServerStartError} with its log tail. */
async function launch(options: LaunchOptions): Promise<EmbeddedNats> {
  const { binary, dataDir, storeDir, recordFile } = options;
  const logFile = join(dataDir, 'nats-server.log');
  const offset = await fileSize(logFile);
  // Flags on the command line override the configuration file's.
  const args = [
    ...(options.configFile ? ['-c', options.configFile] : []),
    ...['-js', '-a', '127.0.0.1', '-p', String(options.port ?? -1), '-sd', storeDir, '-l', logFile],
  ];
  const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dataDir });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-4000);
  });
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const exitPromise = new Promise<void>((done) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      running.delete(child);
      if (running.size === 0) uninstallSignalHooks();
      done();
    });
  });
  let spawnError: Error | null = null;
  child.once('error', (err) => {
    spawnError = err;
    if (child.pid === undefined) {
      // never started, so no 'exit' will come
      running.delete(child);
      if (running.size === 0) uninstallSignalHooks();
    }
  });
  running.add(child);
  installHooks();

  const stop = async (): Promise<void> => {
    if (exited || child.pid === undefined) return;
    child.ref();
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    await exitPromise;
    clearTimeout(killer);
    await removeRecord(recordFile, child.pid);
  };

  const failure = async (why: string): Promise<never> => {
    await stop();
    const text = `${await readFrom(logFile, offset)}${stderr}`;
    throw new NatsServerStartError(`embedded nats-server ${why}`, tail(text));
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? READY_TIMEOUT_MS);
  let port = options.port;
  for (;;) {
    if (spawnError) return failure(`could not be started (${binary}): ${(spawnError as Error).message}`);
    if (exited) {
      const { code, signal } = exited as { code: number | null; signal: NodeJS.Signals | null };
      return failure(`exited during start-up (${signal ? `signal ${signal}` : `exit code ${code}`})`);
    }
    const text = await readFrom(logFile, offset);
    const listening = /Listening for client connections on [^\s]*:(\d+)/.exec(text);
    if (listening) port = Number(listening[1]);
    if (port !== undefined && text.includes('Server is ready') && (await canConnect(port))) break;
    if (Date.now() > deadline) {
      return failure(`did not become ready within ${options.readyTimeoutMs ?? READY_TIMEOUT_MS} ms`);
    }
    await sleep(25);
  }

  // Do not keep the event loop alive for the server alone; the exit hook stops it.
  child.unref();
  (child.stderr as unknown as { unref?: () => void }).unref?.();
  const url = `nats://127.0.0.1:${port}`;
  const record: ServerRecord = { pid: child.pid!, port, url, store_dir: storeDir, owner_pid: process.pid };
  await writeFile(recordFile, `${JSON.stringify(record)}\n`);
  return { url, port, pid: child.pid!, storeDir, logFile, stop };
}

async function removeRecord(recordFile: string, pid: number): Promise<void> {
  try {
    const record = JSON.parse(await readFile(recordFile, 'utf8')) as ServerRecord;
    if (record.pid === pid) await rm(recordFile, { force: true });
  } catch {
    // no record, or not ours
  }
}
