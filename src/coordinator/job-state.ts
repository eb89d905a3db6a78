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

/**
 * Ends that are nobody's fault: they do not count toward max attempts; only repeated ones back off. A preemption is
 * neither counted nor backed off (see `endExecution`).
 */
const FREE_ENDS: ReadonlySet<AttemptEnd> = new Set(['declined', 'cancelled', 'preempted']);

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

/** How a job's results are verified and what it may pay (from its study). */
export interface JobTerms {
  quorum: number;
  max_results: number;
  adaptive: boolean;
  max_price: number | null;
  /** A public-goods study's job (see JobRecord). */
  public_good?: boolean;
}

/** One unreplicated execution, nothing paid: how jobs ran before verification by replication. */
export const SINGLE: JobTerms = { quorum: 1, max_results: 1, adaptive: false, max_price: null };

/** When a job back in the queue times out: its study's queue timeout (kept on the record), else the coordinator's. */
function requeueDeadline(rec: JobRecord, now: number, policy: RetryPolicy): number | null {
  const timeout = rec.queue_timeout_ms ?? policy.queueTimeoutMs;
  return timeout === null ? null : now + timeout;
}

export function newJobRecord(
  job: Job,
  now: number,
  policy: RetryPolicy,
  terms: JobTerms = SINGLE,
): JobRecord {
  return {
    job,
    status: 'queued',
    attempts: 0,
    max_attempts: policy.maxAttempts,
    failures: 0,
    free_ends: 0,
    not_before: now,
    queue_deadline: policy.queueTimeoutMs === null ? null : now + policy.queueTimeoutMs,
    queue_timeout_ms: policy.queueTimeoutMs,
    enqueued_at: now,
    executions: [],
    quorum: terms.quorum,
    max_results: Math.max(terms.quorum, terms.max_results),
    adaptive: terms.adaptive,
    max_price: terms.max_price,
    public_good: terms.public_good ?? false,
    result: null,
    reason: null,
    updated_at: now,
  };
}

/**
 * Keeps every live execution, every result (their vote and payment hang on them; there are at most max_results),
 * and the most recent other ends.
 */
function bounded(executions: Execution[]): Execution[] {
  const dropable = executions.filter((e) => e.ended !== null && e.ended !== 'ok');
  if (dropable.length <= MAX_ENDED_EXECUTIONS) return executions;
  const drop = new Set(dropable.slice(0, dropable.length - MAX_ENDED_EXECUTIONS));
  return executions.filter((e) => !drop.has(e));
}

/** Sound results so far, grouped by output digest, largest group first (ties: the earlier result first). */
export function tally(rec: JobRecord): { digest: string; executions: Execution[] }[] {
  const groups = new Map<string, Execution[]>();
  for (const e of rec.executions) {
    if (e.ended !== 'ok' || e.output_digest === null) continue;
    const g = groups.get(e.output_digest);
    if (g) g.push(e);
    else groups.set(e.output_digest, [e]);
  }
  return [...groups]
    .map(([digest, executions]) => ({ digest, executions }))
    .sort(
      (a, b) =>
        b.executions.length - a.executions.length || a.executions[0]!.attempt - b.executions[0]!.attempt,
    );
}

const resultCount = (rec: JobRecord) => rec.executions.filter((e) => e.ended === 'ok').length;

/**
 * Executions a job still wants started: enough that, if they all agree with the largest group so far, a quorum is
 * reached — never more than its bound on results allows.
 */
export function wanted(rec: JobRecord): number {
  if (isTerminal(rec)) return 0;
  const live = liveExecutions(rec).length;
  const best = tally(rec)[0]?.executions.length ?? 0;
  return Math.max(0, Math.min(quorumOf(rec) - best - live, rec.max_results - resultCount(rec) - live));
}

/** The quorum that decides the job now: one while its only execution is a solo one, else its study's. */
export function quorumOf(rec: JobRecord): number {
  return rec.executions.some((e) => e.solo && (e.ended === null || e.ended === 'ok')) ? 1 : rec.quorum;
}

/** No execution of the job is running or has returned a result: adaptive replication may still run it alone. */
export const fresh = (rec: JobRecord): boolean => workersUsed(rec).length === 0;

/** Workers that may not run another execution of this job: one running it, or one whose result is in (distinct providers). */
export function workersUsed(rec: JobRecord): string[] {
  return [
    ...new Set(rec.executions.filter((e) => e.ended === null || e.ended === 'ok').map((e) => e.worker_id)),
  ];
}

export interface StartOptions {
  /** What its provider is paid if its result is valid (µSIM). */
  pay?: number;
  /** Adaptive replication: the first execution goes to a trusted provider, unaudited — its result alone decides. */
  unreplicated?: boolean;
}

/**
 * A new execution on a worker, leased until `now + leaseMs`, if the job wants one and the worker has none of it yet.
 * The job is `assigned` once it has all the executions it wants. Anything else is unchanged.
 */
export function startExecution(
  rec: JobRecord,
  workerId: string,
  now: number,
  leaseMs: number,
  options: StartOptions = {},
): JobRecord {
  if (rec.status !== 'queued' || workersUsed(rec).includes(workerId) || wanted(rec) < 1) return rec;
  const solo = options.unreplicated === true && rec.adaptive && fresh(rec);
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
    verdict: null,
    pay: options.pay ?? 0,
    solo,
  };
  const next: JobRecord = {
    ...rec,
    attempts: execution.attempt,
    executions: [...rec.executions, execution],
    queue_deadline: null,
    updated_at: now,
  };
  return wanted(next) > 0 ? next : { ...next, status: 'assigned' };
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

/**
 * Decides a job after one of its executions ended: accepted once a quorum of results from distinct providers agree
 * (the agreeing ones valid, the others invalid, any still running stopped unpaid); otherwise it waits for the ones
 * running, wants more (back in the queue after `delay`), or fails once its bound on results or failures is reached.
 */
function decide(rec: JobRecord, now: number, delay: number, policy: RetryPolicy): JobRecord {
  const groups = tally(rec);
  const top = groups[0];
  if (top && top.executions.length >= quorumOf(rec)) {
    const canonical = top.executions[0]!;
    return {
      ...rec,
      status: 'done',
      executions: rec.executions.map((e) => {
        if (e.ended === null) return endedAs(e, 'cancelled', 'quorum reached without it', now);
        if (e.ended !== 'ok') return e;
        return { ...e, verdict: e.output_digest === top.digest ? 'valid' : 'invalid' };
      }),
      result: {
        seq: canonical.seq!,
        attempt: canonical.attempt,
        worker_id: canonical.worker_id,
        output_digest: top.digest,
        agreed: top.executions.length,
      },
      updated_at: now,
    };
  }
  const live = liveExecutions(rec).length;
  const want = wanted(rec);
  if (live > 0) return { ...rec, status: want > 0 ? 'queued' : 'assigned' };
  if (resultCount(rec) >= rec.max_results) {
    const votes = groups.map((g) => `${g.digest.slice(0, 12)}×${g.executions.length}`).join(', ');
    return {
      ...rec,
      status: 'failed',
      reason: `no quorum of ${quorumOf(rec)} within ${rec.max_results} results: ${votes}`,
    };
  }
  if (rec.failures >= rec.max_attempts) return { ...rec, status: 'failed' };
  return {
    ...rec,
    status: 'queued',
    not_before: now + delay,
    queue_deadline: requeueDeadline(rec, now, policy),
  };
}

/** A sound result of one live execution: it ends `ok`, and the job is decided by the vote. */
export function report(
  rec: JobRecord,
  attempt: number,
  workerId: string,
  result: { seq: number; output_digest: string },
  now: number,
  policy: RetryPolicy,
): JobRecord {
  if (!liveExecution(rec, attempt, workerId)) return rec;
  const executions = rec.executions.map((e) =>
    e.attempt === attempt ? endedAs(e, 'ok', null, now, result) : e,
  );
  return decide({ ...rec, executions, free_ends: 0, updated_at: now }, now, 0, policy);
}

export interface EndOptions {
  /** Whether the end counts toward max attempts (default: unless declined or cancelled). */
  counted?: boolean;
  /** The claimed output digest and stream position of a rejected result, kept for the record. */
  output_digest?: string | null;
  seq?: number | null;
}

/**
 * Ends one live execution without a result. Once none is live the job goes back to the queue (with backoff) or
 * fails. Ends that are nobody's fault (a decline, a hand-back on drain) requeue at once the first time and do not
 * use up an attempt; repeated ones back off, so nothing can bounce a job in a tight loop.
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
  const extra: Partial<Execution> = {};
  if (options.output_digest !== undefined) extra.output_digest = options.output_digest;
  if (options.seq !== undefined) extra.seq = options.seq;
  const executions = bounded(
    rec.executions.map((e) => (e.attempt === attempt ? endedAs(e, ended, reason, now, extra) : e)),
  );
  if (ended === 'preempted') {
    // The scheduler's decision, not a bounce: the job waits for capacity the way it did before it was placed (public
    // goods go only where a slot is idle, so it cannot loop), with no attempt used and nothing to back off from.
    return decide({ ...rec, executions, updated_at: now }, now, 0, policy);
  }
  const counted = options.counted ?? !FREE_ENDS.has(ended);
  const failures = rec.failures + (counted ? 1 : 0);
  const free_ends = counted ? 0 : rec.free_ends + 1;
  const delay = counted
    ? backoffMs(failures, policy)
    : backoffMs(free_ends - 1, { backoffBaseMs: FREE_BACKOFF_BASE_MS, backoffMaxMs: FREE_BACKOFF_MAX_MS });
  return decide({ ...rec, executions, failures, free_ends, updated_at: now }, now, delay, policy);
}

/**
 * A done job whose result rested on a solo execution of a provider since found cheating: the vote is reopened under
 * its study's quorum. The solo result stays in the vote (and stays paid unless it is then outvoted).
 */
export function reverify(rec: JobRecord, now: number, policy: RetryPolicy): JobRecord {
  if (rec.status !== 'done' || !rec.executions.some((e) => e.solo && e.ended === 'ok') || rec.quorum < 2)
    return rec;
  return {
    ...rec,
    status: 'queued',
    max_results: Math.max(rec.max_results, rec.quorum + 1),
    // The solo result keeps its verdict until the vote says otherwise: a re-confirmation changes nothing (its
    // provider is not credited twice), an outvote turns it invalid.
    executions: rec.executions.map((e) => (e.solo ? { ...e, solo: false } : e)),
    result: null,
    not_before: now,
    queue_deadline: requeueDeadline(rec, now, policy),
    updated_at: now,
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

/**
 * One line per ended execution that was not accepted (and the record's own reason): what a user reads about a failed
 * job, down to each result's output digest when no quorum was reached.
 */
export function failureReasons(rec: JobRecord): string[] {
  const lines = rec.executions
    .filter((e) => e.ended !== null && e.verdict !== 'valid')
    .map((e) =>
      e.ended === 'ok'
        ? `attempt ${e.attempt} on ${e.worker_id}: output ${e.output_digest}${e.verdict === 'invalid' ? ' (outvoted)' : ''}`
        : `attempt ${e.attempt}: ${e.ended}${e.reason ? ` (${e.reason})` : ''}`,
    );
  if (rec.reason) lines.push(rec.reason);
  return lines;
}
