import type { Job } from '../models/job.ts';
import {
  type AttemptEnd,
  type Execution,
  type JobRecord,
  MAX_ENDED_EXECUTIONS,
} from '../models/job-record.ts';

/**
 * The job state machine, pure: every transition takes a record and the time and returns the next record (or the same
 * object when nothing changes, which the store then does not write).
 */

/** Ends that are nobody's fault: they do not count toward max attempts; only repeated ones back off. */
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

/** Free ends in a row back off from the second on (so a first decline requeues at once), up to this. */
const FREE_BACKOFF_BASE_MS = 100;
const FREE_BACKOFF_MAX_MS = 10_000;

export function backoffMs(
  failures: number,
  policy: Pick<RetryPolicy, 'backoffBaseMs' | 'backoffMaxMs'>,
): number {
  return failures <= 0 ? 0 : Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** (failures - 1));
}

export const isTerminal = (rec: JobRecord) =>
  rec.status === 'done' || rec.status === 'failed' || rec.status === 'cancelled';

export const liveExecutions = (rec: JobRecord): Execution[] => rec.executions.filter((e) => e.ended === null);

export function newJobRecord(job: Job, now: number, policy: RetryPolicy): JobRecord {
  return {
    job,
    status: 'queued',
    attempts: 0,
    max_attempts: policy.maxAttempts,
    failures: 0,
    free_ends: 0,
    not_before: now,
    queue_deadline: policy.queueTimeoutMs === null ? null : now + policy.queueTimeoutMs,
    enqueued_at: now,
    executions: [],
    result: null,
    reason: null,
    updated_at: now,
  };
}

/** Keeps every live execution and the most recent ended ones. */
function bounded(executions: Execution[]): Execution[] {
  const ended = executions.filter((e) => e.ended !== null);
  if (ended.length <= MAX_ENDED_EXECUTIONS) return executions;
  const drop = new Set(ended.slice(0, ended.length - MAX_ENDED_EXECUTIONS));
  return executions.filter((e) => !drop.has(e));
}

/** queued → assigned: a new execution on a worker, leased until `now + leaseMs`. Anything else is unchanged. */
export function startExecution(rec: JobRecord, workerId: string, now: number, leaseMs: number): JobRecord {
  if (rec.status !== 'queued') return rec;
  const execution: Execution = {
    attempt: rec.attempts + 1,
    worker_id: workerId,
    assigned_at: now,
    lease_until: now + leaseMs,
    output_digest: null,
    seq: null,
    ended: null,
    reason: null,
    ended_at: null,
  };
  return {
    ...rec,
    status: 'assigned',
    attempts: execution.attempt,
    executions: [...rec.executions, execution],
    queue_deadline: null,
    updated_at: now,
  };
}

/** The live execution a result or failure report is about, if it is still live (anything else is stale). */
export function liveExecution(rec: JobRecord, attempt: number, workerId: string): Execution | undefined {
  if (isTerminal(rec)) return undefined;
  return rec.executions.find((e) => e.attempt === attempt && e.worker_id === workerId && e.ended === null);
}

function endedAs(
  e: Execution,
  ended: Execution['ended'],
  reason: string | null,
  now: number,
  extra: Partial<Execution> = {},
): Execution {
  return { ...e, ...extra, ended, reason, ended_at: now };
}

/** assigned → done with the result of one of its live executions. */
export function accept(
  rec: JobRecord,
  attempt: number,
  workerId: string,
  result: { seq: number; output_digest: string },
  now: number,
): JobRecord {
  if (!liveExecution(rec, attempt, workerId)) return rec;
  return {
    ...rec,
    status: 'done',
    executions: rec.executions.map((e) => (e.attempt === attempt ? endedAs(e, 'ok', null, now, result) : e)),
    result: { seq: result.seq, attempt, worker_id: workerId, output_digest: result.output_digest },
    updated_at: now,
  };
}

export interface EndOptions {
  /** Whether the end counts toward max attempts (default: unless declined or cancelled). */
  counted?: boolean;
  /** The claimed output digest and stream position of a rejected result, kept for the record. */
  output_digest?: string | null;
  seq?: number | null;
}

/**
 * Ends one live execution without an accepted result. Once none is live the job goes back to the queue (with
 * backoff) or fails. Ends that are nobody's fault (a decline, a hand-back on drain) requeue at once the first time
 * and do not use up an attempt; repeated ones back off, so nothing can bounce a job in a tight loop.
 */
export function endExecution(
  rec: JobRecord,
  attempt: number,
  workerId: string,
  ended: AttemptEnd,
  reason: string | null,
  now: number,
  policy: RetryPolicy,
  options: EndOptions = {},
): JobRecord {
  if (!liveExecution(rec, attempt, workerId)) return rec;
  const counted = options.counted ?? !FREE_ENDS.has(ended);
  const extra: Partial<Execution> = {};
  if (options.output_digest !== undefined) extra.output_digest = options.output_digest;
  if (options.seq !== undefined) extra.seq = options.seq;
  const executions = bounded(
    rec.executions.map((e) => (e.attempt === attempt ? endedAs(e, ended, reason, now, extra) : e)),
  );
  const failures = rec.failures + (counted ? 1 : 0);
  const free_ends = counted ? 0 : rec.free_ends + 1;
  const next: JobRecord = { ...rec, executions, failures, free_ends, updated_at: now };
  if (executions.some((e) => e.ended === null)) return next;
  if (failures >= rec.max_attempts) return { ...next, status: 'failed' };
  const delay = counted
    ? backoffMs(failures, policy)
    : backoffMs(free_ends - 1, { backoffBaseMs: FREE_BACKOFF_BASE_MS, backoffMaxMs: FREE_BACKOFF_MAX_MS });
  return {
    ...next,
    status: 'queued',
    not_before: now + delay,
    queue_deadline: policy.queueTimeoutMs === null ? null : now + policy.queueTimeoutMs,
  };
}

/** Any live state → cancelled, ending its live executions. */
export function cancel(rec: JobRecord, now: number, reason = 'cancelled by the submitter'): JobRecord {
  if (isTerminal(rec)) return rec;
  return {
    ...rec,
    status: 'cancelled',
    executions: rec.executions.map((e) => (e.ended === null ? endedAs(e, 'cancelled', reason, now) : e)),
    reason,
    updated_at: now,
  };
}

/** queued past its queue deadline → failed with the reason recorded. */
export function expireQueued(rec: JobRecord, now: number): JobRecord {
  if (rec.status !== 'queued' || rec.queue_deadline === null || now < rec.queue_deadline) return rec;
  return { ...rec, status: 'failed', reason: 'queue timeout: no worker could take it', updated_at: now };
}

/** Workers whose executions of this job failed: placement steers retries elsewhere. */
export function workersToAvoid(rec: JobRecord): string[] {
  return [
    ...new Set(
      rec.executions
        .filter((e) => e.ended !== null && e.ended !== 'ok' && !FREE_ENDS.has(e.ended))
        .map((e) => e.worker_id),
    ),
  ];
}

/** One line per ended execution (and the record's own reason): what a user reads about a failed job. */
export function failureReasons(rec: JobRecord): string[] {
  const lines = rec.executions
    .filter((e) => e.ended !== null && e.ended !== 'ok')
    .map((e) => `attempt ${e.attempt}: ${e.ended}${e.reason ? ` (${e.reason})` : ''}`);
  if (rec.reason) lines.push(rec.reason);
  return lines;
}
