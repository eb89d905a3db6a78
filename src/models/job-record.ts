import { z } from 'zod';
import { ExecStatus } from './execution.ts';
import { Job } from './job.ts';

export const JobStatus = z.enum(['queued', 'assigned', 'done', 'failed', 'cancelled']);
export type JobStatus = z.infer<typeof JobStatus>;

/** Why an attempt ended without an accepted result, beyond what the executor reports. */
export const AttemptEnd = z.union([
  ExecStatus,
  z.enum(['lease-expired', 'worker-lost', 'declined', 'rejected']),
]);
export type AttemptEnd = z.infer<typeof AttemptEnd>;

export const AttemptRecord = z.strictObject({
  attempt: z.number().int().min(1),
  worker_id: z.string(),
  ended: AttemptEnd,
  reason: z.string().nullable(),
  at: z.number(),
});
export type AttemptRecord = z.infer<typeof AttemptRecord>;

/** The accepted result of a job: where it sits in the RESULTS stream. */
export const AcceptedResult = z.strictObject({
  seq: z.number().int().min(1),
  attempt: z.number().int().min(1),
  worker_id: z.string(),
  output_digest: z.string(),
});

/**
 * A job's durable record, the single source of truth the coordinator resumes from. It is stored in two parts: the
 * record as submitted, with its study's others in one object (`jobspecs` object store, written once), and from its
 * first transition on the state (everything but `job`, KV `jobs`, rewritten on every transition), so a transition
 * writes a few hundred bytes rather than the job's scenarios again.
 */
export const JobRecord = z.strictObject({
  job: Job,
  status: JobStatus,
  /** Attempts started so far. */
  attempt: z.number().int().min(0),
  max_attempts: z.number().int().min(1),
  worker_id: z.string().nullable(),
  /** When the running attempt's lease runs out (ms since epoch). */
  lease_until: z.number().nullable(),
  /** Backoff: not to be placed before this time. */
  not_before: z.number(),
  /** Queue timeout: fail if still not placed by then. */
  queue_deadline: z.number().nullable(),
  enqueued_at: z.number(),
  history: z.array(AttemptRecord),
  result: AcceptedResult.nullable(),
  updated_at: z.number(),
});
export type JobRecord = z.infer<typeof JobRecord>;

/** The mutable part of a JobRecord, as stored in KV `jobs`. */
export const JobState = JobRecord.omit({ job: true });
export type JobState = z.infer<typeof JobState>;
