// Dispatch benchmark, in one run on this machine:
//  (a) raw JetStream publish → consume round trips per second (file storage, as RESULTS): the ceiling;
//  (b) end-to-end trivial jobs per second through the coordinator and two process-executor workers (two provider
//      identities), submit → result recorded, with the CPU each process spent per job, and p50/p99 latency of one job
//      at a time on an idle system. Run with workers that take up to 64 jobs each (a prefetch queue in front of one
//      warm runner) once per verification setting — unreplicated (quorum 1) and replicated on both workers (quorum 2,
//      not adaptive) — and with 8 slots unreplicated, to show what batching across the pipeline is worth; and, for
//      comparison, the same jobs through the process executor alone;
//  (c) Docker executor: per-container overhead and efficiency (epoch time measured inside the container / the
//      job's wall time, container create → removed) for ~1-second epochs batched per job.
//  (d) (a) and (b) unreplicated again on a 3-node JetStream cluster on loopback, every stream and bucket with 3
//      replicas, beside the single-server figures of the same run.
// Every server runs with authentication (per-role user JWTs, as deployed); the bench's client and coordinator speak
// with the operator's rights, the workers with their own. Prints a table and writes bench/results/dispatch.json.
// BENCH_JOBS sets the job count of (b) (default 10000), BENCH_QUORUM the quorums (b) runs with 64 slots (default
// "1,2"; 2 and more are not adaptive), BENCH_DOCKER=0 skips (c), BENCH_CLUSTER=0 skips (d).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AckPolicy, jetstream, jetstreamManager, StorageType } from '@nats-io/jetstream';
import Table from 'cli-table3';
import { pino } from 'pino';
import { workerArgv } from '../src/cli/worker.ts';
import { ApiClient } from '../src/coordinator/client.ts';
import { Coordinator } from '../src/coordinator/coordinator.ts';
import { serveApi } from '../src/coordinator/service.ts';
import type { JobEvents, Verification } from '../src/models/api.ts';
import { Scenario } from '../src/models/scenario.ts';
import { AuthStore, type LoadedCredentials, parseCredentials } from '../src/transport/auth.ts';
import { connectNats } from '../src/transport/connect.ts';
import { startCluster } from '../src/transport/nats-cluster.ts';
import { startEmbeddedNats } from '../src/transport/nats-server.ts';
import { ensureResources } from '../src/transport/resources.ts';
import { subjects } from '../src/transport/subjects.ts';
import { createDockerExecutor, dockerAvailable } from '../src/worker/executors/docker.ts';
import { createWarmProcessExecutor } from '../src/worker/executors/process-pool.ts';
import { buildImages } from '../src/worker/images.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const JOBS = Number(process.env.BENCH_JOBS ?? 10_000);
const QUORUMS = (process.env.BENCH_QUORUM || '1,2').split(',').map(Number);
if (QUORUMS.some((q) => !Number.isInteger(q) || q < 1 || q > 2))
  throw new Error(
    `BENCH_QUORUM: expected quorums of 1 or 2 (the bench runs two workers), got ${process.env.BENCH_QUORUM}`,
  );
const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
};
const example = JSON.parse(readFileSync(join(root, 'examples', 'suburb-summer.json'), 'utf8'));

/** One household, 24 hourly intervals, no feeder: an epoch that costs next to nothing to run. */
function trivialScenario() {
  const trivial = {
    ...example,
    community: { ...example.community, size: 1 },
    time: { interval_minutes: 60, days: 1 },
  };
  delete trivial.feeder;
  return trivial;
}

async function rawJetStream({ url, creds, replicas }: Bus) {
  const nc = await connectNats({ url, name: 'bench-raw', creds: await creds() });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({
    name: 'BENCH',
    subjects: ['bench.>'],
    storage: StorageType.File,
    num_replicas: replicas,
  });
  await jsm.consumers.add('BENCH', { durable_name: 'bench', ack_policy: AckPolicy.Explicit });
  const js = jetstream(nc);
  const n = 20_000;
  const latencies: number[] = [];
  const consumer = await js.consumers.get('BENCH', 'bench');
  const messages = await consumer.consume({ max_messages: 1000 });
  const done = (async () => {
    for await (const m of messages) {
      latencies.push(performance.now() - Number(new TextDecoder().decode(m.data)));
      m.ack();
      if (latencies.length === n) break;
    }
  })();
  const cpuBefore = cpuByRole();
  const start = performance.now();
  const window = new Set<Promise<unknown>>();
  for (let i = 0; i < n; i++) {
    const p = js.publish(`bench.${i % 16}`, String(performance.now())).finally(() => window.delete(p));
    window.add(p);
    if (window.size >= 256) await Promise.race(window);
  }
  await done;
  const seconds = (performance.now() - start) / 1000;
  const cpu = perJob(cpuBefore, cpuByRole(), n);
  await jsm.streams.delete('BENCH');
  await nc.close();
  return {
    messages: n,
    per_s: n / seconds,
    /** CPU per message, publisher and consumer (this process) and nats-server together. */
    cpu_ms_per_msg: Object.values(cpu).reduce((a, b) => a + b, 0),
    p50_ms: quantile(latencies, 0.5),
    p99_ms: quantile(latencies, 0.99),
  };
}

/**
 * CPU time (ms) so far of this process tree, by role, from /proc (Linux): where a run's CPU went. Empty elsewhere.
 */
function cpuByRole(): Record<string, number> {
  const out: Record<string, number> = {};
  const tick = 10; // USER_HZ is 100 on Linux
  const visit = (pid: number) => {
    let stat: string;
    let cmd: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return;
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ms = (Number(fields[11]) + Number(fields[12])) * tick;
    const role = cmd.includes('nats-server')
      ? 'nats-server'
      : cmd.includes('epoch-runner')
        ? 'runners'
        : cmd.includes('\0worker\0') // argv is NUL-separated
          ? 'workers'
          : 'coordinator+bench';
    out[role] = (out[role] ?? 0) + ms;
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      for (const c of children ? children.split(' ') : []) visit(Number(c));
    }
  };
  try {
    visit(process.pid);
  } catch {
    return {};
  }
  return out;
}

/** CPU spent per job between two {@link cpuByRole} readings. */
function perJob(before: Record<string, number>, after: Record<string, number>, jobs: number) {
  return Object.fromEntries(
    Object.entries(after).map(([role, ms]) => [role, (ms - (before[role] ?? 0)) / jobs]),
  );
}

function spawnWorker(
  name: string,
  url: string,
  dataDir: string,
  slots: number,
  runners: number,
): Promise<ChildProcess> {
  const args = workerArgv({
    name,
    nats: url,
    dataDir,
    executor: 'process',
    slots,
    runners,
    logLevel: 'error',
  });
  const child = spawn(process.execPath, [join(root, 'bin', 'plurigrid.js'), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, NODE_OPTIONS: process.env.BENCH_WORKER_NODE_OPTIONS ?? '' },
  });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve(child));
    child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)));
  });
}

/**
 * (b) with workers of `slots` slots and `runners` warm runners each. One runner per worker: the two of them then
 * match this machine's two cores, and more only adds context switches. `verification` is the studies' (quorum 2
 * runs every job on both workers: two provider identities, as replicas need distinct providers).
 */
async function endToEnd(
  { url, dataDir, creds, replicas }: Bus,
  {
    slots,
    runners,
    latency,
    verification,
  }: { slots: number; runners: number; latency: boolean; verification: Verification },
) {
  const nc = await connectNats({ url, name: 'bench-coordinator', creds: await creds() });
  const resources = await ensureResources(nc, { replicas });
  const coordinator = new Coordinator(nc, resources, {
    image: 'plurigrid/grid-epoch:bench',
    log: pino({ level: 'error' }),
  });
  await coordinator.start();
  const service = await serveApi(nc, coordinator.studies, '0.0.0', pino({ level: 'error' }));
  const workers = await Promise.all([
    spawnWorker(`bench-${slots}-1`, url, dataDir, slots, runners),
    spawnWorker(`bench-${slots}-2`, url, dataDir, slots, runners),
  ]);
  while (coordinator.registry.live().length < 2) await new Promise((r) => setTimeout(r, 50));
  const identities = new Set(coordinator.registry.live().map((w) => w.ad.worker_id));
  if (identities.size < verification.quorum)
    throw new Error(
      `quorum ${verification.quorum} needs as many providers, the workers are ${[...identities]}`,
    );

  const client = await connectNats({ url, name: 'bench-client', creds: await creds() });
  const api = new ApiClient(client, 60_000);
  const trivial = trivialScenario();
  const done = new Map<string, number>();
  const sub = client.subscribe(subjects.jobEventsAll, {
    // The measuring side stays light (it shares the coordinator's process): a plain parse, no schema.
    callback: (_e, m) => {
      const now = performance.now();
      for (const ev of m.json<JobEvents>().events) if (ev.status === 'done') done.set(ev.job_id, now);
    },
  });
  await client.flush();
  const cpuBefore = cpuByRole();
  const submitted = performance.now();
  const reply = await api.submit({
    study: { name: 'trivial', scenario: trivial, runs: JOBS, seed: 1, sweep: [] },
    target_job_seconds: 0,
    verification,
  });
  const accepted = performance.now();
  while (done.size < reply.jobs) {
    if (performance.now() - submitted > 600_000)
      throw new Error(`only ${done.size}/${reply.jobs} jobs done after 10 min`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const finished = Math.max(...done.values());
  const cpu_ms_per_job = perJob(cpuBefore, cpuByRole(), reply.jobs);
  const queued = [...done.values()].map((t) => t - submitted);
  const status = await api.status(reply.study_id);
  // Every job was accepted on as many agreeing results as its quorum asked (one job checked: they are alike).
  const agreed = coordinator.store.job(`${reply.study_id}-00000`)?.result?.agreed;
  if (agreed !== undefined && agreed < verification.quorum)
    throw new Error(`a job was accepted on ${agreed} result(s), its quorum is ${verification.quorum}`);
  // Latency on an idle system: one job at a time, submit → result recorded (its `done` event).
  const latencies: number[] = [];
  for (let i = 0; i < (latency ? 200 : 0); i++) {
    const t0 = performance.now();
    const one = await api.submit({ scenario: { ...trivial, seed: 10_000 + i }, verification });
    const jobId = `${one.study_id}-00000`;
    while (!done.has(jobId)) await new Promise((r) => setImmediate(r));
    latencies.push(done.get(jobId)! - t0);
  }
  sub.unsubscribe();
  for (const w of workers) w.kill('SIGTERM');
  await Promise.all(workers.map((w) => new Promise((r) => w.once('exit', r))));
  await service.stop();
  await coordinator.stop();
  await client.close();
  await nc.close();
  return {
    replicas,
    jobs: reply.jobs,
    quorum: verification.quorum,
    adaptive: verification.adaptive,
    /** Agreeing results the study's first job was accepted on. */
    agreed: agreed ?? null,
    slots_per_worker: slots,
    runners_per_worker: runners,
    state: status.state,
    submit_ms: accepted - submitted,
    per_s: reply.jobs / ((finished - submitted) / 1000),
    /** CPU per job during the batch, by process role (coordinator+bench is this process). */
    cpu_ms_per_job,
    /** Of the batch: time from submitting it to each job's result (dominated by queueing). */
    batch_p50_ms: quantile(queued, 0.5),
    /** One job at a time on an idle system: submit → result recorded (measured when `latency`). */
    p50_ms: latency ? quantile(latencies, 0.5) : null,
    p99_ms: latency ? quantile(latencies, 0.99) : null,
  };
}

/**
 * For comparison with (b): the same trivial jobs through the process executor alone — two warm runners, as in (b),
 * and no NATS, coordinator or verification — so the executor's own share of a job's cost is known.
 */
async function executorAlone(jobs: number) {
  const executor = createWarmProcessExecutor({ prewarm: 2, maxRunners: 2 });
  const scenario = Scenario.parse(trivialScenario());
  const request = (i: number) => ({
    job_id: `alone-${i}`,
    image: 'plurigrid/grid-epoch:bench',
    input: {
      job_id: `alone-${i}`,
      epochs: [{ epoch_id: '0000000000000000', scenario: { ...scenario, seed: i } }],
    },
    limits: { memory_mb: 512, cpus: 1, pids: 64, timeout_s: 60 },
  });
  for (let i = 0; i < 500; i++) await executor.run(request(i)); // warm-up, as (b)'s runners are by then
  const cpuBefore = cpuByRole();
  const start = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < jobs) {
        const out = await executor.run(request(next++));
        if (out.status !== 'ok') throw new Error(`job failed: ${out.reason}`);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const cpuAfter = cpuByRole();
  await executor.close();
  return {
    jobs,
    per_s: jobs / seconds,
    cpu_ms_per_job: perJob(cpuBefore, cpuAfter, jobs),
  };
}

async function dockerEfficiency() {
  if (process.env.BENCH_DOCKER === '0' || !(await dockerAvailable())) return null;
  const image = (await buildImages()).gridEpoch;
  const executor = createDockerExecutor();
  // About one second of engine work per epoch on this machine.
  const scenario = Scenario.parse({
    ...example,
    community: { ...example.community, size: 1000 },
    time: { interval_minutes: 15, days: 85 },
  });
  const rows = [];
  for (const batch of [1, 5, 10]) {
    const epochs = Array.from({ length: batch }, (_, i) => ({
      epoch_id: i.toString(16).padStart(16, '0'),
      scenario: { ...scenario, seed: i + 1 },
    }));
    const out = await executor.run({
      job_id: `bench-${batch}`,
      image,
      input: { job_id: `bench-${batch}`, epochs },
      limits: { memory_mb: 2048, cpus: 1, pids: 64, timeout_s: 600 },
    });
    if (out.status !== 'ok') throw new Error(`docker job failed: ${out.reason}`);
    // Useful work is what the runner timed inside the container, epoch by epoch (its stderr progress lines).
    const times = [...out.stderr_tail.matchAll(/done in (\d+) ms/g)].map((m) => Number(m[1]));
    if (times.length !== batch) throw new Error(`expected ${batch} epoch timings, found ${times.length}`);
    const useful = times.reduce((a, b) => a + b, 0);
    rows.push({
      epochs_per_job: batch,
      epoch_s: useful / batch / 1000,
      wall_s: out.usage.wall_ms / 1000,
      overhead_s: (out.usage.wall_ms - useful) / 1000,
      efficiency: useful / out.usage.wall_ms,
    });
  }
  await executor.close();
  return rows;
}

/** A bus to measure on: its URL(s), the data dir with its operator keys, and the replicas its resources keep. */
interface Bus {
  url: string;
  dataDir: string;
  replicas: number;
  /** Credentials with the operator's rights (the bench's coordinator, client and raw publisher). */
  creds(): Promise<LoadedCredentials>;
}

/**
 * Runs `fn` against a fresh embedded nats-server (or, with `nodes`, a loopback JetStream cluster with 3 replicas)
 * with authentication and its own store, so no phase sees another's state. Workers started with `dataDir` get their
 * own credentials from its operator keys.
 */
async function withServer<T>(fn: (bus: Bus) => Promise<T>, nodes = 0): Promise<T> {
  const dataDir = mkdtempSync(join(tmpdir(), 'plurigrid-bench-'));
  const auth = await AuthStore.open(dataDir, { create: true });
  const config = await auth.serverConfig();
  const creds = async () =>
    parseCredentials(new TextEncoder().encode((await auth.credentials('coordinator')).creds));
  if (nodes > 0) {
    const cluster = await startCluster({ dataDir, nodes, config });
    try {
      return await fn({ url: cluster.urls, dataDir, replicas: 3, creds });
    } finally {
      await cluster.stop();
    }
  }
  const server = await startEmbeddedNats({ dataDir, config });
  try {
    return await fn({ url: server.url, dataDir, replicas: 1, creds });
  } finally {
    await server.stop();
  }
}

const raw = await withServer(rawJetStream);
const e2eRuns: Awaited<ReturnType<typeof endToEnd>>[] = [];
for (const quorum of QUORUMS) {
  const verification: Verification = { quorum, adaptive: false };
  e2eRuns.push(
    await withServer((bus) => endToEnd(bus, { slots: 64, runners: 1, latency: true, verification })),
  );
}
const e2e = e2eRuns.find((r) => r.quorum === 1);
const replicated = e2eRuns.find((r) => r.quorum === 2);
const shallow = await withServer((bus) =>
  endToEnd(bus, { slots: 8, runners: 1, latency: false, verification: { quorum: 1, adaptive: false } }),
);
const clustered =
  process.env.BENCH_CLUSTER === '0'
    ? null
    : {
        raw: await withServer(rawJetStream, 3),
        e2e: await withServer(
          (bus) =>
            endToEnd(bus, {
              slots: 64,
              runners: 1,
              latency: true,
              verification: { quorum: 1, adaptive: false },
            }),
          3,
        ),
      };
const alone = await executorAlone(JOBS);
const docker = await dockerEfficiency();

const t = new Table({ head: ['measure', 'value'] });
t.push([
  '(a) JetStream publish→consume',
  `${raw.per_s.toFixed(0)} msg/s (p50 ${raw.p50_ms.toFixed(1)} ms, p99 ${raw.p99_ms.toFixed(1)} ms); CPU per message ${raw.cpu_ms_per_msg.toFixed(3)} ms`,
]);
for (const run of [...e2eRuns, shallow]) {
  t.push([
    `(b) trivial jobs end to end (${run.jobs} jobs, 2 workers × ${run.slots_per_worker} slots, quorum ${run.quorum})`,
    `${run.per_s.toFixed(0)} jobs/s = ${((100 * run.per_s) / raw.per_s).toFixed(1)} % of (a); CPU per job: ${Object.entries(
      run.cpu_ms_per_job,
    )
      .map(([role, ms]) => `${role} ${ms.toFixed(2)} ms`)
      .join(', ')}`,
  ]);
}
t.push([
  '(b) for comparison: the process executor alone (2 warm runners, no NATS)',
  `${alone.per_s.toFixed(0)} jobs/s = ${((100 * alone.per_s) / raw.per_s).toFixed(1)} % of (a); CPU per job: ${Object.entries(
    alone.cpu_ms_per_job,
  )
    .map(([role, ms]) => `${role === 'coordinator+bench' ? 'pool' : role} ${ms.toFixed(2)} ms`)
    .join(', ')}`,
]);
for (const run of e2eRuns) {
  t.push([
    `(b) one job at a time, submit → result recorded (quorum ${run.quorum})`,
    `p50 ${run.p50_ms?.toFixed(1)} ms, p99 ${run.p99_ms?.toFixed(1)} ms`,
  ]);
}
if (clustered) {
  t.push([
    '(d) 3-node cluster, replicas 3: JetStream publish→consume',
    `${clustered.raw.per_s.toFixed(0)} msg/s = ${((100 * clustered.raw.per_s) / raw.per_s).toFixed(1)} % of one server (p50 ${clustered.raw.p50_ms.toFixed(1)} ms, p99 ${clustered.raw.p99_ms.toFixed(1)} ms)`,
  ]);
  const one = clustered.e2e;
  t.push([
    `(d) 3-node cluster, replicas 3: trivial jobs end to end (quorum 1, 2 workers × 64 slots)`,
    `${one.per_s.toFixed(0)} jobs/s${e2e ? ` = ${((100 * one.per_s) / e2e.per_s).toFixed(1)} % of one server` : ''}; one at a time p50 ${one.p50_ms?.toFixed(1)} ms, p99 ${one.p99_ms?.toFixed(1)} ms; CPU per job: ${Object.entries(
      one.cpu_ms_per_job,
    )
      .map(([role, ms]) => `${role} ${ms.toFixed(2)} ms`)
      .join(', ')}`,
  ]);
}
for (const d of docker ?? []) {
  t.push([
    `(c) docker, ${d.epochs_per_job} × ${d.epoch_s.toFixed(2)} s epochs per job`,
    `wall ${d.wall_s.toFixed(2)} s, overhead ${d.overhead_s.toFixed(2)} s, efficiency ${(100 * d.efficiency).toFixed(1)} %`,
  ]);
}
if (!docker) t.push(['(c) docker', 'skipped: no Docker engine reachable']);
console.log(t.toString());
const out = new URL('./results/dispatch.json', import.meta.url);
writeFileSync(
  out,
  `${JSON.stringify({ benchmark: 'dispatch', at: new Date().toISOString(), node: process.versions.node, cpu: cpus()[0]?.model, cores: cpus().length, raw_jetstream: raw, end_to_end: e2e ?? null, end_to_end_replicated: replicated ?? null, end_to_end_shallow: shallow, executor_alone: alone, docker, cluster_3_replicas_3: clustered }, null, 2)}\n`,
);
console.log('wrote bench/results/dispatch.json');
process.exit(0);
