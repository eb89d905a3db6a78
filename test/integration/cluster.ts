import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createUser, type KeyPair } from '@nats-io/nkeys';
import type { NatsConnection } from '@nats-io/transport-node';
import { type LoadedKey, loadOrCreateUserKey } from '../../src/cli/keys.ts';
import { workerArgv } from '../../src/cli/worker.ts';
import { ApiClient } from '../../src/coordinator/client.ts';
import type { StudyStatus, SubmitRequest } from '../../src/models/api.ts';
import { AuthStore, parseCredentials } from '../../src/transport/auth.ts';
import { connectNats } from '../../src/transport/connect.ts';
import { type NatsCluster, startCluster } from '../../src/transport/nats-cluster.ts';
import { type EmbeddedNats, startEmbeddedNats } from '../../src/transport/nats-server.ts';
import type { Role } from '../../src/transport/permissions.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(root, 'bin', 'plurigrid.js');

export const example = (name: string) =>
  JSON.parse(readFileSync(join(root, 'examples', `${name}.json`), 'utf8'));

/**
 * A real deployment in miniature: its own nats-server with authentication (operator keys in the data dir, as the
 * coordinator makes them), and coordinator and workers as separate processes, each its own NATS user. The test
 * speaks as a client (`nc`, `api`: the user key in the data dir, which owns what it submits) and, to look inside,
 * as an operator (`admin`, with the coordinator's rights).
 */
export class Cluster {
  readonly dataDir = mkdtempSync(join(tmpdir(), 'plurigrid-cluster-'));
  nats!: EmbeddedNats;
  /** The cluster, when started with `nodes`. */
  jetstream: NatsCluster | undefined;
  auth!: AuthStore;
  /** The test's client key: it owns the studies it submits. */
  user!: LoadedKey;
  nc!: NatsConnection;
  admin!: NatsConnection;
  api!: ApiClient;
  coordinator: ChildProcess | undefined;
  readonly workers = new Map<string, ChildProcess>();
  private readonly logs = new Map<ChildProcess, string>();

  /**
   * A started cluster: nats-server, the coordinator, and the named workers (each with extra CLI flags), all
   * visible to the coordinator.
   */
  static async up(workers: Record<string, string[]> = {}): Promise<Cluster> {
    const cluster = await new Cluster().start();
    await cluster.startCoordinator();
    for (const [name, args] of Object.entries(workers)) await cluster.startWorker(name, args);
    await cluster.waitForWorkers(Object.keys(workers).length);
    return cluster;
  }

  /** With `nodes`, a JetStream cluster of that many servers (`jetstream`) instead of one embedded server. */
  /** The servers' URL(s), as `--nats` takes them. */
  get url(): string {
    return this.jetstream?.urls ?? this.nats.url;
  }

  async start({ nodes }: { nodes?: number } = {}): Promise<this> {
    this.auth = await AuthStore.open(this.dataDir, { create: true });
    if (nodes) {
      this.jetstream = await startCluster({
        dataDir: this.dataDir,
        nodes,
        config: await this.auth.serverConfig(),
      });
    } else {
      this.nats = await startEmbeddedNats({ dataDir: this.dataDir, config: await this.auth.serverConfig() });
    }
    this.user = await loadOrCreateUserKey(this.dataDir);
    this.nc = await this.connectAs('client', 'test-client', this.user.keyPair);
    this.admin = await this.connectAs('coordinator', 'test-admin');
    this.api = new ApiClient(this.nc, 10_000);
    return this;
  }

  /** The test client's key: the owner of what it submits. */
  get owner(): string {
    return this.user.key;
  }

  /** A `.creds` file for a user of `role` (a fresh key unless given), written in the data dir. */
  async credsFile(role: Role, kp: KeyPair = createUser()): Promise<string> {
    const issued = await this.auth.credentials(role, kp);
    const file = join(this.dataDir, `${role}-${issued.key.slice(0, 8)}.creds`);
    writeFileSync(file, issued.creds, { mode: 0o600 });
    return file;
  }

  /** A connection as a user of `role` (a fresh key unless given), with credentials the operator issued. */
  async connectAs(role: Role, name: string, kp: KeyPair = createUser()): Promise<NatsConnection> {
    const issued = await this.auth.credentials(role, kp);
    const creds = parseCredentials(new TextEncoder().encode(issued.creds));
    return connectNats({ url: this.url, name, creds });
  }

  private spawnCli(args: string[], ready: RegExp): Promise<ChildProcess> {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.logs.set(child, '');
    const append = (d: Buffer) => this.logs.set(child, (this.logs.get(child) ?? '') + d.toString());
    child.stderr!.on('data', append);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`not ready in 20 s: ${args.join(' ')}\n${this.logs.get(child)}`)),
        20_000,
      );
      child.stdout!.on('data', (d: Buffer) => {
        append(d);
        if (ready.test(this.logs.get(child)!)) {
          clearTimeout(timer);
          resolve(child);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`exited with ${code}: ${args.join(' ')}\n${this.logs.get(child)}`));
      });
    });
  }

  /** A coordinator process, ready when its stdout matches `ready` (`/coordinator standby/` for a standby). */
  spawnCoordinator(ready: RegExp, extra: string[] = []): Promise<ChildProcess> {
    return this.spawnCli(
      ['coordinator', '--nats', this.url, '--data-dir', this.dataDir, '--log-level', 'info', ...extra],
      ready,
    );
  }

  /** Waits until `child`'s output matches `re`. */
  waitForLog(child: ChildProcess, re: RegExp, timeoutMs: number): Promise<void> {
    return until(() => re.test(this.log(child)), timeoutMs, `${re} in the output`);
  }

  async startCoordinator(extra: string[] = []): Promise<ChildProcess> {
    this.coordinator = await this.spawnCli(
      ['coordinator', '--nats', this.url, '--data-dir', this.dataDir, '--log-level', 'warn', ...extra],
      /coordinator ready/,
    );
    return this.coordinator;
  }

  /** A worker process; with `dataDir`, one of its own (a machine without the operator keys: it needs credentials). */
  async startWorker(name: string, extra: string[] = [], dataDir = this.dataDir): Promise<ChildProcess> {
    const child = await this.spawnCli(
      [
        ...workerArgv({
          name,
          nats: this.url,
          dataDir,
          executor: 'process',
          slots: 1,
          heartbeatMs: 200,
          logLevel: 'warn',
        }),
        ...extra,
      ],
      /ready/,
    );
    this.workers.set(name, child);
    return child;
  }

  /**
   * A misbehaving provider as its own process (test/fixtures/adversary.ts). With `stake`, it first takes SIM from the
   * faucet and bonds that much, so it has something to lose. Returns its worker id.
   */
  async startAdversary(
    mode: 'alter' | 'collude' | 'careless' | 'silent' | 'wrong-key',
    name: string,
    stake?: string,
  ) {
    const args = [join(root, 'test', 'fixtures', 'adversary.ts'), mode, this.url, name];
    if (stake) args.push(stake);
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Worker credentials from the operator keys in the data dir, as any worker on the coordinator's machine.
      env: { ...process.env, PLURIGRID_DATA_DIR: this.dataDir },
    });
    this.workers.set(name, child);
    let out = '';
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`adversary ${name} not ready: ${out}`)), 20_000);
      child.stderr!.on('data', (d: Buffer) => {
        out += d.toString();
      });
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /(U[A-Z2-7]{55}) ready/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`adversary ${name} exited with ${code}: ${out}`));
      });
    });
  }

  log(child: ChildProcess): string {
    return this.logs.get(child) ?? '';
  }

  /** Waits until `n` workers are visible to the coordinator. */
  async waitForWorkers(n: number, timeoutMs = 15_000): Promise<void> {
    await until(async () => (await this.api.workers()).workers.length >= n, timeoutMs, `${n} workers`);
  }

  /** Submits a study; unreplicated unless the request says otherwise (most tests run one worker). */
  submit(req: SubmitRequest) {
    return this.api.submit({ verification: { quorum: 1, adaptive: true }, ...req });
  }

  /**
   * A paid study for fault tests: `runs` × 2 heavy epochs (1,500 households, a fraction of a second each), every job
   * on both workers (quorum 2), its budget escrowed from the test client's key (given SIM from the faucet).
   */
  async submitPaidStudy(runs = 20) {
    await this.api.ledgerOp('faucet', {}, this.user.keyPair);
    const req = smallStudy(runs);
    (req.study!.scenario as { community: { size: number } }).community.size = 1500;
    return this.api.submitSigned(
      { ...req, verification: { quorum: 2, adaptive: false }, budget: '50', max_price: 1 },
      this.user.keyPair,
    );
  }

  /** Epochs of a study done so far. */
  async epochsDone(studyId: string): Promise<number> {
    return (await this.api.status(studyId)).epochs.done;
  }

  /** Polls the study until it leaves `running` (the coordinator may be down for a while: errors are retried). */
  async waitForStudy(studyId: string, timeoutMs = 60_000): Promise<StudyStatus> {
    let last: StudyStatus | undefined;
    await until(
      async () => {
        last = await this.api.status(studyId);
        return last.state !== 'running';
      },
      timeoutMs,
      `study ${studyId} to finish`,
      true,
    );
    return last!;
  }

  async kill(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill(signal);
    await exited;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => this.kill(w)));
    if (this.coordinator) await this.kill(this.coordinator);
    await this.nc?.close().catch(() => {});
    await this.admin?.close().catch(() => {});
    await this.nats?.stop();
    await this.jetstream?.stop();
  }
}

export async function until(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  what: string,
  retryErrors = false,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (e) {
      if (!retryErrors) throw e;
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A small study: `mechanisms` × `runs` epochs of a 30-household community, split into one epoch per job. */
export function smallStudy(runs = 3, mechanisms = ['none', 'sdr']): SubmitRequest {
  const scenario = example('suburb-summer');
  scenario.community.size = 30;
  return {
    study: {
      name: 'small',
      scenario,
      runs,
      seed: 5,
      sweep: [{ name: 'market.mechanism', values: mechanisms }],
    },
    target_job_seconds: 0,
  };
}

/** One heavy epoch (seconds of work), to have a job running long enough to break something under it. */
export function heavyScenario(households = 3000, days = 3): Record<string, unknown> {
  const scenario = example('suburb-summer');
  scenario.community.size = households;
  scenario.time.days = days;
  delete scenario.feeder;
  return scenario;
}
