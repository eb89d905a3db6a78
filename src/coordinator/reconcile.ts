import type { JobRecord } from '../models/job-record.ts';
import type { StudyRecord } from '../models/study-record.ts';

/**
 * The reconciler, in the style of Nomad's: a pure function from a snapshot of the records, what the workers last
 * said and the clock, to the actions that bring the records back in line with the world. It decides; the dispatcher
 * applies. Being level-triggered, it heals whatever a crash left between a decision and its effect.
 */

/** What the registry knows of a worker that has been heard from. */
export interface WorkerLiveness {
  worker_id: string;
  /** When its last heartbeat was handled (coordinator clock). */
  seen_at: number;
  interval_ms: number;
  /** `<job_id>#<attempt>` of every execution it says it runs. */
  running: ReadonlySet<string>;
}

export interface ReconcileInput {
  now: number;
  /** Jobs with live executions. */
  assigned: Iterable<JobRecord>;
  /** Queued jobs (those with a queue deadline can expire). */
  queued: Iterable<JobRecord>;
  /** Studies not yet closed (no summary) whose jobs are all terminal. */
  settled: Iterable<StudyRecord>;
  workers: ReadonlyMap<string, WorkerLiveness>;
  /**
   * Liveness is judged only from here on: the coordinator's start (it has not heard anyone yet) or the end of a
   * pause of its own (heartbeats it could not handle are not the workers' fault).
   */
  liveness_from: number;
  missed_heartbeats: number;
  /** Executions missing from their live worker's adverts, since when (kept between rounds; see the output). */
  absent_since: ReadonlyMap<string, number>;
  /** Jobs being dispatched right now: left alone this round. */
  inflight: ReadonlySet<string>;
}

export type Action =
  | {
      kind: 'reclaim';
      job_id: string;
      attempt: number;
      worker_id: string;
      ended: 'worker-lost' | 'lease-expired';
      reason: string;
    }
  | { kind: 'expire'; job_id: string }
  | { kind: 'close'; study_id: string }
  /** A public-goods execution that gives way (its provider's window closed; see preempt.ts). */
  | { kind: 'preempt'; job_id: string; attempt: number; worker_id: string; reason: string };

export interface ReconcileOutput {
  actions: Action[];
  absent_since: Map<string, number>;
}

/** How long a worker may stay silent before it is lost. */
export const lossWindowMs = (intervalMs: number, missed: number) => intervalMs * missed + 250;

export const executionKey = (jobId: string, attempt: number) => `${jobId}#${attempt}`;

/** Unknown workers are judged with this interval (the default heartbeat). */
const DEFAULT_INTERVAL_MS = 1000;

export function reconcile(input: ReconcileInput): ReconcileOutput {
  const { now } = input;
  const actions: Action[] = [];
  const absent = new Map<string, number>();
  const judging = (windowMs: number) => now - input.liveness_from > windowMs;

  for (const rec of input.assigned) {
    const jobId = rec.job.job_id;
    if (input.inflight.has(jobId)) continue;
    for (const e of rec.executions) {
      if (e.ended !== null) continue;
      const key = executionKey(jobId, e.attempt);
      const reclaim = (ended: 'worker-lost' | 'lease-expired', reason: string) =>
        actions.push({
          kind: 'reclaim',
          job_id: jobId,
          attempt: e.attempt,
          worker_id: e.worker_id,
          ended,
          reason,
        });
      const w = input.workers.get(e.worker_id);
      const window = lossWindowMs(w?.interval_ms ?? DEFAULT_INTERVAL_MS, input.missed_heartbeats);
      if (!w) {
        if (judging(window)) reclaim('worker-lost', `no heartbeat from ${e.worker_id}`);
        continue;
      }
      if (now - w.seen_at > window && judging(window)) {
        reclaim('worker-lost', `no heartbeat from ${e.worker_id}`);
        continue;
      }
      if (now > e.lease_until) {
        reclaim('lease-expired', 'lease expired before a result arrived');
        continue;
      }
      // The worker's adverts leave it out (neither running nor reported as stored): the request never reached it (a
      // crash between recording and sending), or the worker restarted. Only adverts sent well after the assignment
      // count, and the absence must last several heartbeats.
      if (w.seen_at < e.assigned_at + w.interval_ms + 500 || w.running.has(key)) continue;
      const since = input.absent_since.get(key) ?? w.seen_at;
      if (now - since >= input.missed_heartbeats * w.interval_ms + 1000) {
        reclaim('worker-lost', `${e.worker_id} does not run it (assignment lost)`);
      } else absent.set(key, since);
    }
  }
  for (const rec of input.queued) {
    if (rec.queue_deadline !== null && now >= rec.queue_deadline && !input.inflight.has(rec.job.job_id)) {
      actions.push({ kind: 'expire', job_id: rec.job.job_id });
    }
  }
  for (const study of input.settled) {
    if (study.summary === null) actions.push({ kind: 'close', study_id: study.study_id });
  }
  return { actions, absent_since: absent };
}
