import type { ExecutionRef } from '../models/api.ts';
import type { ResourceLimits } from '../models/job.ts';
import { CandidateSearch, candidateLimit, seededDraw } from './candidates.ts';
import { payFor } from './pricing.ts';
import { WorkerIndex } from './worker-index.ts';

/**
 * Placement in the style of Nomad's scheduler: feasibility checks, then ranking, then selection, each a small pure
 * step over a snapshot of workers and queued jobs. The IO shell (coordinator) takes the snapshot and acts on the
 * resulting assignments. In a large cluster an execution ranks a bounded number of feasible workers drawn at random
 * (candidates.ts, over worker-index.ts) rather than every worker, and a round stops at its budget.
 */

export interface WorkerView {
  worker_id: string;
  executor: 'docker' | 'process';
  slots_free: number;
  slots: number;
  cpus: number;
  memory_mb: number;
  images: readonly string[];
  price_per_cpu_s: number;
  draining: boolean;
  /** Has earned trust by its results: it anchors newcomers' results. */
  established: boolean;
  /** May run unreplicated work (established, with stake at risk). */
  trusted: boolean;
  /** The chance a trusted provider's job is replicated anyway. */
  audit: number;
  /** Outvoted too often (see reputation.ts `suspect`): given no work. */
  suspect?: boolean;
  /** Seconds left in its off-peak window, when public goods are placed by windows (undefined/null: unbounded). */
  window_left_s?: number | null;
}

export interface PendingJob {
  job_id: string;
  image: string;
  limits: ResourceLimits;
  priority: number;
  enqueued_at: number;
  not_before: number;
  /** Workers that already failed this job: used only when nothing else fits. */
  avoid: readonly string[];
  /** Workers that run this job or returned a result for it: replicas go to distinct providers. */
  exclude: readonly string[];
  /** Executions to start (replicas still wanted). */
  want: number;
  /** A fresh job whose quorum may drop to 1 on a trusted provider (adaptive replication). */
  adaptive: boolean;
  /** Whether none of its executions so far is on an established provider: the next should be. */
  needs_established: boolean;
  /** Its quorum, and how many of its executions (live or with a result) are on providers not yet established. */
  quorum: number;
  newcomers: number;
  study_id: string;
  /** Estimated CPU-seconds of one execution, and the most it pays per CPU-second (null: nothing is paid). */
  work: number;
  max_price: number | null;
  /** Seconds a worker's off-peak window must stay open for it (public goods: its estimated work; paid work: 0). */
  window_s: number;
}

export interface Placement {
  job_id: string;
  worker_id: string;
  /** Public-goods executions on the worker it stops to take their slot (see preempt.ts). */
  preempts?: readonly ExecutionRef[];
  /** What the execution is paid if valid (µSIM). */
  pay: number;
  /** Runs alone on a trusted provider: its result decides without a replica. */
  unreplicated: boolean;
}

/** What each study can still spend (µSIM): an execution is placed only if its study can pay for it. */
export type Funds = Map<string, number>;

/**
 * The slots of a worker worth filling now. A worker with many slots is a queue in front of its executors: topping it
 * up one job at a time, as each result comes back, costs a request and its answer per job, so it is topped up once
 * an eighth of its slots is free — it still holds the other seven eighths, so it never runs dry waiting.
 */
export function fillableSlots(slots: number, free: number): number {
  return free >= Math.max(1, Math.floor(slots / 8)) ? free : 0;
}

/** Why a worker cannot take a job, or undefined when it can. */
export function infeasible(job: PendingJob, w: WorkerView): string | undefined {
  if (w.draining) return 'draining';
  if (w.suspect) return 'outvoted too often';
  if (job.exclude.includes(w.worker_id)) return 'already ran this job';
  if (job.max_price !== null && w.price_per_cpu_s > job.max_price)
    return `asks ${w.price_per_cpu_s} SIM/CPU-s, the study pays at most ${job.max_price}`;
  if (w.slots_free < 1) return 'no free slot';
  if (w.memory_mb < job.limits.memory_mb) return `needs ${job.limits.memory_mb} MiB, has ${w.memory_mb}`;
  if (w.cpus < job.limits.cpus) return `needs ${job.limits.cpus} CPUs, has ${w.cpus}`;
  if ((w.window_left_s ?? Number.POSITIVE_INFINITY) < job.window_s)
    return `its off-peak window closes in ${Math.round(w.window_left_s!)} s, the job needs ${Math.ceil(job.window_s)} s`;
  // Without a registry a Docker worker can only run images it already holds.
  if (w.executor === 'docker' && !w.images.includes(job.image)) return 'image not present';
  return undefined;
}

/**
 * What a provider's standing adds to its rank for this job: it anchors a newcomer's result when the job needs one (a
 * Sybil's fresh keys then cannot vote among themselves), and a trusted provider may run a fresh adaptive job alone
 * (one execution instead of two).
 */
export function tierBonus(
  job: PendingJob,
  established: boolean,
  trusted: boolean,
  needsEstablished = job.needs_established,
): number {
  return (needsEstablished && established ? 100 : 0) + (job.adaptive && trusted ? 50 : 0);
}

/**
 * Higher is better: the provider's tier (`tierBonus`), not one that failed this job before, then cheaper, then
 * emptier. `slotsFree`: what is left of the worker's slots as a round fills them.
 */
export function rank(
  job: PendingJob,
  w: WorkerView,
  needsEstablished = job.needs_established,
  slotsFree = w.slots_free,
): number {
  const load = w.slots > 0 ? 1 - slotsFree / w.slots : 1;
  const avoid = job.avoid.includes(w.worker_id) ? 1000 : 0;
  return tierBonus(job, w.established, w.trusted, needsEstablished) - avoid - 10 * w.price_per_cpu_s - load;
}

/** What one round may do, so that a long queue never holds the event loop (heartbeats, results) for long. */
export interface RoundBudget {
  /** Executions placed. */
  placements: number;
  /** Workers examined: a full scan examines every worker per execution, a bounded search a few. */
  probes: number;
}

export const UNBOUNDED: RoundBudget = {
  placements: Number.POSITIVE_INFINITY,
  probes: Number.POSITIVE_INFINITY,
};

/**
 * Up to this many workers per candidate (`candidateLimit`), every worker is ranked: a cluster of up to 112
 * workers places exactly as a full scan does, with no draw at all.
 */
export const SCAN_ALL_PER_CANDIDATE = 8;

export interface RoundInput {
  jobs: readonly PendingJob[];
  workers: readonly WorkerView[];
  now: number;
  /** What each study can still spend; drawn down as executions are placed. */
  funds?: Funds;
  /** The draw that decides whether a trusted provider's job is audited. */
  rand?: () => number;
  /** Collects the studies that had an execution wait for funds. */
  short?: Set<string>;
  /**
   * Whether anyone has earned trust, online or not (default: one of these workers has). From stored reputations, so
   * established providers being away or not yet heard from after a restart does not lift the cap on newcomers.
   */
  anchored?: boolean;
  /**
   * Workers ranked per execution: 'all' ranks every feasible worker (a full scan); a number ranks that many drawn at
   * random from the feasible ones. Default: all in a small cluster, else `candidateLimit` of the workers.
   */
  candidates?: number | 'all';
  /** Uniform draws in [0, 1) that order the candidates (default: seeded by `now`, so a round is reproducible). */
  shuffle?: () => number;
  budget?: RoundBudget;
}

export interface Round {
  placements: Placement[];
  /** Workers examined. */
  probes: number;
  /** The budget ran out with executions still to try: the rest is the next round's. */
  stopped: boolean;
  /** What `candidates` resolved to. */
  candidates: number | 'all';
}

/**
 * Finds the worker for a job's next execution and takes its slot: by a full scan or a bounded search. `taken`: the
 * job's `exclude` and the workers this round gave it (a bounded search keeps the latter itself, by position).
 */
interface Picker {
  probes: number;
  pick(
    job: PendingJob,
    needsEstablished: boolean,
    capped: boolean,
    taken: ReadonlySet<string>,
  ): WorkerView | undefined;
  take(w: WorkerView): void;
}

/** Ranks every worker for every execution: exact, and linear in the workers. */
function fullScan(workers: readonly WorkerView[]): Picker {
  const pool = workers.map((w) => ({ ...w }));
  return {
    probes: 0,
    pick(job, needsEstablished, capped, taken) {
      this.probes += pool.length;
      let best: (typeof pool)[number] | undefined;
      let bestScore = Number.NEGATIVE_INFINITY;
      for (const w of pool) {
        if (taken.has(w.worker_id) || (capped && !w.established) || infeasible(job, w) !== undefined)
          continue;
        const s = rank(job, w, needsEstablished);
        if (s > bestScore || (s === bestScore && best && w.worker_id < best.worker_id)) {
          best = w;
          bestScore = s;
        }
      }
      return best;
    },
    take(w) {
      w.slots_free--;
    },
  };
}

/** Ranks a bounded number of feasible workers, drawn from an index of those with a free slot. */
function boundedSearch(workers: readonly WorkerView[], limit: number, draw: () => number): Picker {
  const index = new WorkerIndex(workers);
  const search = new CandidateSearch(index, limit, draw);
  // The job being placed and the workers it got this round, by position: `taken` less its `exclude`.
  let current: PendingJob | undefined;
  const placed: number[] = [];
  let last: number | undefined;
  return {
    get probes() {
      return search.probes;
    },
    pick(job, needsEstablished, capped) {
      if (job !== current) {
        current = job;
        placed.length = 0;
      }
      last = search.pick(job, needsEstablished, capped, placed);
      return last === undefined ? undefined : workers[last];
    },
    take(w) {
      if (last === undefined || workers[last] !== w)
        throw new Error(`take(${w.worker_id}): not the worker just picked`);
      index.take(last);
      placed.push(last);
    },
  };
}

/**
 * Assigns as many due executions as capacity, funds and the budget allow, highest priority and oldest job first,
 * each replica of a job on a distinct worker. A fresh adaptive job whose first pick is trusted runs there alone
 * unless the draw (`rand`, injected) audits it. `funds` is drawn down as executions are placed; a job its study
 * cannot pay for waits.
 */
export function placeRound(input: RoundInput): Round {
  const { jobs, workers, now, funds = new Map(), rand = Math.random, short, budget = UNBOUNDED } = input;
  const n = workers.length;
  const candidates =
    input.candidates ?? (n <= SCAN_ALL_PER_CANDIDATE * candidateLimit(n) ? 'all' : candidateLimit(n));
  const picker =
    candidates === 'all'
      ? fullScan(workers)
      : boundedSearch(workers, Math.max(1, candidates), input.shuffle ?? seededDraw(now));
  const due = jobs
    .filter((j) => j.not_before <= now && j.want > 0)
    .sort(
      (a, b) => b.priority - a.priority || a.enqueued_at - b.enqueued_at || (a.job_id < b.job_id ? -1 : 1),
    );
  // Once anyone has earned trust, providers who have not can never make a quorum by themselves: a replicated job
  // holds at most quorum − 1 of their executions, and waits for an established provider for the rest.
  const anyEstablished = input.anchored ?? workers.some((w) => w.established);
  // Free slots left, in all and on established providers: once none is left for a job, no worker is looked at for it.
  // A suspect's slots are never used: counting them would only keep a round trying jobs that cannot be placed.
  const usable = (w: WorkerView) => (w.draining || w.suspect ? 0 : w.slots_free);
  let freeSlots = workers.reduce((s, w) => s + usable(w), 0);
  let freeEstablished = workers.reduce((s, w) => s + (w.established ? usable(w) : 0), 0);
  const out: Placement[] = [];
  // Stopped: the budget, not capacity, left an execution untried.
  let stopped = false;
  const spent = () => out.length >= budget.placements || picker.probes >= budget.probes;
  for (const job of due) {
    if (freeSlots <= 0) break;
    if (spent()) {
      stopped = true;
      break;
    }
    const taken = new Set(job.exclude);
    let needsEstablished = job.needs_established;
    let newcomers = job.newcomers;
    for (let k = 0; k < job.want; k++) {
      const capped = anyEstablished && job.quorum >= 2 && newcomers >= job.quorum - 1;
      if (capped && freeEstablished <= 0) break;
      if (spent()) {
        stopped = freeSlots > 0;
        break;
      }
      const best = picker.pick(job, needsEstablished, capped, taken);
      if (!best) break;
      const pay = job.max_price === null ? 0 : payFor(job.work, best.price_per_cpu_s);
      const left = funds.get(job.study_id);
      if (pay > 0 && (left === undefined || left < pay)) {
        short?.add(job.study_id);
        break;
      }
      if (pay > 0) funds.set(job.study_id, left! - pay);
      picker.take(best);
      freeSlots--;
      if (best.established) freeEstablished--;
      taken.add(best.worker_id);
      needsEstablished &&= !best.established;
      if (!best.established) newcomers++;
      const unreplicated = k === 0 && job.adaptive && best.trusted && rand() >= best.audit;
      out.push({ job_id: job.job_id, worker_id: best.worker_id, pay, unreplicated });
      if (unreplicated) break;
    }
  }
  return { placements: out, probes: picker.probes, stopped, candidates };
}

/**
 * `placeRound` with no budget, its options in order: the placements of one round. `rand` is the audit draw, `short`
 * collects the studies that had an execution wait for funds, `anchored` says whether anyone has earned trust.
 */
export function place(
  jobs: readonly PendingJob[],
  workers: readonly WorkerView[],
  now: number,
  funds: Funds = new Map(),
  rand: () => number = Math.random,
  short?: Set<string>,
  anchored: boolean = workers.some((w) => w.established),
): Placement[] {
  return placeRound({ jobs, workers, now, funds, rand, short, anchored }).placements;
}
