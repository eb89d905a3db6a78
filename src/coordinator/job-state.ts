import type { z } from 'zod';
import type { Job } from '../models/job.ts';
import type { AcceptedResult, AttemptEnd, JobRecord } from '../models/job-record.ts';

/** Ends that are not the job's fault: they neither count toward max attempts nor back off. */
const FREE_ENDS: ReadonlySet<AttemptEnd> = new Set(['declined', 'cancelled']);

export interface RetryPolicy {
  maxAttempts: number;
  /** Backoff before attempt n+1 is base·2^(n−1), capped. */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** A queued job that cannot be placed within this time fails (null: wait forever). */
  queueTimeoutMs: number | null;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 3,
  backoffBaseMs: 500,
  backoffMaxMs: 30_000,
  queueTimeoutMs: null,
};

export function backoffMs(failures: number, policy: RetryPolicy): number {
  return failures <= 0 ? 0 : Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** (failures - 1));
}

export function countedFailures(rec: JobRecord): number {
  return rec.history.filter((h) => !FREE_ENDS.has(h.ended)).length;
}

export const isTerminal = (rec: JobRecord) =>
  rec.status === 'done' || rec.status === 'failed' || rec.status === 'cancelled';

export function newJobRecord(job: Job, now: number, policy: RetryPolicy): JobRecord {
  return {
    job,
    status: 'queued',
    attempt: 0,
    max_attempts: policy.maxAttempts,
    worker_id: null,
    lease_until: null,
    not_before: now,
    queue_deadline: policy.queueTimeoutMs === null ? null : now + policy.queueTimeoutMs,
    enqueued_at: now,
    history: [],
    result: null,
    updated_at: now,
  };
}

/** queued → assigned: a new attempt on a worker, leased until `now + leaseMs`. */
export function assign(rec: JobRecord, workerId: string, now: number, leaseMs: number): JobRecord {
  if (rec.status !== 'queued') throw new Error(`job ${rec.job.job_id} is ${rec.status}, not queued`);
  return {
    ...rec,
    status: 'assigned',
    attempt: rec.attempt + 1,
    worker_id: workerId,
    lease_until: now + leaseMs,
    queue_deadline: null,
    updated_at: now,
  };
}

/** Whether a result or failure report is about the attempt now running (anything else is stale). */
export function isCurrentAttempt(rec: JobRecord, attempt: number, workerId: string): boolean {
  return rec.status === 'assigned' && rec.attempt === attempt && rec.worker_id === workerId;
}

/** assigned → done with the accepted result. */
export function accept(rec: JobRecord, result: z.infer<typeof AcceptedResult>, now: number): JobRecord {
  return { ...rec, status: 'done', lease_until: null, result, updated_at: now };
}

/**
 * assigned → queued (with backoff) or failed: the running attempt ended without an accepted result. Ends that are
 * not the job's fault (a decline, a hand-back on drain) requeue at once and do not use up an attempt.
 */
export function endAttempt(
  rec: JobRecord,
  ended: AttemptEnd,
  reason: string | null,
  now: number,
  policy: RetryPolicy,
): JobRecord {
  const history = [
    ...rec.history,
    { attempt: rec.attempt, worker_id: rec.worker_id ?? '', ended, reason, at: now },
  ];
  const next: JobRecord = { ...rec, history, worker_id: null, lease_until: null, updated_at: now };
  const failures = countedFailures(next);
  if (failures >= rec.max_attempts) return { ...next, status: 'failed' };
  const free = FREE_ENDS.has(ended);
  return {
    ...next,
    status: 'queued',
    not_before: now + (free ? 0 : backoffMs(failures, policy)),
    queue_deadline: policy.queueTimeoutMs === null ? null : now + policy.queueTimeoutMs,
  };
}

/** Any live state → cancelled. */
export function cancel(rec: JobRecord, now: number): JobRecord {
  return isTerminal(rec) ? rec : { ...rec, status: 'cancelled', lease_until: null, updated_at: now };
}

/** queued past its queue deadline → failed with the reason recorded. */
export function expireQueued(rec: JobRecord, now: number): JobRecord | undefined {
  if (rec.status !== 'queued' || rec.queue_deadline === null || now < rec.queue_deadline) return undefined;
  return {
    ...rec,
    status: 'failed',
    history: [
      ...rec.history,
      {
        attempt: rec.attempt,
        worker_id: '',
        ended: 'rejected',
        reason: 'queue timeout: no worker could take it',
        at: now,
      },
    ],
    updated_at: now,
  };
}

/** Workers whose attempts at this job failed: placement steers retries elsewhere. */
export function workersToAvoid(rec: JobRecord): string[] {
  return [...new Set(rec.history.filter((h) => !FREE_ENDS.has(h.ended)).map((h) => h.worker_id))];
}
