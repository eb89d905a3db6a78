import { claimsOf, type JobResult, type ResultBatch } from '../models/api.ts';
import { type Job, type JobOutput, outputDigest } from '../models/job.ts';
import { digestOf } from '../models/digest.ts';
import { verifyClaims } from '../transport/identity.ts';

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
