import { AckPolicy, DeliverPolicy, JetStreamApiError, type JsMsg } from '@nats-io/jetstream';
import type { Logger } from 'pino';
import { type JobResult, ResultBatch } from '../models/api.ts';
import type { InputError } from '../models/errors.ts';
import type { JobOutput } from '../models/job.ts';
import { decode } from '../transport/connect.ts';
import { type Resources, STREAMS } from '../transport/resources.ts';
import type { Clock } from './clock.ts';
import { liveExecution, type RetryPolicy } from './job-state.ts';
import { MissingOutputError, type Outputs } from './outputs.ts';
import type { StateStore } from './store.ts';
import { applyResult, batchSigned } from './verify.ts';
import type { WorkerRegistry } from './workers.ts';

const CONSUMER = 'coordinator';
const RETRY_MS = 1000;
/** "consumer name already in use" / "consumer already exists": a restart, or another coordinator created it. */
const CONSUMER_EXISTS: ReadonlySet<number> = new Set([10013, 10148]);

export interface ResultsDeps {
  resources: Pick<Resources, 'js' | 'jsm'>;
  store: StateStore;
  outputs: Outputs;
  registry: WorkerRegistry;
  clock: Clock;
  retry: RetryPolicy;
  log: Logger;
  /** After a turn's batches are handled (events go out with the same socket writes). */
  afterTurn(): void;
}

/**
 * The results consumer: a durable JetStream consumer on RESULTS. Each batch's signature is checked once; each
 * result's transition goes through `store.update`; a message is acknowledged only once every transition it causes
 * is stored, so a crash or a failed write in between replays it (handling is idempotent: a result for an execution
 * that is no longer live changes nothing).
 */
export class ResultsConsumer {
  private messages: { stop(): void } | undefined;
  private running: Promise<void> | undefined;
  private stopping = false;
  private readonly d: ResultsDeps;

  constructor(deps: ResultsDeps) {
    this.d = deps;
  }

  async start(): Promise<void> {
    const { jsm, js } = this.d.resources;
    await jsm.consumers
      .add(STREAMS.results, {
        durable_name: CONSUMER,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        // Handling takes milliseconds; after a crash or a failed write, an unacknowledged batch comes back this soon.
        ack_wait: 10_000_000_000,
        max_ack_pending: 2000,
      })
      .catch((e) => {
        if (!(e instanceof JetStreamApiError && CONSUMER_EXISTS.has(e.code))) throw e;
      });
    const consumer = await js.consumers.get(STREAMS.results, CONSUMER);
    // Pulls that expire every 5 s (heartbeats every 2.5 s) rather than the client's 30 s: when the stream's leader
    // dies with a pull waiting on it, the consumer notices two missed heartbeats and pulls from the new leader within
    // seconds, not a minute. One pull per 5 s while idle costs the server nothing to speak of.
    const messages = await consumer.consume({ max_messages: 500, expires: 5_000 });
    this.messages = messages;
    this.running = this.loop(messages);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.messages?.stop();
    await this.running;
  }

  /**
   * Messages are handled a turn of the event loop at a time and acknowledged together once their transitions are
   * stored: the writes they cause then leave in a few socket writes rather than several each, and on a small
   * machine a socket write costs more CPU than checking a result.
   */
  private async loop(messages: AsyncIterable<JsMsg>): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    let unacked = 0;
    let inbox: JsMsg[] = [];
    const flushInbox = () => {
      const batch = inbox;
      inbox = [];
      const p = this.handle(batch).finally(() => {
        unacked -= batch.length;
        inFlight.delete(p);
      });
      inFlight.add(p);
    };
    for await (const m of messages) {
      if (this.stopping) break;
      inbox.push(m);
      unacked++;
      if (inbox.length === 1) setImmediate(() => inbox.length > 0 && flushInbox());
      if (unacked >= 256) {
        if (inbox.length > 0) flushInbox();
        await Promise.race(inFlight);
      }
    }
    if (inbox.length > 0) flushInbox();
    await Promise.allSettled(inFlight);
  }

  private async handle(batch: JsMsg[]): Promise<void> {
    const handled = await Promise.allSettled(batch.map((m) => this.onBatch(m)));
    this.d.afterTurn();
    handled.forEach((h, i) => {
      const m = batch[i]!;
      if (h.status === 'fulfilled') m.ack();
      else {
        // Redelivered in a second (handling is idempotent): a failed write or read is retried, never lost.
        this.d.log.error(
          { err: (h.reason as Error).message, seq: m.seq },
          'result not processed; will retry',
        );
        m.nak(RETRY_MS);
      }
    });
  }

  /** One batch. A batch whose signature does not verify cannot be attributed to the worker it names: ignored. */
  private async onBatch(m: JsMsg): Promise<void> {
    let batch: ResultBatch;
    try {
      batch = decode(m.data, ResultBatch, 'result batch');
    } catch (e) {
      const issues = (e as InputError).issues;
      this.d.log.warn({ seq: m.seq, subject: m.subject, issues }, 'malformed result batch ignored');
      return;
    }
    if (!batchSigned(batch)) {
      this.d.log.warn(
        { seq: m.seq, worker_id: batch.worker_id },
        'result batch with a bad signature ignored',
      );
      return;
    }
    const share = m.data.length / batch.results.length;
    await Promise.all(batch.results.map((r) => this.onResult(m.seq, batch.worker_id, r, share)));
  }

  private async onResult(seq: number, workerId: string, result: JobResult, bytes: number): Promise<void> {
    const rec = this.d.store.job(result.job_id);
    if (!rec || !liveExecution(rec, result.attempt, workerId)) return; // stale, duplicate, or not ours
    let output: JobOutput | null = null;
    let outputProblem: string | null = null;
    if (result.status === 'ok') {
      try {
        ({ output, bytes } = await this.d.outputs.load(result, workerId, bytes));
      } catch (e) {
        // A read that failed is retried (the message is not acknowledged); only a missing output is the provider's.
        if (!(e instanceof MissingOutputError)) throw e;
        outputProblem = e.message;
      }
    }
    const next = await this.d.store.update(result.job_id, (cur) =>
      applyResult(cur, result, {
        seq,
        workerId,
        output,
        outputProblem,
        draining: this.d.registry.isDraining(workerId),
        now: this.d.clock.now(),
        policy: this.d.retry,
      }),
    );
    if (next?.status === 'done' && next.result?.attempt === result.attempt && output) {
      this.d.outputs.remember(result.job_id, output, bytes);
    }
    const last = next?.executions.find((e) => e.attempt === result.attempt);
    if (last?.ended === 'rejected') {
      this.d.log.warn(
        { job_id: result.job_id, worker_id: workerId, problem: last.reason },
        'result rejected',
      );
    }
  }
}
