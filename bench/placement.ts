// Placement at scale: the scheduler's placement work in simulated clusters of 1,000 / 10,000 / 100,000 workers with
// 1,000,000 queued jobs, through the coordinator's own pure code (the store's queue index, pendingJobs, placeRound,
// the job state machine); no NATS. Per cluster size, in one run:
//  (a) comparison: one round on idle workers, placing the first BENCH_SCAN executions of the queue (default 10,000;
//      at most half the free slots, so that choosing well matters), once by bounded candidates and once by the full
//      scan (every worker ranked per execution: placement before bounded candidates), on identical input. Reports µs
//      per placement of each, and the quality of the bounded placements against the full scan's: mean price of the
//      chosen workers, the chosen worker's load when chosen (0: idle), executions doubled up on a worker this round,
//      anchoring (jobs that needed an established provider and got one) and jobs run alone on a trusted provider.
//  (b) rounds: BENCH_ROUNDS rounds (default 40) of the 1M-job queue as the scheduler runs them — pendingJobs over the
//      queue, then placeRound with the scheduler's ROUND_BUDGET — with executions ending 1…2·BENCH_MEAN_ROUNDS−1
//      rounds later (the same output on every replica: the job is done). Reports each round's time (p50, p99, max),
//      executions placed per round and µs per placement. Only these rounds of the queue are run, not the whole
//      queue: the output says how many jobs were left.
// Prints a table and writes bench/results/placement.json. Environment: BENCH_WORKERS (comma list,
// "1000,10000,100000"), BENCH_JOBS (1000000), BENCH_SCAN (10000), BENCH_ROUNDS (40), BENCH_MEAN_ROUNDS (50),
// BENCH_SEED (1).
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import Table from 'cli-table3';
import { seededDraw } from '../src/coordinator/candidates.ts';
import { JobIndexes } from '../src/coordinator/indexes.ts';
import {
  DEFAULT_RETRY,
  type JobTerms,
  liveExecution,
  newJobRecord,
  type RetryPolicy,
  report,
  startExecution,
} from '../src/coordinator/job-state.ts';
import { pendingJobs } from '../src/coordinator/pending.ts';
import {
  fillableSlots,
  type PendingJob,
  type Placement,
  placeRound,
  type Round,
  type RoundBudget,
  type WorkerView,
} from '../src/coordinator/placement.ts';
import { ROUND_BUDGET } from '../src/coordinator/scheduler.ts';
import { type Job, ResourceLimits } from '../src/models/job.ts';
import type { JobRecord } from '../src/models/job-record.ts';
import { envNumber } from './env.ts';
import { templateJob } from './template-job.ts';

const num = envNumber;
const SIZES = (process.env.BENCH_WORKERS || '1000,10000,100000').split(',').map(Number);
if (SIZES.some((n) => !Number.isInteger(n) || n < 1))
  throw new Error(
    `BENCH_WORKERS: expected worker counts separated by commas, got ${process.env.BENCH_WORKERS}`,
  );
const JOBS = num('BENCH_JOBS', 1_000_000);
const SCAN = num('BENCH_SCAN', 10_000);
const ROUNDS = num('BENCH_ROUNDS', 40);
const MEAN_ROUNDS = num('BENCH_MEAN_ROUNDS', 50);
const SEED = num('BENCH_SEED', 1);
const STUDY_JOBS = 1000;
const TICK_MS = 100;
const RETRY: RetryPolicy = { ...DEFAULT_RETRY, queueTimeoutMs: null };
const IMAGES = ['sha256:grid-epoch-3', 'sha256:grid-epoch-2', 'sha256:grid-epoch-1'];

// ─── the fleet and the queue ─────────────────────────────────────────────────────────────────────────────────
interface Provider {
  id: string;
  docker: boolean;
  images: string[];
  slots: number;
  cpus: number;
  memory_mb: number;
  price: number;
  established: boolean;
  trusted: boolean;
  audit: number;
  suspect: boolean;
  draining: boolean;
}

const pickWeighted = <T>(u: number, items: readonly (readonly [T, number])[]): T => {
  for (const [x, w] of items) {
    if (u < w) return x;
    u -= w;
  }
  return items.at(-1)![0];
};

/**
 * Providers as a marketplace might have them: mostly Docker hosts holding the current runner image (some older ones
 * too), 1–16 slots, prices log-normal around 0.002 SIM per CPU-second, 70 % established, 60 % of those trusted,
 * 1 % outvoted too often and 1 % draining.
 */
function fleet(n: number, seed: number): Provider[] {
  const u = seededDraw(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
  return Array.from({ length: n }, (_, i) => {
    const docker = u() < 0.7;
    const images = docker ? IMAGES.filter((_, k) => u() < [0.95, 0.4, 0.1][k]!) : [];
    const cores = pickWeighted(u(), [
      [2, 0.3],
      [4, 0.3],
      [8, 0.25],
      [16, 0.15],
    ]);
    const established = u() < 0.7;
    return {
      id: `w${String(i).padStart(6, '0')}`,
      docker,
      images,
      slots: pickWeighted(u(), [
        [1, 0.2],
        [2, 0.3],
        [4, 0.25],
        [8, 0.15],
        [16, 0.1],
      ]),
      cpus: cores,
      memory_mb: cores * 2048,
      price: Math.round(0.002 * Math.exp(0.5 * normal()) * 1e6) / 1e6,
      established,
      trusted: established && u() < 0.6,
      audit: 0.05 + 0.15 * u(),
      suspect: u() < 0.01,
      draining: u() < 0.01,
    };
  });
}

/** One grid epoch shared by every job (only ids, image, limits and terms differ): placement reads no more. */
const template = templateJob(IMAGES[0]!);

/**
 * The queue: studies of 1,000 jobs, quorum 2 (80 % adaptive), 40 % paying at most 0.004 SIM per CPU-second (some
 * providers ask more), 85 / 12 / 3 % on the current / older runner images, a tenth of the jobs asking 4 CPUs and
 * 8 GiB, and 5 % of studies at a higher priority. Records are immutable: every cluster size starts from these.
 */
function queue(n: number, seed: number): JobRecord[] {
  const u = seededDraw(seed);
  const small = ResourceLimits.parse({});
  const big = ResourceLimits.parse({ cpus: 4, memory_mb: 8192 });
  const out: JobRecord[] = [];
  let terms: JobTerms = { quorum: 2, max_results: 4, adaptive: true, max_price: null };
  let study = '';
  let priority = 0;
  for (let i = 0; i < n; i++) {
    if (i % STUDY_JOBS === 0) {
      study = `s${String(i / STUDY_JOBS).padStart(5, '0')}`;
      terms = { quorum: 2, max_results: 4, adaptive: u() < 0.8, max_price: u() < 0.4 ? 0.004 : null };
      priority = u() < 0.05 ? 1 : 0;
    }
    const job: Job = {
      ...template,
      job_id: `${study}-${String(i).padStart(7, '0')}`,
      study_id: study,
      image: pickWeighted(u(), [
        [IMAGES[0]!, 0.85],
        [IMAGES[1]!, 0.12],
        [IMAGES[2]!, 0.03],
      ]),
      limits: u() < 0.1 ? big : small,
      priority,
    };
    out.push(newJobRecord(job, 0, RETRY, terms));
  }
  return out;
}

/** The workers' views as the scheduler builds them each round, from what each has running. */
function views(providers: readonly Provider[], busy: Int32Array): { views: WorkerView[]; free: number } {
  const out: WorkerView[] = [];
  let free = 0;
  for (const [i, p] of providers.entries()) {
    const slotsFree = p.draining ? 0 : fillableSlots(p.slots, Math.max(0, p.slots - busy[i]!));
    free += slotsFree;
    out.push({
      worker_id: p.id,
      executor: p.docker ? 'docker' : 'process',
      slots: p.slots,
      slots_free: slotsFree,
      cpus: p.cpus,
      memory_mb: p.memory_mb,
      images: p.images,
      price_per_cpu_s: p.price,
      draining: p.draining,
      established: p.established,
      trusted: p.trusted,
      audit: p.audit,
      suspect: p.suspect,
    });
  }
  return { views: out, free };
}

// ─── (a) bounded candidates against the full scan, on identical input ─────────────────────────────────────────
interface Quality {
  placed: number;
  ms: number;
  us_per_placement: number;
  mean_price: number;
  /** The chosen worker's busy share of its slots when chosen, over all executions (0: always an idle worker). */
  mean_load_at_pick: number;
  /** Executions on a worker this round had already given one, and the most on one worker. */
  doubled_up: number;
  max_per_worker: number;
  /** Jobs that needed an established provider and got one first, of those that needed one and were placed. */
  anchored_share: number;
  /** Adaptive fresh jobs run alone on a trusted provider, of those placed. */
  solo_share: number;
}

function quality(
  round: Round,
  ms: number,
  jobs: readonly PendingJob[],
  workers: readonly WorkerView[],
): Quality {
  const byId = new Map(workers.map((w) => [w.worker_id, w]));
  const jobById = new Map(jobs.map((j) => [j.job_id, j]));
  const used = new Map<string, number>();
  let price = 0;
  let load = 0;
  let doubled = 0;
  const firstOf = new Map<string, Placement>();
  for (const p of round.placements) {
    const w = byId.get(p.worker_id)!;
    const before = used.get(p.worker_id) ?? 0;
    price += w.price_per_cpu_s;
    load += 1 - (w.slots_free - before) / w.slots;
    if (before > 0) doubled++;
    used.set(p.worker_id, before + 1);
    if (!firstOf.has(p.job_id)) firstOf.set(p.job_id, p);
  }
  let needing = 0;
  let anchored = 0;
  let adaptive = 0;
  let solo = 0;
  for (const [id, p] of firstOf) {
    const job = jobById.get(id)!;
    if (job.needs_established) {
      needing++;
      if (byId.get(p.worker_id)!.established) anchored++;
    }
    if (job.adaptive) {
      adaptive++;
      if (p.unreplicated) solo++;
    }
  }
  const n = round.placements.length;
  return {
    placed: n,
    ms,
    us_per_placement: (ms * 1000) / n,
    mean_price: price / n,
    mean_load_at_pick: load / n,
    doubled_up: doubled,
    max_per_worker: Math.max(0, ...used.values()),
    anchored_share: needing ? anchored / needing : 1,
    solo_share: adaptive ? solo / adaptive : 0,
  };
}

// ─── (b) rounds of the queue ──────────────────────────────────────────────────────────────────────────────────
interface Rounds {
  rounds: number;
  placed: number;
  /** pendingJobs + placeRound per round, ms: the first round (cold: the code is still being compiled) apart. */
  first_round_ms: number;
  round_ms: { p50: number; p99: number; max: number; mean: number };
  /** Of which placeRound alone, mean. */
  place_ms_mean: number;
  /** Building the workers' views (the scheduler does it every round, whatever the placement), mean. */
  views_ms_mean: number;
  placements_per_round: number;
  rounds_stopped_by_budget: number;
  us_per_placement: number;
  probes_per_placement: number;
  queued_jobs_left: number;
  done_jobs: number;
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
};

interface Size {
  workers: number;
  slots: number;
  candidates: number | 'all';
  comparison: {
    executions: number;
    bounded: Quality;
    full_scan: Quality;
    /** The bounded search with other candidate counts: what more candidates buy, and cost. */
    sweep: (Quality & { candidates: number })[];
    /** A round of 10,000 executions at each one's measured rate, ms. */
    round_of_10000_ms: { bounded: number; full_scan: number };
  };
  rounds: Rounds;
}

function simulate(n: number, initial: readonly JobRecord[], budget: RoundBudget): Size {
  const providers = fleet(n, SEED * 7919 + n);
  const established = new Map(providers.map((p) => [p.id, p.established]));
  const isEstablished = (w: string) => established.get(w) ?? false;
  const jobs = new Map<string, JobRecord>();
  const index = new JobIndexes();
  for (const rec of initial) {
    jobs.set(rec.job.job_id, rec);
    index.apply(rec.job.job_id, undefined, rec);
  }
  const get = (id: string) => jobs.get(id)!;
  index.queue(get, 'paid').next(); // the queue's first sort, once, before anything is timed
  const studies = [...new Set(initial.map((r) => r.job.study_id))];
  const funds = () => new Map(studies.map((s) => [s, 1e15]));
  const busy = new Int32Array(n);
  const slots = providers.reduce((s, p) => s + p.slots, 0);

  // (a) One round on idle workers, both ways, on the same pending jobs, funds and draws.
  const idle = views(providers, busy);
  const executions = Math.min(SCAN, Math.floor(idle.free / 2));
  const pending = pendingJobs(index.queue(get, 'paid'), {
    now: 0,
    free: executions,
    established: isEstablished,
  });
  // Timed as the median of `runs` (the draws are the same each time, and so is the round).
  const compare = (candidates: number | 'all' | undefined, runs: number) => {
    const run = () => {
      const t = performance.now();
      const round = placeRound({
        jobs: pending,
        workers: idle.views,
        now: 0,
        funds: funds(),
        rand: seededDraw(SEED),
        anchored: true,
        candidates,
        shuffle: seededDraw(SEED + 1),
        budget: { placements: executions, probes: Number.POSITIVE_INFINITY },
      });
      return { round, ms: performance.now() - t };
    };
    // Warm-up (the compiler's, not the data's): up to 20 runs or 0.3 s, unless the run is a single long one.
    const warm = performance.now();
    for (let k = 0; runs > 1 && k < 20 && performance.now() - warm < 300; k++) run();
    const all = Array.from({ length: runs }, run);
    const { round } = all[0]!;
    return {
      round,
      q: quality(
        round,
        quantile(
          all.map((x) => x.ms),
          0.5,
        ),
        pending,
        idle.views,
      ),
    };
  };
  const bounded = compare(undefined, 5);
  // The full scan costs milliseconds per execution in a large cluster: one run there.
  const full = compare('all', n < 10_000 ? 3 : 1);
  const limit = bounded.round.candidates as number;
  const sweep = [2, limit / 2, limit, 2 * limit].map((d) => ({ candidates: d, ...compare(d, 3).q }));

  // (b) Rounds of the queue with the scheduler's budget; executions end some rounds later.
  const rand = seededDraw(SEED + 2);
  const shuffle = seededDraw(SEED + 3);
  const pos = new Map(providers.map((p, i) => [p.id, i]));
  const completions = new Map<number, { job: string; attempt: number; worker: string }[]>();
  const fundsLeft = funds();
  const commit = (id: string, next: JobRecord) => {
    const before = jobs.get(id)!;
    if (next === before) return;
    jobs.set(id, next);
    index.apply(id, before, next);
  };
  const times: number[] = [];
  let placeMs = 0;
  let viewsMs = 0;
  let placed = 0;
  let probes = 0;
  let stoppedRounds = 0;
  let seq = 0;
  let done = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const now = r * TICK_MS;
    for (const c of completions.get(r) ?? []) {
      busy[pos.get(c.worker)!]!--;
      const rec = jobs.get(c.job)!;
      if (!liveExecution(rec, c.attempt, c.worker)) continue;
      const next = report(rec, c.attempt, c.worker, { seq: ++seq, output_digest: 'ok' }, now, RETRY);
      if (next.status === 'done') done++;
      commit(c.job, next);
    }
    completions.delete(r);
    let t = performance.now();
    const v = views(providers, busy);
    viewsMs += performance.now() - t;
    if (v.free === 0) continue;
    t = performance.now();
    const jobsNow = pendingJobs(index.queue(get, 'paid'), {
      now,
      free: Math.min(v.free, budget.placements),
      established: isEstablished,
    });
    const t1 = performance.now();
    const round = placeRound({
      jobs: jobsNow,
      workers: v.views,
      now,
      funds: fundsLeft,
      rand,
      anchored: true,
      shuffle,
      budget,
    });
    const t2 = performance.now();
    times.push(t2 - t);
    placeMs += t2 - t1;
    placed += round.placements.length;
    probes += round.probes;
    if (round.stopped) stoppedRounds++;
    for (const p of round.placements) {
      const rec = jobs.get(p.job_id)!;
      const next = startExecution(rec, p.worker_id, now, 1e12, { pay: p.pay, unreplicated: p.unreplicated });
      if (next === rec) continue;
      commit(p.job_id, next);
      busy[pos.get(p.worker_id)!]!++;
      const due = r + 1 + Math.floor(rand() * (2 * MEAN_ROUNDS - 1));
      const item = { job: p.job_id, attempt: next.attempts, worker: p.worker_id };
      const list = completions.get(due);
      if (list) list.push(item);
      else completions.set(due, [item]);
    }
  }
  let queued = 0;
  for (const rec of jobs.values()) if (rec.status === 'queued') queued++;
  const sum = times.reduce((a, b) => a + b, 0);
  const warm = times.slice(1);
  return {
    workers: n,
    slots,
    candidates: bounded.round.candidates,
    comparison: {
      executions,
      bounded: bounded.q,
      full_scan: full.q,
      sweep,
      round_of_10000_ms: {
        bounded: (bounded.q.us_per_placement * 10_000) / 1000,
        full_scan: (full.q.us_per_placement * 10_000) / 1000,
      },
    },
    rounds: {
      rounds: ROUNDS,
      placed,
      first_round_ms: times[0] ?? Number.NaN,
      round_ms: {
        p50: quantile(warm, 0.5),
        p99: quantile(warm, 0.99),
        max: Math.max(...warm),
        mean: warm.reduce((x, y) => x + y, 0) / warm.length,
      },
      place_ms_mean: placeMs / times.length,
      views_ms_mean: viewsMs / ROUNDS,
      placements_per_round: placed / times.length,
      rounds_stopped_by_budget: stoppedRounds,
      us_per_placement: (sum * 1000) / placed,
      probes_per_placement: probes / placed,
      queued_jobs_left: queued,
      done_jobs: done,
    },
  };
}

// ─── the run ──────────────────────────────────────────────────────────────────────────────────────────────────
const cpu = cpus()[0]?.model ?? 'unknown';
const started = performance.now();
console.log(
  `placement at scale: ${SIZES.map((n) => n.toLocaleString('en')).join(' / ')} workers, ` +
    `${JOBS.toLocaleString('en')} queued jobs; ${cpu}, ${cpus().length} cores, node ${process.versions.node}`,
);
let t = performance.now();
const initial = queue(JOBS, SEED);
console.log(
  `  queue of ${JOBS.toLocaleString('en')} job records built in ${((performance.now() - t) / 1000).toFixed(1)} s`,
);
const sizes: Size[] = [];
for (const n of SIZES) {
  t = performance.now();
  const s = simulate(n, initial, ROUND_BUDGET);
  sizes.push(s);
  console.log(
    `  ${n.toLocaleString('en')} workers (${s.slots.toLocaleString('en')} slots): ` +
      `${((performance.now() - t) / 1000).toFixed(1)} s`,
  );
}

const f = (x: number, d = 1) => x.toFixed(d);
const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
const a = new Table({
  head: [
    'workers',
    'candidates',
    'executions (idle workers)',
    'µs/placement: bounded · full scan',
    'round of 10,000 (ms): bounded · full scan',
    'mean price (mSIM/CPU-s): bounded · full scan',
    'load at pick: bounded · full scan',
    'doubled up: bounded · full scan',
    'anchored · solo (bounded / full)',
  ],
});
for (const s of sizes) {
  const b = s.comparison.bounded;
  const x = s.comparison.full_scan;
  a.push([
    s.workers.toLocaleString('en'),
    s.candidates,
    s.comparison.executions.toLocaleString('en'),
    `${f(b.us_per_placement, 2)} · ${f(x.us_per_placement)}`,
    `${f(s.comparison.round_of_10000_ms.bounded)} · ${f(s.comparison.round_of_10000_ms.full_scan)}`,
    `${f(b.mean_price * 1000, 3)} · ${f(x.mean_price * 1000, 3)} (${b.mean_price >= x.mean_price ? '+' : ''}${pct(b.mean_price / x.mean_price - 1)})`,
    `${f(b.mean_load_at_pick, 3)} · ${f(x.mean_load_at_pick, 3)}`,
    `${b.doubled_up} · ${x.doubled_up}`,
    `${pct(b.anchored_share)} · ${pct(b.solo_share)} / ${pct(x.anchored_share)} · ${pct(x.solo_share)}`,
  ]);
}
console.log('(a) one round on idle workers, bounded candidates against the full scan on identical input');
console.log(a.toString());
const c = new Table({
  head: [
    'workers',
    'candidates',
    'µs/placement',
    'mean price (mSIM/CPU-s), against the full scan',
    'load at pick',
  ],
});
for (const s of sizes) {
  const x = s.comparison.full_scan;
  for (const q of s.comparison.sweep)
    c.push([
      s.workers.toLocaleString('en'),
      `${q.candidates}${q.candidates === s.candidates ? ' (default)' : ''}`,
      f(q.us_per_placement, 2),
      `${f(q.mean_price * 1000, 3)} (${q.mean_price >= x.mean_price ? '+' : ''}${pct(q.mean_price / x.mean_price - 1)})`,
      f(q.mean_load_at_pick, 3),
    ]);
}
console.log('    the same round with other candidate counts');
console.log(c.toString());
const b = new Table({
  head: [
    'workers',
    'first round (ms)',
    'later rounds (ms): p50 · p99 · max',
    'of which placeRound (mean ms)',
    'placed per round',
    'stopped by budget',
    'round ÷ placed (µs)',
    'workers looked at per placement',
    'views (ms, not placement)',
    'jobs done · still queued',
  ],
});
for (const s of sizes) {
  const r = s.rounds;
  b.push([
    s.workers.toLocaleString('en'),
    f(r.first_round_ms),
    `${f(r.round_ms.p50)} · ${f(r.round_ms.p99)} · ${f(r.round_ms.max)}`,
    f(r.place_ms_mean),
    f(r.placements_per_round, 0),
    `${r.rounds_stopped_by_budget} of ${r.rounds}`,
    f(r.us_per_placement, 2),
    f(r.probes_per_placement, 1),
    f(r.views_ms_mean),
    `${r.done_jobs.toLocaleString('en')} · ${r.queued_jobs_left.toLocaleString('en')}`,
  ]);
}
console.log(
  `(b) ${ROUNDS} rounds of the ${JOBS.toLocaleString('en')}-job queue (not the whole queue), budget ` +
    `${ROUND_BUDGET.placements} placements / ${ROUND_BUDGET.probes} workers looked at per round`,
);
console.log(b.toString());

const seconds = (performance.now() - started) / 1000;
const out = new URL('./results/placement.json', import.meta.url);
writeFileSync(
  out,
  `${JSON.stringify(
    {
      benchmark: 'placement',
      at: new Date().toISOString(),
      node: process.versions.node,
      cpu,
      cores: cpus().length,
      seconds,
      setup: {
        workers: SIZES,
        jobs: JOBS,
        scan: SCAN,
        rounds: ROUNDS,
        mean_rounds: MEAN_ROUNDS,
        tick_ms: TICK_MS,
        seed: SEED,
        budget: ROUND_BUDGET,
        note: `(b) runs ${ROUNDS} rounds of the queue, not all of it`,
      },
      sizes,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote bench/results/placement.json (${seconds.toFixed(0)} s)`);
