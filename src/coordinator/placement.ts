import type { ResourceLimits } from '../models/job.ts';
import { payFor } from './pricing.ts';

/**
 * Placement in the style of Nomad's scheduler: feasibility checks, then ranking, then selection, each a small pure
 * step over a snapshot of workers and queued jobs. The IO shell (coordinator) takes the snapshot and acts on the
 * resulting assignments.
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
}

export interface Placement {
  job_id: string;
  worker_id: string;
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
  // Without a registry a Docker worker can only run images it already holds.
  if (w.executor === 'docker' && !w.images.includes(job.image)) return 'image not present';
  return undefined;
}

/**
 * Higher is better: a provider that anchors a newcomer's result when the job needs one (a Sybil's fresh keys then
 * cannot vote among themselves), a trusted one for a fresh adaptive job, not one that failed this job before, then
 * cheaper, then emptier.
 */
export function rank(job: PendingJob, w: WorkerView, needsEstablished = job.needs_established): number {
  const load = w.slots > 0 ? 1 - w.slots_free / w.slots : 1;
  const avoid = job.avoid.includes(w.worker_id) ? 1000 : 0;
  const anchor = needsEstablished && w.established ? 100 : 0;
  // A trusted provider may run a fresh adaptive job alone: one execution instead of two.
  const solo = job.adaptive && w.trusted ? 50 : 0;
  return anchor + solo - avoid - 10 * w.price_per_cpu_s - load;
}

/**
 * Assigns as many due executions as capacity and funds allow, highest priority and oldest job first, each replica of
 * a job on a distinct worker. A fresh adaptive job whose first pick is trusted runs there alone unless the draw
 * (`rand`, injected) audits it. `funds` is drawn down as executions are placed; a job its study cannot pay for waits.
 */
export function place(
  jobs: readonly PendingJob[],
  workers: readonly WorkerView[],
  now: number,
  funds: Funds = new Map(),
  rand: () => number = Math.random,
  /** Collects the studies that had an execution wait for funds. */
  short?: Set<string>,
  /**
   * Whether anyone has earned trust, online or not (default: one of these workers has). From stored reputations, so
   * established providers being away or not yet heard from after a restart does not lift the cap on newcomers.
   */
  anchored: boolean = workers.some((w) => w.established),
): Placement[] {
  const pool = workers.map((w) => ({ ...w }));
  const due = jobs
    .filter((j) => j.not_before <= now && j.want > 0)
    .sort(
      (a, b) => b.priority - a.priority || a.enqueued_at - b.enqueued_at || (a.job_id < b.job_id ? -1 : 1),
    );
  // Once anyone has earned trust, providers who have not can never make a quorum by themselves: a replicated job
  // holds at most quorum − 1 of their executions, and waits for an established provider for the rest.
  const anyEstablished = anchored;
  // Free slots left, in all and on established providers: once none is left for a job, no worker is scanned for it.
  let freeSlots = pool.reduce((n, w) => n + (w.draining ? 0 : w.slots_free), 0);
  let freeEstablished = pool.reduce((n, w) => n + (w.established && !w.draining ? w.slots_free : 0), 0);
  const out: Placement[] = [];
  for (const job of due) {
    if (freeSlots <= 0) break;
    const taken = new Set(job.exclude);
    let needsEstablished = job.needs_established;
    let newcomers = job.newcomers;
    for (let k = 0; k < job.want; k++) {
      const capped = anyEstablished && job.quorum >= 2 && newcomers >= job.quorum - 1;
      if (capped && freeEstablished <= 0) break;
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
      if (!best) break;
      const pay = job.max_price === null ? 0 : payFor(job.work, best.price_per_cpu_s);
      const left = funds.get(job.study_id);
      if (pay > 0 && (left === undefined || left < pay)) {
        short?.add(job.study_id);
        break;
      }
      if (pay > 0) funds.set(job.study_id, left! - pay);
      best.slots_free--;
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
  return out;
}
