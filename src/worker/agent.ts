import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import { type Assignment, AssignRequest, CancelJob, type JobResult } from '../models/api.ts';
import { canonicalJson, digestOf } from '../models/digest.ts';
import { JobOutput, jobInput, outputDigest } from '../models/job.ts';
import type { WorkerAd } from '../models/worker.ts';
import { decode, logConnectionStatus } from '../transport/connect.ts';
import type { Identity } from '../transport/identity.ts';
import { LARGE_OUTPUT_BYTES } from '../transport/resources.ts';
import type { StatusWatch } from '../transport/status.ts';
import { subjects } from '../transport/subjects.ts';
import type { WorkerBus } from '../transport/worker-bus.ts';
import type { ExecOutcome, Executor } from './executors/types.ts';
import { ResultBatcher } from './result-batcher.ts';

export interface WorkerConfig {
  name: string;
  slots: number;
  cpus: number;
  memory_mb: number;
  gpus: number;
  labels: Record<string, string>;
  price_per_cpu_s: number;
  offpeak: WorkerAd['offpeak'];
  /** IANA time zone of the off-peak windows. */
  tz: string;
  /** SIM per CPU-second inside the windows (null: `price_per_cpu_s`). */
  offpeak_price_per_cpu_s: number | null;
  heartbeatMs: number;
  version: string;
}

interface Running {
  job_id: string;
  attempt: number;
  /** Aborted when told to stop: from then on it holds no slot, though its container or process may take a while. */
  controller: AbortController;
  /** Why it was aborted, reported as the result's reason. */
  abortReason: string | null;
  done: Promise<void>;
}

const encoder = new TextEncoder();
/** How long, and how many, stored results a worker keeps advertising as `reported`. */
const REPORTED_FOR_MS = 10 * 60_000;
const MAX_REPORTED = 2048;
const attemptKey = (jobId: string, attempt: number) => `${jobId}#${attempt}`;
const stopping = (r: Running) => r.controller.signal.aborted;

/**
 * A provider's worker: advertises capacity in heartbeats, accepts assignments while it has free slots, runs each
 * attempt on its executor, and publishes signed batches of results to the RESULTS stream with a message id, so a
 * publish retried after a reconnect is stored once. A paid assignment may name public-goods attempts here to stop
 * first (`preempts`): their slots are free the moment they are told to stop.
 */
export class WorkerAgent {
  private readonly running = new Map<string, Running>();
  /** Attempts whose results are stored, and when (advertised for a while: the coordinator may not have read them). */
  private readonly reported = new Map<string, number>();
  private readonly subs: Subscription[] = [];
  private timer: NodeJS.Timeout | undefined;
  private connectionLog: StatusWatch | undefined;
  private images: string[] = [];
  private imagesAt = 0;
  private draining = false;
  private closed = false;
  private readonly nc: NatsConnection;
  private readonly bus: WorkerBus;
  private readonly identity: Identity;
  private readonly executor: Executor;
  private readonly config: WorkerConfig;
  private readonly log: Logger;
  private readonly batcher: ResultBatcher;

  constructor(deps: {
    nc: NatsConnection;
    bus: WorkerBus;
    identity: Identity;
    executor: Executor;
    config: WorkerConfig;
    log: Logger;
  }) {
    this.nc = deps.nc;
    this.bus = deps.bus;
    this.identity = deps.identity;
    this.executor = deps.executor;
    this.config = deps.config;
    this.log = deps.log;
    this.batcher = new ResultBatcher({
      workerId: this.identity.workerId,
      sign: (claims) => this.identity.sign(claims),
      maxBytes: LARGE_OUTPUT_BYTES,
      // With other attempts about to finish, a result may wait up to 2 ms to share their message and signature.
      linger: () => (this.running.size > 1 ? 2 : 0),
      send: (body, msgID) => retry(() => this.bus.publishResults(body, msgID), this.log, 'result publish'),
    });
  }

  get workerId(): string {
    return this.identity.workerId;
  }

  async start(): Promise<void> {
    const id = this.identity.workerId;
    // The client retries a lost server forever and silently; say when the bus is away and when it is back.
    this.connectionLog ??= logConnectionStatus(this.nc, this.log);
    this.subs.push(
      this.nc.subscribe(subjects.assign(id), {
        callback: (err, msg) => {
          if (!err) this.onAssign(msg);
        },
      }),
      this.nc.subscribe(subjects.cancel(id), {
        callback: (err, msg) => {
          if (!err) this.onCancel(msg);
        },
      }),
    );
    await this.nc.flush();
    await this.heartbeat();
    this.timer = setInterval(() => void this.heartbeat(), this.config.heartbeatMs);
    this.log.info(
      { worker_id: id, executor: this.executor.kind, slots: this.config.slots },
      'worker started',
    );
  }

  /** Stops taking work, lets running attempts finish for up to graceMs, then hands the rest back. */
  async drain(graceMs: number): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    this.log.info({ running: this.running.size, grace_ms: graceMs }, 'draining');
    await this.heartbeat();
    const all = () => Promise.all([...this.running.values()].map((r) => r.done));
    const timedOut = await Promise.race([all().then(() => false), sleep(graceMs).then(() => true)]);
    if (timedOut) {
      for (const r of this.running.values()) this.stopAttempt(r, 'worker draining: handed back');
      await all();
    }
  }

  /** Drains, then stops heartbeats and subscriptions; the connection is the caller's to close. */
  async stop(graceMs = 30_000): Promise<void> {
    await this.drain(graceMs);
    this.closed = true;
    clearInterval(this.timer);
    for (const s of this.subs) s.unsubscribe();
    await this.heartbeat(true).catch(() => {});
    this.connectionLog?.stop();
  }

  private advert(): WorkerAd {
    return {
      worker_id: this.identity.workerId,
      name: this.config.name,
      executor: this.executor.kind,
      slots: this.config.slots,
      slots_free: this.draining ? 0 : Math.max(0, this.config.slots - this.slotsTaken()),
      cpus: this.config.cpus,
      memory_mb: this.config.memory_mb,
      gpus: this.config.gpus,
      labels: this.config.labels,
      images: this.images,
      price_per_cpu_s: this.config.price_per_cpu_s,
      offpeak: this.config.offpeak,
      tz: this.config.tz,
      offpeak_price_per_cpu_s: this.config.offpeak_price_per_cpu_s,
      // Stopping attempts too, until they end: they still run here.
      running: [...this.running.keys()],
      reported: this.recentlyReported(),
      draining: this.draining,
      at: Date.now(),
      interval_ms: this.config.heartbeatMs,
      version: this.config.version,
    };
  }

  /** Slots held: attempts not told to stop (one being killed gave its slot up already). */
  private slotsTaken(): number {
    let n = 0;
    for (const r of this.running.values()) if (!stopping(r)) n++;
    return n;
  }

  /** Aborts an attempt; its result says why (the first reason given: a later cancel does not rewrite a preemption). */
  private stopAttempt(r: Running, reason: string): void {
    if (stopping(r)) return;
    r.abortReason = reason;
    r.controller.abort(reason);
  }

  private recentlyReported(): string[] {
    const cutoff = Date.now() - REPORTED_FOR_MS;
    for (const [key, at] of this.reported) {
      if (at >= cutoff && this.reported.size <= MAX_REPORTED) break;
      this.reported.delete(key); // oldest first: a Map keeps insertion order
    }
    return [...this.reported.keys()];
  }

  private async heartbeat(final = false): Promise<void> {
    if (this.closed && !final) return;
    if (Date.now() - this.imagesAt > 30_000) {
      this.imagesAt = Date.now();
      this.images = await this.executor.cachedImages().catch(() => this.images);
    }
    const ad = this.advert();
    try {
      this.nc.publish(subjects.heartbeat(ad.worker_id), encoder.encode(JSON.stringify(ad)));
      if (final) await this.bus.deleteAdvert();
      else await this.bus.putAdvert(JSON.stringify(ad));
    } catch (e) {
      // While NATS is away the client buffers; the next beat will tell the truth.
      this.log.debug({ err: (e as Error).message }, 'heartbeat not stored');
    }
  }

  /**
   * Takes each assignment while a slot is free, after stopping the public-goods attempts it preempts (the coordinator
   * has ended those already, whether or not this one is taken); answers every one, accepted or declined with the
   * reason.
   */
  private onAssign(msg: Msg): void {
    let req: AssignRequest;
    try {
      req = decode(msg.data, AssignRequest, 'assignment');
    } catch (e) {
      // Nothing to answer per job: the coordinator treats the missing answers as declines.
      msg.respond(JSON.stringify({ answers: [] }));
      this.log.warn({ err: (e as Error).message.slice(0, 200) }, 'invalid assignment ignored');
      return;
    }
    const answers = req.assignments.map((a) => {
      const answer = (accepted: boolean, reason: string | null) => ({
        job_id: a.job.job_id,
        attempt: a.attempt,
        accepted,
        reason,
      });
      for (const p of a.preempts) {
        const victim = this.running.get(attemptKey(p.job_id, p.attempt));
        if (victim) this.stopAttempt(victim, `preempted: its slot went to paid job ${a.job.job_id}`);
      }
      const key = attemptKey(a.job.job_id, a.attempt);
      const same = this.running.get(key);
      // A retried request for what already runs; one being stopped is not coming back.
      if (same) return stopping(same) ? answer(false, 'being stopped') : answer(true, null);
      if (this.draining) return answer(false, 'draining');
      if (this.slotsTaken() >= this.config.slots) return answer(false, 'no free slot');
      const running: Running = {
        job_id: a.job.job_id,
        attempt: a.attempt,
        controller: new AbortController(),
        abortReason: null,
        done: Promise.resolve(),
      };
      this.running.set(key, running);
      running.done = this.execute(a, running)
        .then(() => {
          this.reported.set(key, Date.now());
        })
        .catch((e) => this.log.error({ job_id: a.job.job_id, err: (e as Error).message }, 'result lost'))
        .finally(() => this.running.delete(key));
      return answer(true, null);
    });
    msg.respond(JSON.stringify({ answers }));
  }

  private onCancel(msg: Msg): void {
    try {
      const c = decode(msg.data, CancelJob, 'cancel');
      const r = this.running.get(attemptKey(c.job_id, c.attempt));
      if (r) this.stopAttempt(r, c.reason ?? 'cancelled by the coordinator');
    } catch {
      // Malformed cancels are ignored: nothing to stop.
    }
  }

  private async execute(req: Assignment, running: Running): Promise<void> {
    const { job, attempt } = req;
    const started = Date.now();
    const input = jobInput(job.job_id, job.epochs);
    let outcome: ExecOutcome;
    if (digestOf(input) !== job.input_digest) {
      outcome = failure('failed', 'input digest does not match the job: refusing to run it');
    } else {
      try {
        outcome = await this.executor.run({
          job_id: job.job_id,
          image: job.image,
          input,
          limits: job.limits,
          signal: running.controller.signal,
        });
      } catch (e) {
        outcome = failure('failed', `executor error: ${(e as Error).message}`);
      }
    }
    if (outcome.status === 'cancelled' && running.abortReason)
      outcome = { ...outcome, reason: running.abortReason };

    let results: JobOutput['results'] | null = null;
    let digest: string | null = null;
    if (outcome.status === 'ok') {
      const parsed = JobOutput.safeParse(safeJson(outcome.output));
      if (!parsed.success || parsed.data.job_id !== job.job_id) {
        outcome = { ...outcome, status: 'failed', reason: 'the runner wrote no valid output' };
      } else {
        results = parsed.data.results;
        digest = outputDigest(parsed.data);
      }
    }
    const result: JobResult = {
      job_id: job.job_id,
      study_id: job.study_id,
      attempt,
      image: job.image,
      input_digest: job.input_digest,
      output_digest: digest,
      status: outcome.status,
      reason: outcome.reason,
      exit_code: outcome.exit_code,
      results,
      output_object: null,
      usage: outcome.usage,
      started_at: started,
      finished_at: Date.now(),
      stdout_tail: outcome.stdout_tail,
      stderr_tail: outcome.stderr_tail,
    };
    await this.publish(result);
    this.log.info(
      {
        job_id: job.job_id,
        attempt,
        status: result.status,
        reason: result.reason,
        wall_ms: result.usage.wall_ms,
      },
      'attempt finished',
    );
  }

  /** Publishes a result in the next signed batch, moving a big output to the OUTPUTS stream first. */
  private async publish(result: JobResult): Promise<void> {
    let json = JSON.stringify(result);
    if (result.results && json.length > LARGE_OUTPUT_BYTES) {
      const output = encoder.encode(canonicalJson({ job_id: result.job_id, results: result.results }));
      const parts = await retry(
        () => this.bus.putOutput(result.job_id, result.attempt, output),
        this.log,
        'output publish',
      );
      result = { ...result, results: null, output_object: { parts, bytes: output.length } };
      json = JSON.stringify(result);
    }
    await this.batcher.add(result, json);
  }
}

function failure(status: ExecOutcome['status'], reason: string): ExecOutcome {
  return {
    status,
    reason,
    exit_code: null,
    output: null,
    usage: { wall_ms: 0, cpu_ms: null, max_memory_mb: null },
    stdout_tail: '',
    stderr_tail: '',
  };
}

function safeJson(text: string | null): unknown {
  if (text === null) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Retries an operation that may fail while NATS is away (restart, reconnect), with capped backoff, for up to 10 min. */
async function retry<T>(op: () => Promise<T>, log: Logger, what: string): Promise<T> {
  const deadline = Date.now() + 10 * 60_000;
  for (let i = 0; ; i++) {
    try {
      return await op();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      log.warn({ err: (e as Error).message, attempt: i + 1 }, `${what} failed; retrying`);
      await sleep(Math.min(5000, 100 * 2 ** i));
    }
  }
}
