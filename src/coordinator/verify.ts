import type { JobResult } from '../models/api.ts';
import type { Job, JobOutput } from '../models/job.ts';
import { digestOf } from '../sim/digest.ts';
import { verifyClaim } from '../worker/identity.ts';

/**
 * Checks a successful result before it is accepted: signed by the worker it names, for this job's image and input,
 * with an output whose digest is what was signed and which holds exactly this job's epochs, each with a digest
 * that matches its own content. Returns the problem, or undefined when the result is sound.
 */
export function verifyResult(job: Job, result: JobResult, output: JobOutput | null): string | undefined {
  const claim = {
    job_id: result.job_id,
    image: result.image,
    input_digest: result.input_digest,
    output_digest: result.output_digest,
  };
  if (!verifyClaim(result.worker_id, claim, result.signature)) return 'bad signature';
  if (result.image !== job.image) return `ran image ${result.image}, the job pins ${job.image}`;
  if (result.input_digest !== job.input_digest) return 'input digest differs from the job';
  if (result.status !== 'ok') return undefined;
  if (!output) return 'no output';
  if (digestOf(output) !== result.output_digest) return 'output digest does not match the output';
  const want = job.epochs.map((e) => e.epoch_id);
  const got = output.results.map((r) => r.epoch_id);
  if (want.length !== got.length || want.some((id, i) => id !== got[i]))
    return 'output epochs differ from the job';
  for (const r of output.results) {
    const { digest, ...body } = r.result;
    if (digestOf(body) !== digest) return `epoch ${r.epoch_id}: result digest does not match its content`;
  }
  return undefined;
}
