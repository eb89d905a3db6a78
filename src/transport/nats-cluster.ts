/**
 * A JetStream cluster of nats-servers on loopback, for development and tests (`plurigrid cluster up`): each node its
 * own process, store and log under `<dataDir>/cluster/<name>`, routed to the others, with the same authentication
 * block as the embedded server. Scaling out is NATS's own clustering: streams and buckets are then replicated by
 * JetStream (Raft), nothing of ours. A production layout is the same configuration on separate machines (README).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureNatsServerBinary, NatsServerStartError } from './nats-server.ts';

const READY_TIMEOUT_MS = 20_000;

export interface ClusterNode {
  readonly name: string;
  readonly port: number;
  readonly clusterPort: number;
  readonly url: string;
  readonly dir: string;
  readonly logFile: string;
  /** The running process's pid, or undefined while it is down. */
  pid(): number | undefined;
  /** Starts it (again, on the same ports and store) and waits until it accepts connections. */
  start(): Promise<void>;
  /** Sends `signal` (default SIGTERM) and waits for the process to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface NatsCluster {
  readonly nodes: readonly ClusterNode[];
  /** Every node's client URL, comma-separated (what `--nats` takes). */
  readonly urls: string;
  stop(): Promise<void>;
}

export interface ClusterOptions {
  dataDir: string;
  nodes?: number;
  /** Configuration every node shares (the authentication block, TLS). */
  config?: string;
  binary?: string;
  log?: (line: string) => void;
}

/** A port free on 127.0.0.1 right now (the server binds it a moment later). */
function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = s.address() as { port: number };
      s.close(() => done(port));
    });
  });
}

async function logText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return '';
  }
}

/** Starts `nodes` (default 3) servers and resolves once JetStream has elected its metadata leader. */
export async function startCluster(options: ClusterOptions): Promise<NatsCluster> {
  const n = options.nodes ?? 3;
  if (!Number.isInteger(n) || n < 1 || n > 9) throw new RangeError(`nodes must be 1..9, got ${n}`);
  const binary = options.binary ?? (await ensureNatsServerBinary({ log: options.log }));
  const root = join(resolve(options.dataDir), 'cluster');
  const ports = await Promise.all(Array.from({ length: n * 2 }, freePort));
  const specs = Array.from({ length: n }, (_, i) => ({
    name: `n${i + 1}`,
    port: ports[2 * i]!,
    clusterPort: ports[2 * i + 1]!,
  }));
  const nodes = specs.map((spec) => {
    const dir = join(root, spec.name);
    const routes = specs.filter((o) => o !== spec).map((o) => `nats-route://127.0.0.1:${o.clusterPort}`);
    const config = [
      `server_name: ${spec.name}`,
      `listen: 127.0.0.1:${spec.port}`,
      `log_file: ${JSON.stringify(join(dir, 'nats-server.log'))}`,
      `jetstream { store_dir: ${JSON.stringify(join(dir, 'js'))} }`,
      'cluster {',
      '  name: plurigrid',
      `  listen: 127.0.0.1:${spec.clusterPort}`,
      `  routes: [${routes.join(', ')}]`,
      '}',
      options.config ?? '',
    ].join('\n');
    return makeNode({ ...spec, dir, binary, config });
  });
  try {
    await Promise.all(nodes.map((node) => node.start()));
    await awaitMetaLeader(nodes);
  } catch (err) {
    await Promise.all(nodes.map((node) => node.stop('SIGKILL')));
    throw err;
  }
  return {
    nodes,
    urls: nodes.map((node) => node.url).join(','),
    stop: async () => {
      await Promise.all(nodes.map((node) => node.stop()));
    },
  };
}

/** Until some node's log says the JetStream metadata leader is elected (before that, the JetStream API answers 503). */
async function awaitMetaLeader(nodes: readonly ClusterNode[]): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const logs = await Promise.all(nodes.map((node) => logText(node.logFile)));
    if (
      logs.some((l) =>
        /JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/.test(l),
      )
    )
      return;
    if (Date.now() > deadline) {
      throw new NatsServerStartError(
        'the JetStream cluster elected no metadata leader in time',
        logs.at(-1) ?? '',
      );
    }
    await sleep(100);
  }
}

function makeNode(spec: {
  name: string;
  port: number;
  clusterPort: number;
  dir: string;
  binary: string;
  config: string;
}): ClusterNode {
  const logFile = join(spec.dir, 'nats-server.log');
  const configFile = join(spec.dir, 'nats-server.conf');
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  return {
    name: spec.name,
    port: spec.port,
    clusterPort: spec.clusterPort,
    url: `nats://127.0.0.1:${spec.port}`,
    dir: spec.dir,
    logFile,
    pid: () => child?.pid,
    async start() {
      if (child) return;
      await mkdir(spec.dir, { recursive: true, mode: 0o700 });
      await writeFile(configFile, spec.config, { mode: 0o600 });
      const offset = (await logText(logFile)).length;
      const proc = spawn(spec.binary, ['-c', configFile], { stdio: 'ignore' });
      child = proc;
      exited = new Promise((r) =>
        proc.once('exit', () => {
          if (child === proc) child = undefined;
          r();
        }),
      );
      const deadline = Date.now() + READY_TIMEOUT_MS;
      for (;;) {
        if (!child)
          throw new NatsServerStartError(
            `cluster node ${spec.name} exited during start-up`,
            (await logText(logFile)).slice(offset),
          );
        if ((await logText(logFile)).slice(offset).includes('Server is ready')) break;
        if (Date.now() > deadline) {
          throw new NatsServerStartError(
            `cluster node ${spec.name} did not become ready`,
            (await logText(logFile)).slice(offset),
          );
        }
        await sleep(50);
      }
      proc.unref();
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const proc = child;
      if (!proc) return;
      proc.kill(signal);
      const killer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(killer);
    },
  };
}
