// Verification policy at scale: a simulated marketplace of providers, some of them cheating, run through the
// coordinator's own pure deciders — the job state machine (job-state.ts: replicas, the vote, re-verification),
// placement (placement.ts: anchoring, trusted providers running fresh jobs alone, audits drawn from `rand`) and
// reputation (reputation.ts: trust from runs of valid results, reset and re-verification on an invalid one). The
// loop around them mirrors the coordinator: the scheduler's pending jobs and worker views, ProviderStanding.onCommit
// (a verdict that changes updates its provider's reputation; an invalid one reopens the provider's recent
// unreplicated jobs while their study is open) and studies that close once all their jobs have ended.
//
// Time runs in steps; each execution takes 1…2·BENCH_MEAN_STEPS−1 steps (uniform), all jobs are the same size.
// Honest providers return the true output; a cheater returns a wrong one with probability BENCH_CHEAT_P, each wrong
// output its own (the main figure) or, in the collusion scenario, all cheaters the same one. Measured on the jobs
// after the first BENCH_WARMUP share (steady state), once every job has ended:
//  - CPU overhead: executions started (every one, cancelled or not, each weighing one job) / jobs done;
//  - wrong results accepted: done jobs whose accepted output is not the true one / jobs done;
//  - jobs failed (no quorum), cheaters' wrong results caught (judged invalid), providers trusted (mean over steps).
// Prints a table and writes bench/results/verify.json (verify-grid.json for a policy grid).
//
// Environment: BENCH_PROVIDERS (2000), BENCH_JOBS (300000), BENCH_CHEATERS (share of providers, 0.1),
// BENCH_CHEAT_P (0.3), BENCH_SLOTS (slots per provider drawn from 1…n, 2), BENCH_MEAN_STEPS (8), BENCH_STUDY_JOBS
// (jobs per study, 1000; 0: one study open all along), BENCH_WARMUP (0.2), BENCH_SEED (1), BENCH_LOADS (offered load
// as a share of single-execution capacity, comma list, "1,0.7": 1 or more is saturated, the queue always holding a
// job per free slot; below 1 a steady stream after a saturated warm-up), BENCH_COLLUSION (0 skips that scenario),
// BENCH_THREADS (scenarios run in parallel, one per core; 0: on the main thread), and a policy grid:
// BENCH_TRUST_AFTER and BENCH_MIN_AUDIT (comma lists; either one adds every other combination, written to
// verify-grid.json).
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import Table from 'cli-table3';
import { pino } from 'pino';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { StudyFunds } from '../src/coordinator/funds.ts';
import { JobIndexes } from '../src/coordinator/indexes.ts';
import {
  DEFAULT_RETRY,
  type JobTerms,
  liveExecution,
  newJobRecord,
  type RetryPolicy,
  report,
  reverify,
  startExecution,
} from '../src/coordinator/job-state.ts';
import { pendingJobs } from '../src/coordinator/pending.ts';
import { fillableSlots, place, type WorkerView } from '../src/coordinator/placement.ts';
import {
  auditProbability,
  DEFAULT_TRUST,
  established,
  suspect,
  type TrustPolicy,
  trusted,
} from '../src/coordinator/reputation.ts';
import { ProviderStanding } from '../src/coordinator/standing.ts';
import type { JobRecord } from '../src/models/job-record.ts';
import { templateJob } from './template-job.ts';

const TARGET_OVERHEAD = 1.15;
const TARGET_WRONG = 0.001;

const num = (name: string, fallback: number) => {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}: expected a number, got ${v}`);
  return n;
};
const list = (name: string, fallback: number[]) => {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  const xs = v.split(',').map(Number);
  if (xs.some((x) => !Number.isFinite(x)))
    throw new Error(`${name}: expected numbers separated by commas, got ${v}`);
  return xs;
};

interface Config {
  name: string;
  providers: number;
  jobs: number;
  cheaters: number;
  cheatP: number;
  collusion: boolean;
  maxSlots: number;
  meanSteps: number;
  studyJobs: number;
  warmup: number;
  load: number;
  seed: number;
  trust: TrustPolicy;
}

const base: Omit<Config, 'name' | 'collusion' | 'load' | 'trust'> = {
  providers: num('BENCH_PROVIDERS', 2000),
  jobs: num('BENCH_JOBS', 300_000),
  cheaters: num('BENCH_CHEATERS', 0.1),
  cheatP: num('BENCH_CHEAT_P', 0.3),
  maxSlots: num('BENCH_SLOTS', 2),
  meanSteps: num('BENCH_MEAN_STEPS', 8),
  studyJobs: num('BENCH_STUDY_JOBS', 1000),
  warmup: num('BENCH_WARMUP', 0.2),
  seed: num('BENCH_SEED', 1),
};

const TERMS: JobTerms = { quorum: 2, max_results: 4, adaptive: true, max_price: null };
const RETRY: RetryPolicy = { ...DEFAULT_RETRY, queueTimeoutMs: null };
/** Every provider holds this much stake: trust is reachable by results alone. */
const STAKE = DEFAULT_TRUST.minStake;
const LEASE_MS = 1e12;
const STEP_MS = 1000;
const TRUE_DIGEST = 'true-output';

/** One job's spec, shared by every simulated job (only its ids differ): placement reads its limits and image. */
const template = templateJob('sha256:bench');

interface Provider {
  id: string;
  cheater: boolean;
  slots: number;
  busy: number;
  price: number;
}

/** How a job's first execution was placed: what its replicas (if any) are for. */
const FIRST = { solo: 0, audited: 1, untrusted: 2 } as const;
type FirstPlacement = (typeof FIRST)[keyof typeof FIRST];

interface Result {
  scenario: string;
  load: number;
  collusion: boolean;
  trust_after: number;
  min_audit: number;
  jobs_measured: number;
  done: number;
  failed: number;
  executions: number;
  cpu_overhead: number;
  /** Executions on honest providers per job done: the CPU verification costs those who do the work. */
  honest_cpu_overhead: number;
  wrong_accepted: number;
  /** Of those: accepted alone from a trusted cheater (and not re-verified), or by a quorum of colluders. */
  wrong_accepted_solo: number;
  wrong_accepted_quorum: number;
  wrong_accepted_share: number;
  failed_share: number;
  cheater_wrong_results: number;
  cheater_wrong_caught: number;
  caught_share: number;
  honest_judged_invalid: number;
  solo_share: number;
  /** Executions per measured job by how its first execution was placed. */
  breakdown: Record<'solo' | 'audited' | 'untrusted', { jobs: number; executions: number }>;
  reverified_jobs: number;
  reverify_skipped_closed: number;
  trusted_honest_mean: number;
  trusted_cheaters_mean: number;
  /** Cold start: the step at which 90 % of honest providers were first trusted, and jobs submitted by then. */
  bootstrap_steps: number | null;
  bootstrap_jobs: number | null;
  honest_providers: number;
  cheating_providers: number;
  steps: number;
  sim_seconds: number;
  meets_targets: boolean;
}

function simulate(c: Config): Result {
  const t0 = performance.now();
  const gen = xoroshiro128plus(c.seed);
  const rand = () => uniformFloat64(gen);

  // Providers: a random tenth (by default) cheats; 1…maxSlots slots each; prices spread so ranking is not by id alone.
  const providers: Provider[] = [];
  for (let i = 0; i < c.providers; i++) {
    providers.push({
      id: `p${String(i).padStart(6, '0')}`,
      cheater: false,
      slots: 1 + Math.floor(rand() * c.maxSlots),
      busy: 0,
      price: Math.round(rand() * 100) / 1000,
    });
  }
  const cheaters = Math.round(c.cheaters * c.providers);
  for (let k = 0; k < cheaters; k++) {
    // A partial Fisher–Yates shuffle picks them.
    const j = k + Math.floor(rand() * (c.providers - k));
    [providers[k], providers[j]] = [providers[j]!, providers[k]!];
    providers[k]!.cheater = true;
  }
  providers.sort((a, b) => (a.id < b.id ? -1 : 1));
  const byId = new Map(providers.map((p) => [p.id, p]));
  const totalSlots = providers.reduce((s, p) => s + p.slots, 0);

  const jobs = new Map<string, JobRecord>();
  /** The store's own indexes: the queue in order, and each study's live jobs. */
  const index = new JobIndexes();
  const queued = new Set<string>();
  const first = new Map<string, FirstPlacement>();
  const reverified = new Set<string>();
  interface StudyState {
    id: string;
    jobs: string[];
    closed: boolean;
  }
  const studies = new Map<string, StudyState>();
  const studyOf = (jobId: string) => studies.get(jobId.slice(0, jobId.indexOf('-')));
  const completions = new Map<number, { job: string; attempt: number; worker: string }[]>();
  const warmupJobs = Math.floor(c.warmup * c.jobs);
  let now = 0;
  let seq = 0;
  let wrongSerial = 0;
  let reverifySkipped = 0;

  const r: Result = {
    scenario: c.name,
    load: c.load,
    collusion: c.collusion,
    trust_after: c.trust.trustAfter,
    min_audit: c.trust.minAudit,
    jobs_measured: 0,
    done: 0,
    failed: 0,
    executions: 0,
    cpu_overhead: 0,
    honest_cpu_overhead: 0,
    wrong_accepted: 0,
    wrong_accepted_solo: 0,
    wrong_accepted_quorum: 0,
    wrong_accepted_share: 0,
    failed_share: 0,
    cheater_wrong_results: 0,
    cheater_wrong_caught: 0,
    caught_share: 0,
    honest_judged_invalid: 0,
    solo_share: 0,
    breakdown: {
      solo: { jobs: 0, executions: 0 },
      audited: { jobs: 0, executions: 0 },
      untrusted: { jobs: 0, executions: 0 },
    },
    reverified_jobs: 0,
    reverify_skipped_closed: 0,
    trusted_honest_mean: 0,
    trusted_cheaters_mean: 0,
    bootstrap_steps: null,
    bootstrap_jobs: null,
    honest_providers: c.providers - cheaters,
    cheating_providers: cheaters,
    steps: 0,
    sim_seconds: 0,
    meets_targets: false,
  };

  // ─── the store and ProviderStanding.onCommit ───────────────────────────────────────────────────────────────
  const toReverify: string[] = [];

  // The coordinator's own standing: each verdict a commit makes updates its provider's reputation, and a caught
  // provider's solo results come back here for re-verification.
  const standing = new ProviderStanding({
    funds: new StudyFunds(),
    stakeOf: () => STAKE,
    reverify: (jobId) => toReverify.push(jobId),
    clock: { now: () => now },
    policy: c.trust,
    log: pino({ level: 'silent' }),
  });

  function commit(id: string, next: JobRecord) {
    const before = jobs.get(id)!;
    if (next === before) return;
    jobs.set(id, next);
    index.apply(id, before, next);
    if (next.status === 'queued') queued.add(id);
    else queued.delete(id);
    standing.onCommit({ kind: 'job', id, before, after: next });
  }

  /** A transition and what follows from it: as the coordinator's reverify hook, only while the study is open. */
  function transition(id: string, next: JobRecord) {
    commit(id, next);
    while (toReverify.length > 0) {
      const jobId = toReverify.shift()!;
      const rec = jobs.get(jobId);
      if (!rec || studyOf(jobId)?.closed !== false) {
        reverifySkipped++;
        continue;
      }
      const reopened = reverify(rec, now, RETRY);
      if (reopened !== rec) reverified.add(jobId);
      commit(jobId, reopened);
    }
  }

  // ─── submitting, closing and measuring ───────────────────────────────────────────────────────────────────
  let submitted = 0;
  let studyCount = 0;
  let study: StudyState | undefined;
  function submit() {
    if (!study || (c.studyJobs > 0 && study.jobs.length >= c.studyJobs)) {
      study = { id: `s${String(studyCount++).padStart(5, '0')}`, jobs: [], closed: false };
      studies.set(study.id, study);
    }
    const id = `${study.id}-${String(submitted).padStart(7, '0')}`;
    const rec = newJobRecord({ ...template, job_id: id, study_id: study.id }, now, RETRY, TERMS);
    jobs.set(id, rec);
    index.apply(id, undefined, rec);
    queued.add(id);
    study.jobs.push(id);
    submitted++;
  }

  const isMeasured = (jobId: string) => Number(jobId.slice(jobId.indexOf('-') + 1)) >= warmupJobs;
  const names = ['solo', 'audited', 'untrusted'] as const;

  /** A study whose jobs have all ended closes: its results are final (no more re-verification) and are counted. */
  function close(s: StudyState) {
    s.closed = true;
    for (const id of s.jobs) {
      const rec = jobs.get(id)!;
      jobs.delete(id);
      const kind = first.get(id);
      first.delete(id);
      if (!isMeasured(id)) continue;
      r.jobs_measured++;
      r.executions += rec.attempts;
      if (kind !== undefined) {
        r.breakdown[names[kind]].jobs++;
        r.breakdown[names[kind]].executions += rec.attempts;
      }
      if (reverified.has(id)) r.reverified_jobs++;
      if (rec.status === 'done') {
        r.done++;
        if (rec.result!.output_digest !== TRUE_DIGEST) {
          r.wrong_accepted++;
          if (rec.result!.agreed === 1) r.wrong_accepted_solo++;
          else r.wrong_accepted_quorum++;
        }
        if (rec.result!.agreed === 1) r.solo_share++;
      } else if (rec.status === 'failed') r.failed++;
      for (const e of rec.executions) {
        if (!byId.get(e.worker_id)!.cheater) r.honest_cpu_overhead++;
        if (e.ended !== 'ok') continue;
        if (e.output_digest !== TRUE_DIGEST) {
          r.cheater_wrong_results++;
          if (e.verdict === 'invalid') r.cheater_wrong_caught++;
        } else if (e.verdict === 'invalid') r.honest_judged_invalid++;
      }
    }
    for (const id of s.jobs) reverified.delete(id);
    s.jobs = [];
  }

  // ─── the loop ───────────────────────────────────────────────────────────────────────────────────────────
  const perStep = (c.load * totalSlots) / c.meanSteps;
  let arrivals = 0;
  let trustedSamples = 0;
  let step = 0;
  for (; ; step++) {
    now = step * STEP_MS;

    // Results due now, in the order their executions started.
    for (const done of completions.get(step) ?? []) {
      const p = byId.get(done.worker)!;
      p.busy--;
      const rec = jobs.get(done.job);
      // Stopped when the quorum was reached without it: it ran all the same (and is counted).
      if (!rec || !liveExecution(rec, done.attempt, done.worker)) continue;
      const cheats = p.cheater && rand() < c.cheatP;
      const output_digest = !cheats ? TRUE_DIGEST : c.collusion ? 'colluded' : `wrong-${wrongSerial++}`;
      transition(done.job, report(rec, done.attempt, done.worker, { seq: ++seq, output_digest }, now, RETRY));
    }
    completions.delete(step);
    for (const s of studies.values()) {
      if (!s.closed && index.liveJobs(s.id) === 0 && (s !== study || submitted >= c.jobs)) close(s);
    }
    for (const [id, s] of studies) {
      if (!s.closed) continue;
      studies.delete(id);
      index.dropStudy(id);
    }

    // The workers' views, as the scheduler builds them. Only those with a slot to fill are passed (place() scans
    // every view for every execution, and a full one is infeasible); the full ones matter to it only through whether
    // anyone is established, so one full established provider stands in for them when no free one is.
    const views: WorkerView[] = [];
    let free = 0;
    let trustedHonest = 0;
    let trustedCheaters = 0;
    let anyFreeEstablished = false;
    let fullEstablished: WorkerView | undefined;
    for (const p of providers) {
      const rep = standing.reputation(p.id);
      const isTrusted = trusted(rep, STAKE, c.trust);
      if (isTrusted) {
        if (p.cheater) trustedCheaters++;
        else trustedHonest++;
      }
      const slotsFree = fillableSlots(p.slots, Math.max(0, p.slots - p.busy));
      const anchor = established(rep, c.trust);
      if (slotsFree < 1 && (!anchor || fullEstablished)) continue;
      const view: WorkerView = {
        worker_id: p.id,
        executor: 'process',
        slots_free: slotsFree,
        slots: p.slots,
        cpus: 1,
        memory_mb: 4096,
        images: [],
        price_per_cpu_s: p.price,
        draining: false,
        established: anchor,
        trusted: isTrusted,
        audit: auditProbability(rep, c.trust),
        suspect: suspect(rep),
      };
      if (slotsFree < 1) {
        fullEstablished = view;
        continue;
      }
      free += slotsFree;
      anyFreeEstablished ||= anchor;
      views.push(view);
    }
    if (fullEstablished && !anyFreeEstablished) views.push(fullEstablished);
    if (r.bootstrap_steps === null && trustedHonest >= 0.9 * r.honest_providers) {
      r.bootstrap_steps = step;
      r.bootstrap_jobs = submitted;
    }
    if (submitted >= warmupJobs && submitted < c.jobs) {
      trustedSamples++;
      r.trusted_honest_mean += trustedHonest;
      r.trusted_cheaters_mean += trustedCheaters;
    }

    // New jobs: saturated, the queue holds at least a job per free slot; otherwise a steady stream, after a
    // saturated warm-up (the few providers trusted at first make a slow start, which would leave a backlog).
    if (c.load >= 1 || submitted < warmupJobs) {
      while (submitted < c.jobs && queued.size < free) submit();
    } else {
      arrivals += perStep;
      while (submitted < c.jobs && arrivals >= 1) {
        submit();
        arrivals--;
      }
    }

    if (submitted >= c.jobs && queued.size === 0 && completions.size === 0 && studies.size === 0) break;
    if (free === 0 || queued.size === 0) continue;

    // Pending jobs, in queue order and as many as the scheduler looks at, as it builds them.
    const pending = pendingJobs(
      index.queue((id) => jobs.get(id)!, 'paid'),
      { now, free, established: (w) => established(standing.reputation(w), c.trust) },
    );
    for (const pl of place(pending, views, now, new Map(), rand)) {
      const rec = jobs.get(pl.job_id)!;
      const next = startExecution(rec, pl.worker_id, now, LEASE_MS, {
        pay: pl.pay,
        unreplicated: pl.unreplicated,
      });
      if (next === rec) continue;
      if (rec.attempts === 0) {
        const t = trusted(standing.reputation(pl.worker_id), STAKE, c.trust);
        first.set(pl.job_id, next.executions[0]!.solo ? FIRST.solo : t ? FIRST.audited : FIRST.untrusted);
      }
      transition(pl.job_id, next);
      byId.get(pl.worker_id)!.busy++;
      const due = step + 1 + Math.floor(rand() * (2 * c.meanSteps - 1));
      const list = completions.get(due);
      const item = { job: pl.job_id, attempt: next.attempts, worker: pl.worker_id };
      if (list) list.push(item);
      else completions.set(due, [item]);
    }
  }

  r.steps = step;
  r.cpu_overhead = r.executions / r.done;
  r.honest_cpu_overhead /= r.done;
  r.wrong_accepted_share = r.wrong_accepted / r.done;
  r.failed_share = r.failed / r.jobs_measured;
  r.caught_share = r.cheater_wrong_results === 0 ? 1 : r.cheater_wrong_caught / r.cheater_wrong_results;
  r.solo_share /= r.done;
  r.reverify_skipped_closed = reverifySkipped;
  r.trusted_honest_mean /= Math.max(1, trustedSamples);
  r.trusted_cheaters_mean /= Math.max(1, trustedSamples);
  r.sim_seconds = (performance.now() - t0) / 1000;
  r.meets_targets = r.cpu_overhead <= TARGET_OVERHEAD && r.wrong_accepted_share <= TARGET_WRONG;
  return r;
}

// ─── the runs: one worker thread per core, each running whole scenarios (a scenario is deterministic) ────────
if (!isMainThread) {
  parentPort!.on('message', (c: Config) => parentPort!.postMessage(simulate(c)));
} else {
  await main();
}

async function main() {
  const loads = list('BENCH_LOADS', [1, 0.7]);
  const collusion = process.env.BENCH_COLLUSION !== '0';
  const grid = Boolean(process.env.BENCH_TRUST_AFTER || process.env.BENCH_MIN_AUDIT);
  const policies: TrustPolicy[] = [DEFAULT_TRUST];
  if (grid)
    for (const trustAfter of list('BENCH_TRUST_AFTER', [DEFAULT_TRUST.trustAfter]))
      for (const minAudit of list('BENCH_MIN_AUDIT', [DEFAULT_TRUST.minAudit]))
        if (trustAfter !== DEFAULT_TRUST.trustAfter || minAudit !== DEFAULT_TRUST.minAudit)
          policies.push({ ...DEFAULT_TRUST, trustAfter, minAudit });
  const configs: Config[] = [];
  for (const trust of policies)
    for (const load of loads) {
      configs.push({ ...base, name: 'main', collusion: false, load, trust });
      if (collusion) configs.push({ ...base, name: 'collusion', collusion: true, load, trust });
    }

  const cpu = cpus()[0]?.model ?? 'unknown';
  // BENCH_THREADS=0 runs the scenarios on the main thread, one after another (for a profiler).
  const threads = Math.max(0, Math.min(num('BENCH_THREADS', availableParallelism()), configs.length));
  console.log(
    `${base.providers} providers (${(100 * base.cheaters).toFixed(0)} % cheating ${(100 * base.cheatP).toFixed(0)} % ` +
      `of the time), ${base.jobs} jobs in studies of ${base.studyJobs || 'all'}, first ` +
      `${(100 * base.warmup).toFixed(0)} % discarded; quorum 2, max 4 results, adaptive; ${configs.length} ` +
      `scenarios on ${threads || 'the main'} thread${threads === 1 ? '' : 's'}; ${cpu}`,
  );
  const started = performance.now();
  const results: Result[] = new Array(configs.length);
  const done = (c: Config, res: Result) =>
    console.log(
      `  ${c.name}, load ${c.load >= 1 ? 'saturated' : c.load}, trustAfter ${c.trust.trustAfter}, minAudit ` +
        `${c.trust.minAudit}: ${res.cpu_overhead.toFixed(3)}× CPU, ` +
        `${(100 * res.wrong_accepted_share).toFixed(4)} % wrong accepted (${res.sim_seconds.toFixed(1)} s)`,
    );
  let next = 0;
  if (threads === 0)
    for (const [i, c] of configs.entries()) {
      results[i] = simulate(c);
      done(c, results[i]);
    }
  await Promise.all(
    Array.from({ length: threads }, async () => {
      const worker = new Worker(new URL(import.meta.url));
      try {
        while (next < configs.length) {
          const i = next++;
          const c = configs[i]!;
          results[i] = await new Promise<Result>((resolve, reject) => {
            worker.once('message', resolve);
            worker.once('error', reject);
            worker.postMessage(c);
          });
          worker.removeAllListeners('error');
          done(c, results[i]);
        }
      } finally {
        await worker.terminate();
      }
    }),
  );
  printReport(results, cpu, (performance.now() - started) / 1000, grid ? 'verify-grid.json' : 'verify.json');
}

function printReport(results: Result[], cpu: string, seconds: number, file: string) {
  const pct = (x: number, digits = 2) => `${(100 * x).toFixed(digits)} %`;
  const table = new Table({
    head: [
      'scenario',
      'load',
      'trustAfter / minAudit',
      'CPU overhead (on honest providers)',
      'wrong accepted',
      'failed',
      'cheats caught',
      'run alone',
      'trusted honest / cheaters',
      'cold start: steps (jobs) to 90 % trusted',
      'executions per job: solo · audited · untrusted first',
    ],
  });
  for (const x of results) {
    const per = (k: keyof Result['breakdown']) => {
      const b = x.breakdown[k];
      return `${pct(b.jobs / x.jobs_measured, 1)}×${b.jobs ? (b.executions / b.jobs).toFixed(2) : '–'}`;
    };
    table.push([
      x.scenario,
      x.load >= 1 ? 'saturated' : x.load,
      `${x.trust_after} / ${x.min_audit}`,
      `${x.cpu_overhead.toFixed(3)}× (${x.honest_cpu_overhead.toFixed(3)}×)`,
      `${pct(x.wrong_accepted_share, 4)} (${x.wrong_accepted_solo} alone, ${x.wrong_accepted_quorum} by quorum)`,
      pct(x.failed_share, 3),
      pct(x.caught_share, 1),
      pct(x.solo_share, 1),
      `${pct(x.trusted_honest_mean / x.honest_providers, 1)} / ${x.trusted_cheaters_mean.toFixed(1)}`,
      x.bootstrap_steps === null ? 'never' : `${x.bootstrap_steps} (${x.bootstrap_jobs})`,
      `${per('solo')} · ${per('audited')} · ${per('untrusted')}`,
    ]);
  }
  console.log(table.toString());
  const isDefault = (x: Result) =>
    x.trust_after === DEFAULT_TRUST.trustAfter && x.min_audit === DEFAULT_TRUST.minAudit;
  for (const x of results.filter((y) => y.scenario === 'main' && isDefault(y))) {
    console.log(
      `main, load ${x.load >= 1 ? 'saturated' : x.load}: CPU overhead ${x.cpu_overhead.toFixed(3)}× ` +
        `(target ≤ ${TARGET_OVERHEAD}×: ${x.cpu_overhead <= TARGET_OVERHEAD ? 'met' : 'NOT met'}), wrong accepted ` +
        `${pct(x.wrong_accepted_share, 4)} (target ≤ ${pct(TARGET_WRONG, 1)}: ${x.wrong_accepted_share <= TARGET_WRONG ? 'met' : 'NOT met'})`,
    );
  }
  const out = new URL(`./results/${file}`, import.meta.url);
  writeFileSync(
    out,
    `${JSON.stringify(
      {
        benchmark: 'verify',
        at: new Date().toISOString(),
        node: process.versions.node,
        cpu,
        seconds,
        setup: { ...base, terms: TERMS, stake: STAKE, default_trust: DEFAULT_TRUST },
        target: { cpu_overhead: TARGET_OVERHEAD, wrong_accepted_share: TARGET_WRONG },
        results,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`wrote ${out.pathname.split('/').slice(-3).join('/')} (${seconds.toFixed(1)} s)`);
}
