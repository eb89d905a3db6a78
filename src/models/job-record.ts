import { z } from 'zod';
import { ExecStatus } from './execution.ts';
import { Job } from './job.ts';

/** queued: needs an execution; assigned: its executions run; then one of the three ends. */
export const JobStatus = z.enum(['queued', 'assigned', 'done', 'failed', 'cancelled']);
export type JobStatus = z.infer<typeof JobStatus>;

/** Why an execution ended without an accepted result, beyond what the executor reports. */
export const AttemptEnd = z.union([
  ExecStatus,
  // preempted: stopped to give its slot to paid work, or when its provider's off-peak window closed (never its fault).
  z.enum(['lease-expired', 'worker-lost', 'declined', 'rejected', 'preempted']),
]);
export type AttemptEnd = z.infer<typeof AttemptEnd>;

/** How the vote over a job's outputs judged one execution's result. */
export const Verdict = z.enum(['valid', 'invalid']);
export type Verdict = z.infer<typeof Verdict>;

/**
 * One execution of a job on one worker (Bacalhau's word; "attempt" is its number). A job has many: one after
 * another when they fail, and — once replication lands — several at once on distinct providers.
 */
export const Execution = z.strictObject({
  /** The job's n-th execution (unique per job, never reused: a late result of an old one is stale). */
  attempt: z.number().int().min(1),
  worker_id: z.string(),
  assigned_at: z.number(),
  /** When it is reclaimed if no result has arrived. */
  lease_until: z.number(),
  /** The output digest its worker signed, once its result arrived. */
  output_digest: z.string().nullable(),
  /** Where its result sits in the RESULTS stream. */
  seq: z.number().int().min(1).nullable(),
  /** null while it runs; `ok` once a sound result arrived (whether it agrees with others is its verdict). */
  ended: z.union([z.literal('ok'), AttemptEnd]).nullable(),
  reason: z.string().nullable(),
  ended_at: z.number().nullable(),
  /**
   * For an `ok` execution: `valid` once its output is in the quorum that was accepted (it is paid), `invalid` when
   * the quorum agreed on another output (its provider is slashed), null while the vote is open.
   */
  verdict: Verdict.nullable().default(null),
  /** What its provider is paid if its result is valid, in µSIM: the job's estimated work at the price it was placed at. */
  pay: z.number().int().min(0).default(0),
  /** Runs alone on a trusted provider (adaptive replication): its result decides unless an audit reopens the job. */
  solo: z.boolean().default(false),
});
export type Execution = z.infer<typeof Execution>;

/** The accepted result of a job: which execution, and where its result sits in the RESULTS stream. */
export const AcceptedResult = z.strictObject({
  seq: z.number().int().min(1),
  attempt: z.number().int().min(1),
  worker_id: z.string(),
  output_digest: z.string(),
  /** How many executions on distinct providers agreed on it (1: an unreplicated result of a trusted provider). */
  agreed: z.number().int().min(1).default(1),
});
export type AcceptedResult = z.infer<typeof AcceptedResult>;

/** Ended executions a record keeps (live ones are always kept): a record stays small however often a job bounces. */
export const MAX_ENDED_EXECUTIONS = 16;

/**
 * A job's durable record, the single source of truth the coordinator resumes from. It is stored in two parts: the
 * job as submitted, with its study's others in one object (`jobspecs`, written once), and from its first transition
 * on its state (everything but `job`, KV `jobs`), so a transition writes a few hundred bytes rather than the job's
 * scenarios again.
 */
export const JobRecord = z.strictObject({
  job: Job,
  status: JobStatus,
  /** Executions started so far (the last attempt number). */
  attempts: z.number().int().min(0),
  max_attempts: z.number().int().min(1),
  /** Executions that ended by the job's or its worker's fault: they count toward max_attempts and back off. */
  failures: z.number().int().min(0),
  /** Ends in a row that were nobody's fault (declines, hand-backs): repeated ones back off too. */
  free_ends: z.number().int().min(0),
  /** Backoff: not to be placed before this time. */
  not_before: z.number(),
  /** Queue timeout: fail if still not placed by then. */
  queue_deadline: z.number().nullable(),
  /** The study's queue timeout, applied again each time the job goes back to the queue (null: the coordinator's). */
  queue_timeout_ms: z.number().nullable().default(null),
  enqueued_at: z.number(),
  executions: z.array(Execution),
  /** Agreeing results from distinct providers it takes to accept an output (its study's; a solo execution needs one). */
  quorum: z.number().int().min(1).default(1),
  /** Results (sound ones, agreeing or not) after which a job without a quorum fails. */
  max_results: z.number().int().min(1).default(1),
  /** Whether its quorum may drop to 1 when its first execution goes to a trusted provider (adaptive replication). */
  adaptive: z.boolean().default(false),
  /** The most it pays per CPU-second of estimated work, in SIM (null: no limit, nothing is paid). */
  max_price: z.number().min(0).nullable().default(null),
  /**
   * A public-goods study's job: paid from the commons, placed only on idle capacity (off-peak), and preempted when
   * paid work wants its slot.
   */
  public_good: z.boolean().default(false),
  result: AcceptedResult.nullable(),
  /** Why the job failed or was cancelled, where no execution says it (queue timeout, cancel). */
  reason: z.string().nullable(),
  updated_at: z.number(),
});
export type JobRecord = z.infer<typeof JobRecord>;

/** The mutable part of a JobRecord, as stored in KV `jobs`. */
export const JobState = JobRecord.omit({ job: true });
export type JobState = z.infer<typeof JobState>;

const FREE: ReadonlySet<string> = new Set(['declined', 'cancelled']);

/**
 * Records written before jobs had executions held one attempt, worker and lease, and a history of ended attempts:
 * each becomes an execution (the running one live, the accepted one `ok`). Anything else passes through unchanged.
 */
export function migrateJobState(raw: unknown): unknown {
  if (raw === null || typeof raw !== 'object') return raw;
  if ('executions' in raw) return withVerdicts(raw);
  if (!('history' in raw)) return raw;
  const old = raw as {
    status: string;
    attempt: number;
    worker_id: string | null;
    lease_until: number | null;
    history: { attempt: number; worker_id: string; ended: string; reason: string | null; at: number }[];
    result: AcceptedResult | null;
    updated_at: number;
  } & Record<string, unknown>;
  const { attempt, worker_id, lease_until, history, ...rest } = old;
  const executions: Execution[] = history
    .filter((h) => h.attempt >= 1 && h.worker_id !== '')
    .map((h) => ({
      attempt: h.attempt,
      worker_id: h.worker_id,
      assigned_at: h.at,
      lease_until: h.at,
      output_digest: null,
      seq: null,
      ended: h.ended as Execution['ended'],
      reason: h.reason,
      ended_at: h.at,
      verdict: null,
      pay: 0,
      solo: false,
    }));
  if (old.status === 'assigned' && worker_id) {
    executions.push({
      attempt,
      worker_id,
      assigned_at: old.updated_at,
      lease_until: lease_until ?? old.updated_at,
      output_digest: null,
      seq: null,
      ended: null,
      reason: null,
      ended_at: null,
      verdict: null,
      pay: 0,
      solo: false,
    });
  }
  if (old.result) {
    executions.push({
      attempt: old.result.attempt,
      worker_id: old.result.worker_id,
      assigned_at: old.updated_at,
      lease_until: old.updated_at,
      output_digest: old.result.output_digest,
      seq: old.result.seq,
      ended: 'ok',
      reason: null,
      ended_at: old.updated_at,
      verdict: 'valid',
      pay: 0,
      solo: false,
    });
  }
  const expired = history.find((h) => h.worker_id === '');
  return {
    ...rest,
    attempts: attempt,
    failures: history.filter((h) => h.worker_id !== '' && !FREE.has(h.ended)).length,
    free_ends: 0,
    executions,
    reason: expired?.reason ?? null,
  };
}

/** Records from before replication accepted the one `ok` execution they had: it is the valid one. */
function withVerdicts(raw: object): unknown {
  const r = raw as { executions: unknown };
  if (
    !Array.isArray(r.executions) ||
    r.executions.every((e) => e === null || typeof e !== 'object' || 'verdict' in e)
  )
    return raw;
  return {
    ...raw,
    executions: r.executions.map((e) =>
      e !== null && typeof e === 'object' && !('verdict' in e)
        ? { ...e, verdict: (e as { ended?: unknown }).ended === 'ok' ? 'valid' : null }
        : e,
    ),
  };
}

/** A stored job state, in today's shape or an older one. */
export const StoredJobState = z.preprocess(migrateJobState, JobState);
