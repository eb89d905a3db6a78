import { randomUUID } from 'node:crypto';
import { claimsOf, type JobResult, type SignedClaim } from '../models/api.ts';

export interface ResultBatcherOptions {
  workerId: string;
  sign(claims: readonly SignedClaim[]): string;
  /** Stores one batch (the encoded ResultBatch) under its id; resolves once the stream has it. */
  send(body: Uint8Array, batchId: string): Promise<void>;
  /** A batch is sent before its results' JSON would pass this size. */
  maxBytes: number;
  maxResults?: number;
  /**
   * How long a new batch may wait for company when nothing is being stored (ms; 0 = the end of this turn). A busy
   * worker can afford a millisecond or two for fewer, larger batches; an idle one should not wait.
   */
  linger?: () => number;
}

interface Pending {
  json: string[];
  results: JobResult[];
  bytes: number;
  waiters: { resolve(): void; reject(e: unknown): void }[];
}

const encoder = new TextEncoder();

/**
 * Gathers the results a worker finishes at about the same time into one signed ResultBatch, by group commit: while
 * a batch is being stored, results that finish join the next one, which is sent when the stream has acknowledged
 * the last (or when it is full). An idle worker's result goes out at once (or after the optional linger); a busy
 * worker sends a message, and signs, once per batch rather than once per job, and the batch size follows the load.
 */
export class ResultBatcher {
  private pending: Pending | null = null;
  private sending = 0;
  private readonly opts: ResultBatcherOptions;
  private readonly maxResults: number;

  constructor(opts: ResultBatcherOptions) {
    this.opts = opts;
    this.maxResults = opts.maxResults ?? 256;
  }

  /** Queues a result (and its JSON, when the caller has it); resolves once its batch is stored. */
  add(result: JobResult, json = JSON.stringify(result)): Promise<void> {
    if (this.pending && this.pending.bytes + json.length > this.opts.maxBytes) this.flush();
    if (!this.pending) {
      this.pending = { json: [], results: [], bytes: 0, waiters: [] };
      // Results finishing in this turn of the event loop (or the linger) go together; after that, the next ack
      // sends them.
      if (this.sending === 0) {
        const wait = this.opts.linger?.() ?? 0;
        const batchOf = this.pending;
        const flushIfIdle = () => this.sending === 0 && this.pending === batchOf && this.flush();
        if (wait > 0) setTimeout(flushIfIdle, wait);
        else setImmediate(flushIfIdle);
      }
    }
    const batch = this.pending;
    batch.json.push(json);
    batch.results.push(result);
    batch.bytes += json.length;
    const stored = new Promise<void>((resolve, reject) => batch.waiters.push({ resolve, reject }));
    if (batch.results.length >= this.maxResults) this.flush();
    return stored;
  }

  private flush(): void {
    const batch = this.pending;
    if (!batch) return;
    this.pending = null;
    const batchId = randomUUID();
    const signature = this.opts.sign(claimsOf(batch.results));
    // The results are already JSON: the envelope is spliced around them rather than encoded again.
    const body = encoder.encode(
      `{"batch_id":${JSON.stringify(batchId)},"worker_id":${JSON.stringify(this.opts.workerId)},` +
        `"results":[${batch.json.join(',')}],"signature":${JSON.stringify(signature)}}`,
    );
    this.sending++;
    this.opts
      .send(body, batchId)
      .then(
        () => {
          for (const w of batch.waiters) w.resolve();
        },
        (e) => {
          for (const w of batch.waiters) w.reject(e);
        },
      )
      .finally(() => {
        if (--this.sending === 0) this.flush();
      });
  }
}
