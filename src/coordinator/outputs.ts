import { type JobResult, ResultBatch } from '../models/api.ts';
import { type JobOutput, JobOutput as JobOutputSchema } from '../models/job.ts';
import type { AcceptedResult } from '../models/job-record.ts';
import { decode } from '../transport/connect.ts';
import { type Resources, STREAMS } from '../transport/resources.ts';
import { subjects } from '../transport/subjects.ts';

/** The provider's fault: its result names an output that is not there (it never uploaded it, or not in full). */
export class MissingOutputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MissingOutputError';
  }
}

const decoder = new TextDecoder();

/**
 * Job outputs: inline in a result, or in parts on the worker's own OUTPUTS subjects when large; an accepted one is
 * read back from its batch in the RESULTS stream. Recently used outputs are cached, bounded by their size in bytes (a
 * few large outputs must not hold hundreds of MB). A failed read (a timeout, the server away) is thrown as it is, so
 * the caller retries later instead of blaming the provider; only an output that is really absent is a
 * MissingOutputError.
 */
export class Outputs {
  private readonly cache = new Map<string, { output: JobOutput; bytes: number }>();
  private bytes = 0;
  private readonly r: Pick<Resources, 'jsm'>;
  private readonly maxBytes: number;

  constructor(resources: Pick<Resources, 'jsm'>, maxBytes = 64 * 2 ** 20) {
    this.r = resources;
    this.maxBytes = maxBytes;
  }

  /**
   * The output a result of `workerId` carries or names, with its size in bytes: for an inline output, `inlineBytes`
   * (its share of the message it came in, which the caller knows without serialising it again).
   */
  async load(
    result: JobResult,
    workerId: string,
    inlineBytes = 0,
  ): Promise<{ output: JobOutput; bytes: number }> {
    if (result.results)
      return { output: { job_id: result.job_id, results: result.results }, bytes: inlineBytes };
    const ref = result.output_object;
    if (!ref) throw new MissingOutputError('result has neither inline results nor an output object');
    const what = `output of ${result.job_id} attempt ${result.attempt}`;
    // Only the worker itself may publish on its subjects (permissions.ts): the parts are its own.
    const parts = await Promise.all(
      Array.from({ length: ref.parts }, (_, i) =>
        this.r.jsm.streams
          .getMessage(STREAMS.outputs, {
            last_by_subj: subjects.outputPart(workerId, result.job_id, result.attempt, i),
          })
          .then((m) => {
            if (!m) throw new MissingOutputError(`${what}: part ${i + 1} of ${ref.parts} is missing`);
            return m.data;
          }),
      ),
    );
    const blob = Buffer.concat(parts);
    if (blob.length !== ref.bytes)
      throw new MissingOutputError(`${what}: ${blob.length} bytes where the result says ${ref.bytes}`);
    let json: unknown;
    try {
      json = JSON.parse(decoder.decode(blob));
    } catch {
      throw new MissingOutputError(`${what} is not JSON`);
    }
    const parsed = JobOutputSchema.safeParse(json);
    if (!parsed.success) throw new MissingOutputError(`${what} is not a job output`);
    return { output: parsed.data, bytes: blob.length };
  }

  /** The signed result batch at `seq` in the RESULTS stream (what provenance shows as evidence). */
  async batchAt(seq: number): Promise<ResultBatch> {
    const msg = await this.r.jsm.streams.getMessage(STREAMS.results, { seq });
    if (!msg) throw new Error(`result ${seq} is missing from the ${STREAMS.results} stream`);
    return decode(msg.data, ResultBatch, `result batch ${seq}`);
  }

  /** A done job's output: from the cache, else from its batch in the RESULTS stream. */
  async accepted(jobId: string, accepted: AcceptedResult): Promise<JobOutput> {
    const hit = this.cache.get(jobId);
    if (hit) {
      this.cache.delete(jobId);
      this.cache.set(jobId, hit); // most recently used last
      return hit.output;
    }
    const msg = await this.r.jsm.streams.getMessage(STREAMS.results, { seq: accepted.seq });
    if (!msg) throw new Error(`result ${accepted.seq} is missing from the ${STREAMS.results} stream`);
    const batch = decode(msg.data, ResultBatch, `result batch ${accepted.seq}`);
    const result = batch.results.find((r) => r.job_id === jobId && r.attempt === accepted.attempt);
    if (!result)
      throw new Error(`result batch ${accepted.seq} has no attempt ${accepted.attempt} of ${jobId}`);
    const { output, bytes } = await this.load(
      result,
      batch.worker_id,
      msg.data.length / batch.results.length,
    );
    this.remember(jobId, output, bytes);
    return output;
  }

  remember(jobId: string, output: JobOutput, bytes: number): void {
    if (bytes > this.maxBytes / 4) return;
    const old = this.cache.get(jobId);
    if (old) this.bytes -= old.bytes;
    this.cache.delete(jobId);
    this.cache.set(jobId, { output, bytes });
    this.bytes += bytes;
    for (const [id, e] of this.cache) {
      if (this.bytes <= this.maxBytes) break;
      this.cache.delete(id);
      this.bytes -= e.bytes;
    }
  }

  cachedBytes(): number {
    return this.bytes;
  }
}
