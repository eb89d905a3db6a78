import type { ResourceLimits } from '../models/job.ts';

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
  /** Workers that run a live execution of this job: replicas go to distinct workers. */
  exclude: readonly string[];
}

export interface Placement {
  job_id: string;
  worker_id: string;
}

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
  if (job.exclude.includes(w.worker_id)) return 'already runs this job';
  if (w.slots_free < 1) return 'no free slot';
  if (w.memory_mb < job.limits.memory_mb) return `needs ${job.limits.memory_mb} MiB, has ${w.memory_mb}`;
  if (w.cpus < job.limits.cpus) return `needs ${job.limits.cpus} CPUs, has ${w.cpus}`;
  // Without a registry a Docker worker can only run images it already holds.
  if (w.executor === 'docker' && !w.images.includes(job.image)) return 'image not present';
  return undefined;
}

/** Higher is better: cheaper, emptier, not a worker that failed this job before. */
export function rank(job: PendingJob, w: WorkerView): number {
  const load = w.slots > 0 ? 1 - w.slots_free / w.slots : 1;
  const avoid = job.avoid.includes(w.worker_id) ? 1000 : 0;
  return -avoid - 10 * w.price_per_cpu_s - load;
}

/** Assigns as many due jobs as capacity allows, highest priority and oldest first. */
export function place(jobs: readonly PendingJob[], workers: readonly WorkerView[], now: number): Placement[] {
  const pool = workers.map((w) => ({ ...w }));
  const due = jobs
    .filter((j) => j.not_before <= now)
    .sort(
      (a, b) => b.priority - a.priority || a.enqueued_at - b.enqueued_at || (a.job_id < b.job_id ? -1 : 1),
    );
  const out: Placement[] = [];
  for (const job of due) {
    let best: (typeof pool)[number] | undefined;
    let bestScore = Number.NEGATIVE_INFINITY;
    for (const w of pool) {
      if (infeasible(job, w) !== undefined) continue;
      const s = rank(job, w);
      if (s > bestScore || (s === bestScore && best && w.worker_id < best.worker_id)) {
        best = w;
        bestScore = s;
      }
    }
    if (!best) continue;
    best.slots_free--;
    out.push({ job_id: job.job_id, worker_id: best.worker_id });
  }
  return out;
}
