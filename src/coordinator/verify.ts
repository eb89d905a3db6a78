import { claimsOf, type JobResult, type ResultBatch } from '../models/api.ts';
import { digestOf } from '../models/digest.ts';
import { type Job, type JobOutput, outputDigest } from '../models/job.ts';
import type { JobRecord } from '../models/job-record.ts';
import { verifyClaims } from '../transport/identity.ts';
import { endExecution, liveExecution, type RetryPolicy, report } from './job-state.ts';

/** Checks a batch's signature: every claim in it was signed by the worker it names. */
export function batchSigned(batch: ResultBatch): boolean {
  return verifyClaims(batch.worker_id, claimsOf(batch.results), batch.signature);
}

/**
 * Checks one result of a correctly signed batch before it is accepted: for this job's image and input, with an
 * output whose digest is what was signed and which holds exactly this job's epochs, each with a digest that
 * matches its own content. Returns the problem, or undefined when the result is sound.
 */
export function verifyResult(job: Job, result: JobResult, output: JobOutput | null): string | undefined {
  if (result.image !== job.image) return `ran image ${result.image}, the job pins ${job.image}`;
  if (result.input_digest !== job.input_digest) return 'input digest differs from the job';
  if (result.status !== 'ok') return undefined;
  if (!output) return 'no output';
  const want = job.epochs.map((e) => e.epoch_id);
  const got = output.results.map((r) => r.epoch_id);
  if (want.length !== got.length || want.some((id, i) => id !== got[i]))
    return 'output epochs differ from the job';
  if (outputDigest(output) !== result.output_digest) return 'output digest does not match the output';
  for (const r of output.results) {
    const { digest, ...body } = r.result;
    if (digestOf(body) !== digest) return `epoch ${r.epoch_id}: result digest does not match its content`;
  }
  return undefined;
}

export interface ResultContext {
  seq: number;
  workerId: string;
  /** The output, or why there is none that can be checked (the provider's fault). */
  output: JobOutput | null;
  outputProblem: string | null;
  /** Whether the worker said it was draining: a hand-back is then nobody's fault. */
  draining: boolean;
  now: number;
  policy: RetryPolicy;
}

/**
 * The transition a signed result causes (pure): a sound result goes to the vote over the job's outputs (see
 * job-state `report`), an unsound one is rejected (counts against the worker), or the execution
 * ended as its worker reports. A result for an execution that is not live (stale, duplicate) changes nothing. A
 * `cancelled` the coordinator did not ask for is nobody's fault only when the worker is draining; otherwise it
 * counts, so cancels sent to a worker by someone else cannot bounce a job forever.
 */
export function applyResult(rec: JobRecord, result: JobResult, ctx: ResultContext): JobRecord {
  if (!liveExecution(rec, result.attempt, ctx.workerId)) return rec;
  const end = (ended: Parameters<typeof endExecution>[3], reason: string | null, counted?: boolean) =>
    endExecution(rec, result.attempt, ctx.workerId, ended, reason, ctx.now, ctx.policy, {
      output_digest: result.output_digest,
      seq: ctx.seq,
      ...(counted !== undefined ? { counted } : {}),
    });
  const problem =
    result.status === 'ok' && ctx.outputProblem
      ? ctx.outputProblem
      : verifyResult(rec.job, result, ctx.output);
  if (problem) return end('rejected', problem);
  if (result.status === 'ok') {
    return report(
      rec,
      result.attempt,
      ctx.workerId,
      { seq: ctx.seq, output_digest: result.output_digest! },
      ctx.now,
      ctx.policy,
    );
  }
  if (result.status === 'cancelled') return end('cancelled', result.reason, !ctx.draining);
  return end(result.status, result.reason);
}
