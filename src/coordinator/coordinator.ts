import { createHash, randomBytes } from 'node:crypto';
import { AckPolicy, DeliverPolicy, type JsMsg } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import {
  type Assignment,
  AssignReply,
  type AssignRequest,
  type JobEvent,
  type JobEvents,
  type JobResult,
  ResultBatch,
  type ResultRow,
  type ResultsReply,
  type StudyStatus,
  type SubmitReply,
  type SubmitRequest,
} from '../models/api.ts';
import { InputError } from '../models/errors.ts';
import { type JobOutput, JobOutput as JobOutputSchema } from '../models/job.ts';
import type { AttemptEnd, JobRecord } from '../models/job-record.ts';
import { StudyRecord } from '../models/study-record.ts';
import { WorkerAd } from '../models/worker.ts';
import { epochRow } from '../study/aggregate.ts';
import { decode } from '../transport/connect.ts';
import type { Resources } from '../transport/resources.ts';
import { STREAMS } from '../transport/resources.ts';
import { subjects } from '../transport/subjects.ts';
import { buildSubmission } from './intake.ts';
import {
  accept,
  assign,
  cancel,
  DEFAULT_RETRY,
  endAttempt,
  expireQueued,
  isCurrentAttempt,
  isTerminal,
  type RetryPolicy,
  workersToAvoid,
} from './job-state.ts';
import { getStudyJobs, putStudyJobs, stateJson, withState } from './job-store.ts';
import { fillableSlots, type PendingJob, place, type WorkerView } from './placement.ts';
import { studyState, summarise } from './status.ts';
import { batchSigned, verifyResult } from './verify.ts';

export interface CoordinatorOptions {
  /** Image every job pins (an image ID where Docker workers exist). */
  image: string;
  retry?: RetryPolicy;
  /** Added to a job's timeout to form its lease: room for container start-up and result upload. */
  leaseGraceMs?: number;
  /** A worker is lost after this many missed heartbeats. */
  missedHeartbeats?: number;
  tickMs?: number;
  /** How long a worker has to answer an assignment. */
  assignTimeoutMs?: number;
  log: Logger;
}

interface Entry<T> {
  rec: T;
  /** KV revision; 0 for a job whose state has not been written yet (it is still as submitted). */
  rev: number;
}

const CONSUMER = 'coordinator';
/** Assignment requests stay well under NATS's 1 MiB message limit. */
const MAX_ASSIGN_BYTES = 512 * 1024;

/** Splits items into runs whose JSON stays under `limit` bytes (an item bigger than that goes alone). */
function byteBatches<T>(items: readonly T[], limit: number): T[][] {
  const out: T[][] = [];
  let batch: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = JSON.stringify(item).length;
    if (batch.length > 0 && bytes + size > limit) {
      out.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(item);
    bytes += size;
  }
  if (batch.length > 0) out.push(batch);
  return out;
}
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * The coordinator's IO shell around pure scheduling. A study's jobs are stored (one object) before the study record
 * that makes them visible, and every later job and study transition is written to JetStream KV (compare-and-set on
 * the revision) before it is acted on, so a restarted coordinator loads the same state and resumes; results are read
 * from a durable consumer and acknowledged only after the transition they cause is stored.
 */
export class Coordinator {
  private readonly jobs = new Map<string, Entry<JobRecord>>();
  private readonly studies = new Map<string, Entry<StudyRecord>>();
  private readonly workers = new Map<string, { ad: WorkerAd; seenAt: number }>();
  /** Jobs being assigned right now, and to which worker (counted against its slots until recorded). */
  private readonly inflight = new Map<string, string>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Accepted outputs by job id (a bounded cache: the RESULTS stream holds them all). */
  private readonly outputs = new Map<string, JobOutput>();
  private subs: Subscription[] = [];
  private timer: NodeJS.Timeout | undefined;
  private consuming: Promise<void> | undefined;
  private messages: { stop(): void } | undefined;
  private stopping = false;
  private ticking: Promise<void> | undefined;
  private readonly queued = new Set<string>();
  private readonly assigned = new Set<string>();
  private queueOrder: string[] = [];
  private queueHead = 0;
  private queueDirty = false;
  /** Per study, jobs not yet terminal; studies whose count may have reached zero. */
  private readonly live = new Map<string, number>();
  /** Job transitions not yet published, by study. */
  private readonly pendingEvents = new Map<string, JobEvent[]>();
  private readonly settled = new Set<string>();
  private lastExpirySweep = 0;
  /** Assigned attempts missing from their worker's adverts, since when (coordinator clock). */
  private readonly absent = new Map<string, number>();
  private again = false;
  private startedAt = 0;
  private readonly retry: RetryPolicy;
  private readonly leaseGraceMs: number;
  private readonly missedHeartbeats: number;
  private readonly tickMs: number;
  private readonly assignTimeoutMs: number;
  private readonly log: Logger;
  readonly image: string;
  private readonly nc: NatsConnection;
  private readonly resources: Resources;

  constructor(nc: NatsConnection, resources: Resources, options: CoordinatorOptions) {
    this.nc = nc;
    this.resources = resources;
    this.image = options.image;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.leaseGraceMs = options.leaseGraceMs ?? 30_000;
    this.missedHeartbeats = options.missedHeartbeats ?? 3;
    this.tickMs = options.tickMs ?? 100;
    this.assignTimeoutMs = options.assignTimeoutMs ?? 2000;
    this.log = options.log;
  }

  async start(): Promise<void> {
    this.startedAt = Date.now();
    await this.load();
    this.subs.push(
      this.nc.subscribe(subjects.heartbeatAll, {
        callback: (err, msg) => {
          if (err) return;
          let ad: WorkerAd;
          try {
            ad = decode(msg.data, WorkerAd, 'worker advert');
          } catch {
            return; // not a worker we can schedule on
          }
          const known = this.workers.has(ad.worker_id);
          this.workers.set(ad.worker_id, { ad, seenAt: Date.now() });
          if (!known) this.kick();
        },
      }),
    );
    this.consuming = this.consumeResults().catch((e) => {
      this.log.fatal({ err: (e as Error).message }, 'results consumer stopped');
      process.exitCode = 1;
    });
    this.timer = setInterval(() => this.kick(), this.tickMs);
    this.log.info(
      { jobs: this.jobs.size, studies: this.studies.size, image: this.image },
      'coordinator started',
    );
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.timer);
    for (const s of this.subs) s.unsubscribe();
    this.messages?.stop();
    await this.consuming;
    await Promise.allSettled([...this.locks.values()]);
    this.flushEvents();
  }

  /** Loads every study and its jobs: each job as submitted, with its stored state laid over it. */
  private async load(): Promise<void> {
    for (const [key, entry] of await loadAll(this.resources.kv.studies)) {
      const parsed = StudyRecord.safeParse(safeJson(entry.value));
      if (parsed.success) this.studies.set(key, { rec: parsed.data, rev: entry.revision });
      else this.log.error({ study_id: key }, 'study record unreadable; skipped');
    }
    const states = await loadAll(this.resources.kv.jobs);
    for (const [studyId, { rec: study }] of this.studies) {
      const submitted = await getStudyJobs(this.resources, studyId).catch((e) => {
        this.log.error({ study_id: studyId, err: (e as Error).message }, 'jobs of study unreadable');
        return null;
      });
      if (!submitted) {
        // Cannot happen through the coordinator (the jobs are written before the study); someone removed them.
        this.log.error({ study_id: studyId }, 'study has no stored jobs; skipped');
        this.studies.delete(studyId);
        continue;
      }
      for (const job of submitted) {
        const id = job.job.job_id;
        const state = states.get(id);
        try {
          this.setJob(id, { rec: withState(job, state && safeJson(state.value)), rev: state?.revision ?? 0 });
        } catch {
          this.log.error({ job_id: id }, 'job state unreadable; skipped');
        }
      }
      if (study.job_ids.some((id) => !this.jobs.has(id)))
        this.log.error({ study_id: studyId }, 'study is missing jobs');
    }
    // A study whose last job ended just before a crash is closed on the first round.
    for (const id of this.studies.keys()) this.settled.add(id);
  }

  // ─── API ────────────────────────────────────────────────────────────────────────────────────────────────

  async submit(req: SubmitRequest): Promise<SubmitReply> {
    try {
      return await this.submitOnce(req);
    } catch (e) {
      if (e instanceof DuplicateSubmit) return e.reply;
      throw e;
    }
  }

  private async submitOnce(req: SubmitRequest): Promise<SubmitReply> {
    const keyId = req.idempotency_key ? createHash('sha256').update(req.idempotency_key).digest('hex') : null;
    if (keyId) {
      const seen = await this.idempotentReply(keyId);
      if (seen) return seen;
    }
    const image = req.image ?? this.image;
    if (!this.knownImages().has(image)) {
      throw new InputError('invalid submit request', [
        `image: unknown image ${JSON.stringify(image)}; known: ${[...this.knownImages()].join(', ')}`,
      ]);
    }
    const studyId = `s${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
    const now = Date.now();
    const sub = buildSubmission(req, { studyId, image, now, retry: this.retry });
    if (keyId) await this.claimKey(keyId, studyId);
    let rev: number;
    try {
      // The jobs first: the study record is what makes the submission exist.
      await putStudyJobs(this.resources, studyId, sub.jobs);
      rev = await this.resources.kv.studies.create(studyId, JSON.stringify(sub.study));
    } catch (e) {
      // Nothing was started: release the key so a retry can submit again.
      if (keyId) await this.resources.kv.idempotency.delete(keyId).catch(() => {});
      throw e;
    }
    this.studies.set(studyId, { rec: sub.study, rev });
    for (const job of sub.jobs) this.setJob(job.job.job_id, { rec: job, rev: 0 });
    this.kick();
    this.log.info(
      { study_id: studyId, name: sub.study.name, epochs: sub.study.epochs, jobs: sub.jobs.length },
      'study submitted',
    );
    this.event(studyId, { study_id: studyId, state: 'running' });
    return {
      study_id: studyId,
      name: sub.study.name,
      epochs: sub.study.epochs,
      jobs: sub.jobs.length,
      duplicate: false,
    };
  }

  /**
   * Claims an idempotency key for a new study. If another submit holds it, its answer is what counts (returned via
   * the thrown DuplicateSubmit); a claim whose study never appeared within 30 s (its coordinator died in between) is
   * taken over.
   */
  private async claimKey(keyId: string, studyId: string): Promise<void> {
    const claim = JSON.stringify({ study_id: studyId });
    try {
      await this.resources.kv.idempotency.create(keyId, claim);
      return;
    } catch {
      const seen = await this.idempotentReply(keyId, 5000);
      if (seen) throw new DuplicateSubmit(seen);
    }
    const entry = await this.resources.kv.idempotency.get(keyId);
    if (entry && Date.now() - entry.created.getTime() > 30_000) {
      await this.resources.kv.idempotency.update(keyId, claim, entry.revision);
      return;
    }
    throw new Error('this idempotency key belongs to a submit that has not finished; retry in a minute');
  }

  private async idempotentReply(keyId: string, waitMs = 0): Promise<SubmitReply | undefined> {
    const until = Date.now() + waitMs;
    for (;;) {
      const entry = await this.resources.kv.idempotency.get(keyId);
      const studyId = entry?.value.length
        ? (safeJson(entry.value) as { study_id?: string }).study_id
        : undefined;
      const study = studyId ? this.studies.get(studyId)?.rec : undefined;
      if (study) {
        return {
          study_id: study.study_id,
          name: study.name,
          epochs: study.epochs,
          jobs: study.job_ids.length,
          duplicate: true,
        };
      }
      if (Date.now() >= until) return undefined;
      await sleep(50);
    }
  }

  /** The coordinator's own image and every image a live worker holds. */
  private knownImages(): Set<string> {
    const known = new Set([this.image]);
    for (const w of this.workers.values()) for (const i of w.ad.images) known.add(i);
    return known;
  }

  status(studyId: string): StudyStatus {
    const study = this.requireStudy(studyId);
    return summarise(study, this.jobsOf(study));
  }

  list(limit: number): StudyStatus[] {
    return [...this.studies.values()]
      .map((e) => e.rec)
      .sort((a, b) => b.submitted_at - a.submitted_at)
      .slice(0, limit)
      .map((s) => summarise(s, this.jobsOf(s)));
  }

  async cancelStudy(studyId: string): Promise<StudyStatus> {
    const study = this.requireStudy(studyId);
    for (const id of study.job_ids) {
      await this.withJob(id, async (e) => {
        if (isTerminal(e.rec)) return;
        const running =
          e.rec.status === 'assigned' ? { worker: e.rec.worker_id!, attempt: e.rec.attempt } : null;
        await this.saveJob(id, e, cancel(e.rec, Date.now()));
        if (running) {
          this.nc.publish(
            subjects.cancel(running.worker),
            JSON.stringify({ job_id: id, attempt: running.attempt }),
          );
        }
      });
    }
    await this.saveStudy(studyId, { ...study, state: 'cancelled', finished_at: Date.now() });
    return this.status(studyId);
  }

  async results(studyId: string, offset: number, limit: number): Promise<ResultsReply> {
    const study = this.requireStudy(studyId);
    const rows: ResultRow[] = [];
    let index = 0;
    let total = 0;
    for (const job of this.jobsOf(study)) {
      if (job.status !== 'done' || !job.result) continue;
      const n = job.job.epochs.length;
      total += n;
      if (index + n <= offset || rows.length >= limit) {
        index += n;
        continue;
      }
      const output = await this.outputOf(job.job.job_id, job.result);
      job.job.epochs.forEach((e, i) => {
        if (index + i >= offset && rows.length < limit) {
          rows.push({ ...epochRow(e, output.results[i]!.result), worker_id: job.result!.worker_id });
        }
      });
      index += n;
    }
    const next = offset + rows.length;
    return { study_id: studyId, study: study.study, total, rows, next_offset: next < total ? next : null };
  }

  workerList(): (WorkerAd & { last_seen_ms_ago: number })[] {
    const now = Date.now();
    return [...this.workers.values()]
      .filter((w) => !this.isLost(w, now))
      .map((w) => ({ ...w.ad, last_seen_ms_ago: now - w.seenAt }));
  }

  private requireStudy(studyId: string): StudyRecord {
    const study = this.studies.get(studyId)?.rec;
    if (!study) throw new NotFoundError(`no study ${studyId}`);
    return study;
  }

  private jobsOf(study: StudyRecord): JobRecord[] {
    return study.job_ids.map((id) => this.jobs.get(id)?.rec).filter((r): r is JobRecord => r !== undefined);
  }

  // ─── scheduling ─────────────────────────────────────────────────────────────────────────────────────────

  private isLost(w: { ad: WorkerAd; seenAt: number }, now: number): boolean {
    return now - w.seenAt > w.ad.interval_ms * this.missedHeartbeats + 250;
  }

  /**
   * Asks for a scheduling round soon: on a timer, and whenever something changes (a submit, a finished attempt, a
   * new worker). Rounds never overlap; kicks during a round coalesce into one more round.
   */
  kick(): void {
    if (this.stopping) return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    this.ticking = this.tick()
      .catch((e) => this.log.error({ err: (e as Error).message }, 'scheduling round failed'))
      .finally(() => {
        this.ticking = undefined;
        if (this.again) {
          this.again = false;
          setImmediate(() => this.kick());
        }
      });
  }

  /** One scheduling round: expire, reclaim lost or expired attempts, place, and close finished studies. */
  async tick(): Promise<void> {
    if (this.stopping) return;
    const now = Date.now();
    const work: Promise<unknown>[] = [];
    // Queue timeouts need no precision: a sweep over the queue four times a second.
    if (now - this.lastExpirySweep >= 250) {
      this.lastExpirySweep = now;
      for (const id of this.queued) {
        const rec = this.jobs.get(id)!.rec;
        if (!this.inflight.has(id) && expireQueued(rec, now)) {
          work.push(this.withJob(id, (e) => this.saveJob(id, e, expireQueued(e.rec, now) ?? e.rec)));
        }
      }
    }
    const busy = new Map<string, number>();
    const graceOver = now - this.startedAt > 5_000;
    for (const [id, workerId] of this.inflight) {
      if (!this.assigned.has(id)) busy.set(workerId, (busy.get(workerId) ?? 0) + 1);
    }
    for (const id of this.assigned) {
      const rec = this.jobs.get(id)!.rec;
      const workerId = rec.worker_id!;
      busy.set(workerId, (busy.get(workerId) ?? 0) + 1);
      if (this.inflight.has(id)) continue;
      const w = this.workers.get(workerId);
      const lost = w ? this.isLost(w, now) : graceOver;
      if (lost) work.push(this.reclaim(id, rec.attempt, 'worker-lost', `no heartbeat from ${workerId}`));
      else if (rec.lease_until !== null && now > rec.lease_until) {
        work.push(this.reclaim(id, rec.attempt, 'lease-expired', 'lease expired before a result arrived'));
      } else if (w && this.assignmentLost(id, rec, w, now)) {
        work.push(
          this.reclaim(id, rec.attempt, 'worker-lost', `${workerId} does not run it (assignment lost)`),
        );
      }
    }
    // Capacity from our own records of what runs where, which are current; adverts can be a second old.
    const views: WorkerView[] = [];
    let free = 0;
    for (const w of this.workers.values()) {
      if (this.isLost(w, now)) continue;
      const slotsFree = w.ad.draining
        ? 0
        : fillableSlots(w.ad.slots, Math.max(0, w.ad.slots - (busy.get(w.ad.worker_id) ?? 0)));
      free += slotsFree;
      views.push({
        worker_id: w.ad.worker_id,
        executor: w.ad.executor,
        slots: w.ad.slots,
        slots_free: slotsFree,
        cpus: w.ad.cpus,
        memory_mb: w.ad.memory_mb,
        images: w.ad.images,
        price_per_cpu_s: w.ad.price_per_cpu_s,
        draining: w.ad.draining,
      });
    }
    if (free > 0) {
      const pending = this.candidates(now, free * 4);
      const perWorker = new Map<string, string[]>();
      for (const p of place(pending, views, now)) {
        const list = perWorker.get(p.worker_id) ?? [];
        list.push(p.job_id);
        perWorker.set(p.worker_id, list);
      }
      for (const [workerId, ids] of perWorker) work.push(this.dispatch(workerId, ids));
    }
    await Promise.all(work);
    await this.closeFinishedStudies();
  }

  /**
   * An attempt recorded as assigned that its (live) worker keeps leaving out of its adverts — the request never
   * reached it (a coordinator crash between recording and sending), or the worker restarted. Absence must last
   * several heartbeats after the assignment, so a result still on its way is not mistaken for a loss; if it is,
   * the cost is a rerun, and the late result is ignored as stale.
   */
  private assignmentLost(
    id: string,
    rec: JobRecord,
    w: { ad: WorkerAd; seenAt: number },
    now: number,
  ): boolean {
    const interval = w.ad.interval_ms;
    if (w.seenAt < rec.updated_at + interval + 500 || w.ad.running.includes(`${id}#${rec.attempt}`)) {
      this.absent.delete(id);
      return false;
    }
    const since = this.absent.get(id) ?? w.seenAt;
    this.absent.set(id, since);
    if (now - since < this.missedHeartbeats * interval + 1000) return false;
    this.absent.delete(id);
    return true;
  }

  /**
   * The first `limit` due jobs in queue order (priority, then age). The order is rebuilt only when a job (re)enters
   * the queue; in between a cursor skips what has left it, so a round costs what it places, not the queue's length.
   */
  private candidates(now: number, limit: number): PendingJob[] {
    if (this.queueDirty) {
      this.queueOrder = [...this.queued].sort((a, b) => {
        const x = this.jobs.get(a)!.rec;
        const y = this.jobs.get(b)!.rec;
        return y.job.priority - x.job.priority || x.enqueued_at - y.enqueued_at || (a < b ? -1 : 1);
      });
      this.queueHead = 0;
      this.queueDirty = false;
    }
    while (this.queueHead < this.queueOrder.length && !this.queued.has(this.queueOrder[this.queueHead]!)) {
      this.queueHead++;
    }
    const out: PendingJob[] = [];
    for (let i = this.queueHead; i < this.queueOrder.length && out.length < limit; i++) {
      const id = this.queueOrder[i]!;
      if (!this.queued.has(id) || this.inflight.has(id)) continue;
      const rec = this.jobs.get(id)!.rec;
      if (rec.not_before > now) continue;
      out.push({
        job_id: id,
        image: rec.job.image,
        limits: rec.job.limits,
        priority: rec.job.priority,
        enqueued_at: rec.enqueued_at,
        not_before: rec.not_before,
        avoid: workersToAvoid(rec),
      });
    }
    return out;
  }

  /** Stores a job's new state in memory and keeps the queue, running set and per-study counts in step. */
  private setJob(id: string, entry: Entry<JobRecord>): void {
    const prev = this.jobs.get(id)?.rec;
    const rec = entry.rec;
    this.jobs.set(id, entry);
    this.queued.delete(id);
    this.assigned.delete(id);
    if (rec.status === 'queued') {
      this.queued.add(id);
      if (prev?.status !== 'queued') this.queueDirty = true;
    } else if (rec.status === 'assigned') this.assigned.add(id);
    const study = rec.job.study_id;
    const wasLive = prev !== undefined && !isTerminal(prev);
    const isLive = !isTerminal(rec);
    if (isLive && !wasLive) this.live.set(study, (this.live.get(study) ?? 0) + 1);
    if (wasLive && !isLive) {
      this.live.set(study, (this.live.get(study) ?? 1) - 1);
      this.settled.add(study);
    }
  }

  private async reclaim(jobId: string, attempt: number, ended: AttemptEnd, reason: string): Promise<void> {
    await this.withJob(jobId, async (e) => {
      if (e.rec.status !== 'assigned' || e.rec.attempt !== attempt) return;
      this.log.warn({ job_id: jobId, attempt, worker_id: e.rec.worker_id, ended }, reason);
      await this.saveJob(jobId, e, endAttempt(e.rec, ended, reason, Date.now(), this.retry));
    });
  }

  /**
   * Records the leases, then asks the worker to take them in one request; a decline or silence puts a job straight
   * back in the queue (without using up an attempt). Results may arrive before the reply: the lease is already stored.
   */
  private async dispatch(workerId: string, jobIds: readonly string[]): Promise<void> {
    for (const id of jobIds) this.inflight.set(id, workerId);
    try {
      const leased = await Promise.all(
        jobIds.map((id) =>
          this.withJob(id, async (e) => {
            if (e.rec.status !== 'queued') return undefined;
            const lease = e.rec.job.limits.timeout_s * 1000 + this.leaseGraceMs;
            const next = assign(e.rec, workerId, Date.now(), lease);
            return (await this.saveJob(id, e, next)) ? next : undefined;
          }),
        ),
      );
      const assignments: Assignment[] = leased
        .filter((r): r is JobRecord => r !== undefined)
        .map((r) => ({ job: r.job, attempt: r.attempt, lease_until: r.lease_until! }));
      this.flushEvents(); // in the same socket write as the request

      for (const batch of byteBatches(assignments, MAX_ASSIGN_BYTES)) {
        const declined = new Map<string, string>();
        try {
          const msg = await this.nc.request(
            subjects.assign(workerId),
            encoder.encode(JSON.stringify({ assignments: batch } satisfies AssignRequest)),
            { timeout: this.assignTimeoutMs },
          );
          const reply = decode(msg.data, AssignReply, 'assign reply');
          const answered = new Map(reply.answers.map((a) => [`${a.job_id}#${a.attempt}`, a]));
          for (const a of batch) {
            const answer = answered.get(`${a.job.job_id}#${a.attempt}`);
            if (!answer?.accepted) declined.set(a.job.job_id, answer?.reason ?? 'no answer for this job');
          }
        } catch (err) {
          for (const a of batch) declined.set(a.job.job_id, `no answer: ${(err as Error).message}`);
        }
        await Promise.all(
          batch
            .filter((a) => declined.has(a.job.job_id))
            .map((a) =>
              this.withJob(a.job.job_id, async (cur) => {
                if (!isCurrentAttempt(cur.rec, a.attempt, workerId)) return;
                const reason = declined.get(a.job.job_id)!;
                await this.saveJob(
                  a.job.job_id,
                  cur,
                  endAttempt(cur.rec, 'declined', reason, Date.now(), this.retry),
                );
              }),
            ),
        );
        if (declined.size > 0) this.kick();
      }
    } finally {
      for (const id of jobIds) this.inflight.delete(id);
    }
  }

  /** Studies whose last live job just ended get their final state. */
  private async closeFinishedStudies(): Promise<void> {
    const settled = [...this.settled].filter((id) => (this.live.get(id) ?? 0) === 0);
    for (const id of settled) this.settled.delete(id);
    for (const id of settled) {
      const rec = this.studies.get(id)?.rec;
      if (rec?.state !== 'running') continue;
      const state = studyState(rec, this.jobsOf(rec));
      if (state === 'running') continue;
      await this.saveStudy(id, { ...rec, state, finished_at: Date.now() });
      this.log.info({ study_id: id, state }, 'study finished');
      this.event(id, { study_id: id, state });
    }
  }

  // ─── results ────────────────────────────────────────────────────────────────────────────────────────────

  private async consumeResults(): Promise<void> {
    const { jsm, js } = this.resources;
    await jsm.consumers
      .add(STREAMS.results, {
        durable_name: CONSUMER,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        // Handling takes milliseconds; after a crash, what was delivered but not acknowledged comes back this soon.
        ack_wait: 10_000_000_000,
        max_ack_pending: 2000,
      })
      .catch((e) => {
        if (!String(e.message).includes('already')) throw e;
      });
    const consumer = await js.consumers.get(STREAMS.results, CONSUMER);
    const messages = await consumer.consume({ max_messages: 500 });
    this.messages = messages;
    const inFlight = new Set<Promise<void>>();
    let unacked = 0;
    // Messages are handled a turn of the event loop at a time, and acknowledged together once their transitions are
    // stored: the writes they cause then leave in a few socket writes rather than several each, and on a small
    // virtual machine a socket write costs more CPU than checking a result.
    const handle = async (batch: JsMsg[]) => {
      const handled = await Promise.allSettled(batch.map((m) => this.onBatch(m)));
      this.flushEvents();
      handled.forEach((h, i) => {
        const m = batch[i]!;
        // Not acknowledged: redelivered after ack_wait, and handling is idempotent.
        if (h.status === 'fulfilled') m.ack();
        else this.log.error({ err: (h.reason as Error).message, seq: m.seq }, 'result not processed');
      });
    };
    let inbox: JsMsg[] = [];
    const flushInbox = () => {
      const batch = inbox;
      inbox = [];
      const p = handle(batch)
        .catch((e) => this.log.error({ err: (e as Error).message }, 'result acknowledgements failed'))
        .finally(() => {
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

  /**
   * Handles one batch of results. A batch whose signature does not verify cannot be attributed to the worker it
   * names, so it changes nothing (its attempts run on to their real result or their lease's end).
   */
  private async onBatch(m: JsMsg): Promise<void> {
    let batch: ResultBatch;
    try {
      batch = decode(m.data, ResultBatch, 'result batch');
    } catch (e) {
      this.log.warn(
        { seq: m.seq, subject: m.subject, issues: (e as InputError).issues },
        'malformed result batch ignored',
      );
      return;
    }
    if (!batchSigned(batch)) {
      this.log.warn({ seq: m.seq, worker_id: batch.worker_id }, 'result batch with a bad signature ignored');
      return;
    }
    await Promise.all(batch.results.map((r) => this.onResult(m.seq, batch.worker_id, r)));
    this.kick();
  }

  private async onResult(seq: number, workerId: string, result: JobResult): Promise<void> {
    if (!this.jobs.has(result.job_id)) return;
    await this.withJob(result.job_id, async (e) => {
      if (!isCurrentAttempt(e.rec, result.attempt, workerId)) return; // stale or duplicate
      let output: JobOutput | null = null;
      if (result.status === 'ok') output = await this.loadOutput(result).catch(() => null);
      const problem = verifyResult(e.rec.job, result, output);
      const now = Date.now();
      let next: JobRecord;
      if (problem) next = endAttempt(e.rec, 'rejected', problem, now, this.retry);
      else if (result.status === 'ok') {
        next = accept(
          e.rec,
          { seq, attempt: result.attempt, worker_id: workerId, output_digest: result.output_digest! },
          now,
        );
      } else next = endAttempt(e.rec, result.status, result.reason, now, this.retry);
      if (problem) this.log.warn({ job_id: result.job_id, worker_id: workerId, problem }, 'result rejected');
      if ((await this.saveJob(result.job_id, e, next)) && output && !problem)
        this.cacheOutput(result.job_id, output);
    });
  }

  private async loadOutput(result: JobResult): Promise<JobOutput> {
    if (result.results) return { job_id: result.job_id, results: result.results };
    if (!result.output_object) throw new Error('result has neither inline results nor an output object');
    const blob = await this.resources.outputs.getBlob(result.output_object);
    if (!blob) throw new Error(`output object ${result.output_object} is missing`);
    return JobOutputSchema.parse(JSON.parse(decoder.decode(blob)));
  }

  /** A done job's output: from the cache, else from its batch in the RESULTS stream. */
  private async outputOf(jobId: string, accepted: NonNullable<JobRecord['result']>): Promise<JobOutput> {
    const cached = this.outputs.get(jobId);
    if (cached) return cached;
    const msg = await this.resources.jsm.streams.getMessage(STREAMS.results, { seq: accepted.seq });
    if (!msg) throw new Error(`result ${accepted.seq} is missing from the ${STREAMS.results} stream`);
    const batch = decode(msg.data, ResultBatch, `result batch ${accepted.seq}`);
    const result = batch.results.find((r) => r.job_id === jobId && r.attempt === accepted.attempt);
    if (!result)
      throw new Error(`result batch ${accepted.seq} has no attempt ${accepted.attempt} of ${jobId}`);
    const output = await this.loadOutput(result);
    this.cacheOutput(jobId, output);
    return output;
  }

  private cacheOutput(jobId: string, output: JobOutput): void {
    if (this.outputs.size >= 5000) this.outputs.delete(this.outputs.keys().next().value!);
    this.outputs.set(jobId, output);
  }

  // ─── state ──────────────────────────────────────────────────────────────────────────────────────────────

  /** Serialises work on one job: transitions never interleave. */
  private withJob<T>(jobId: string, fn: (e: Entry<JobRecord>) => Promise<T>): Promise<T | undefined> {
    const prev = this.locks.get(jobId) ?? Promise.resolve();
    const next = prev.then(async () => {
      const e = this.jobs.get(jobId);
      return e ? fn(e) : undefined;
    });
    const tail = next.catch(() => {});
    this.locks.set(jobId, tail);
    void tail.then(() => {
      if (this.locks.get(jobId) === tail) this.locks.delete(jobId);
    });
    return next;
  }

  /**
   * Compare-and-set on the job's revision (a job's first write creates its entry, so it fails if another wrote
   * first); on a conflict the stored record wins and is reloaded.
   */
  private async saveJob(jobId: string, e: Entry<JobRecord>, next: JobRecord): Promise<boolean> {
    if (next === e.rec) return true;
    try {
      const { jobs } = this.resources.kv;
      const rev = await (e.rev === 0
        ? jobs.create(jobId, stateJson(next))
        : jobs.update(jobId, stateJson(next), e.rev));
      this.setJob(jobId, { rec: next, rev });
      if (next.status !== e.rec.status) this.jobEvent(next);
      return true;
    } catch (err) {
      this.log.warn(
        { job_id: jobId, err: (err as Error).message },
        'job record changed underneath; reloading',
      );
      const entry = await this.resources.kv.jobs.get(jobId);
      if (entry) this.setJob(jobId, { rec: withState(e.rec, safeJson(entry.value)), rev: entry.revision });
      return false;
    }
  }

  private async saveStudy(studyId: string, next: StudyRecord): Promise<void> {
    const e = this.studies.get(studyId)!;
    try {
      const rev = await this.resources.kv.studies.update(studyId, JSON.stringify(next), e.rev);
      this.studies.set(studyId, { rec: next, rev });
    } catch {
      const entry = await this.resources.kv.studies.get(studyId);
      if (entry)
        this.studies.set(studyId, { rec: StudyRecord.parse(safeJson(entry.value)), rev: entry.revision });
    }
  }

  /** Queues a job's transition; the transitions of one turn of the event loop go out as one message per study. */
  private jobEvent(rec: JobRecord): void {
    const ev: JobEvent = {
      job_id: rec.job.job_id,
      status: rec.status,
      attempt: rec.attempt,
      worker_id: rec.worker_id,
      epochs: rec.job.epochs.length,
      reason: rec.history.at(-1)?.reason ?? null,
      at: Date.now(),
    };
    // Flushed with the writes of the batch that caused them (see flushEvents calls), else on the next turn.
    if (this.pendingEvents.size === 0) setImmediate(() => this.flushEvents());
    const list = this.pendingEvents.get(rec.job.study_id);
    if (list) list.push(ev);
    else this.pendingEvents.set(rec.job.study_id, [ev]);
  }

  private flushEvents(): void {
    for (const [studyId, events] of this.pendingEvents) {
      try {
        this.nc.publish(
          subjects.jobEvents(studyId),
          JSON.stringify({ study_id: studyId, events } satisfies JobEvents),
        );
      } catch {
        // The connection is closing: events are a live feed, and the job states they announce are stored.
      }
    }
    this.pendingEvents.clear();
  }

  private event(studyId: string, body: Record<string, unknown>): void {
    this.nc.publish(subjects.studyEvents(studyId), JSON.stringify({ ...body, at: Date.now() }));
  }
}

/** Internal: a repeated idempotency key, answered with the first submit's reply. */
class DuplicateSubmit extends Error {
  readonly reply: SubmitReply;
  constructor(reply: SubmitReply) {
    super('duplicate submit');
    this.reply = reply;
  }
}

export class NotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotFoundError';
  }
}

async function loadAll(kv: KV): Promise<Map<string, { value: Uint8Array; revision: number }>> {
  const out = new Map<string, { value: Uint8Array; revision: number }>();
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  await Promise.all(
    keys.map(async (k) => {
      const e = await kv.get(k);
      if (e && e.operation === 'PUT') out.set(k, { value: e.value, revision: e.revision });
    }),
  );
  return out;
}

function safeJson(data: Uint8Array | string): unknown {
  try {
    return JSON.parse(typeof data === 'string' ? data : decoder.decode(data));
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
