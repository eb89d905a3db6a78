import type { ExecutionRef } from '../models/api.ts';
import type { JobRecord } from '../models/job-record.ts';
import type { Placement } from './placement.ts';

/**
 * Preemption, pure: which public-goods executions give way, to paid work that needs their slot or to the end of
 * their provider's off-peak window. The dispatcher ends them as `preempted` (no attempt used, nothing paid, the job
 * back in the queue) and the worker stops their container or process.
 */

/** A live public-goods execution: what paid work may take the slot of. */
export interface Preemptible {
  job_id: string;
  attempt: number;
  worker_id: string;
  assigned_at: number;
}

/** The live executions of public-goods jobs, less those `skip` names (`<job_id>#<attempt>`: already being stopped). */
export function preemptibleOf(
  records: Iterable<JobRecord>,
  skip: (key: string) => boolean = () => false,
): Preemptible[] {
  const out: Preemptible[] = [];
  for (const rec of records) {
    if (!rec.public_good) continue;
    for (const e of rec.executions) {
      if (e.ended !== null || skip(`${rec.job.job_id}#${e.attempt}`)) continue;
      out.push({
        job_id: rec.job.job_id,
        attempt: e.attempt,
        worker_id: e.worker_id,
        assigned_at: e.assigned_at,
      });
    }
  }
  return out;
}

/** Public-goods executions per worker, youngest first: the one that started last has the least work to lose. */
export function byWorkerYoungestFirst(preemptible: readonly Preemptible[]): Map<string, Preemptible[]> {
  const out = new Map<string, Preemptible[]>();
  for (const p of preemptible) {
    const list = out.get(p.worker_id);
    if (list) list.push(p);
    else out.set(p.worker_id, [p]);
  }
  for (const list of out.values())
    list.sort(
      (a, b) => b.assigned_at - a.assigned_at || (a.job_id < b.job_id ? 1 : a.job_id > b.job_id ? -1 : 0),
    );
  return out;
}

/**
 * Gives each placement on a worker the victim whose slot it takes there, youngest first. Placements made on a
 * worker's preemptible slots never outnumber them; one left without a victim (a caller's mistake) is dropped rather
 * than sent to a worker with no room for it.
 */
export function chooseVictims(
  placements: readonly Placement[],
  preemptible: readonly Preemptible[],
): Placement[] {
  const pool = byWorkerYoungestFirst(preemptible);
  const out: Placement[] = [];
  for (const p of placements) {
    const victim = pool.get(p.worker_id)?.shift();
    if (!victim) continue;
    const ref: ExecutionRef = { job_id: victim.job_id, attempt: victim.attempt };
    out.push({ ...p, preempts: [ref] });
  }
  return out;
}

/** What the scheduler knows of a worker's window when it is not open: how long ago it closed (null: it has none). */
export type ClosedFor = ReadonlyMap<string, number | null>;

/**
 * Public-goods executions whose provider's window has been closed for longer than `graceMs` (they were given that
 * long to finish). `closed` holds the workers whose window is not open; an execution on a worker without any window
 * (placed under another policy) is given the grace from its own start.
 */
export function windowClosures(
  preemptible: readonly Preemptible[],
  closed: ClosedFor,
  now: number,
  graceMs: number,
): Preemptible[] {
  return preemptible.filter((p) => {
    if (!closed.has(p.worker_id)) return false;
    const since = closed.get(p.worker_id);
    return since === null || since === undefined ? now - p.assigned_at > graceMs : since > graceMs;
  });
}
