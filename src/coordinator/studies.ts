import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { sim } from '../ledger/accounts.ts';
import type { Bank } from '../ledger/bank.ts';
import {
  claimsOf,
  type JobProvenance,
  type ProvenanceReply,
  type RequestAuth,
  type ResultBatch,
  type ResultRow,
  type ResultsReply,
  type StudyStatus,
  type SubmitReply,
  type SubmitRequest,
  type WorkersReply,
} from '../models/api.ts';
import { InputError } from '../models/errors.ts';
import type { Execution, JobRecord } from '../models/job-record.ts';

type Signed = JobProvenance['executions'][number]['signed'];

import { AuthError, NonceGuard, verifyRequest } from '../ledger/signed.ts';
import type { StudyRecord } from '../models/study-record.ts';
import { epochRow } from '../study/aggregate.ts';
import type { Resources } from '../transport/resources.ts';
import type { Clock } from './clock.ts';
import { ConflictError, ForbiddenError, NotFoundError } from './errors.ts';
import type { StudyFunds } from './funds.ts';
import { IdempotencyKeys } from './idempotency.ts';
import type { Intake } from './intake-pool.ts';
import { cancel, isTerminal, type RetryPolicy } from './job-state.ts';
import { getStudyJobs } from './jobspecs.ts';
import type { Outputs } from './outputs.ts';
import { studyState, summarise } from './status.ts';
import type { Commit, StateStore } from './store.ts';
import type { WorkerRegistry } from './workers.ts';

/** What the API service serves (service.ts); the coordinator's StudyService implements it. */
export interface StudyApi {
  /** `raw` is the request as it arrived (what a payer's signature covers), when it differs from `req` parsed. */
  /** `requester`: who reads the reply (permissions.ts `inboxOwner`), null when unknown. */
  submit(req: SubmitRequest, raw?: unknown, requester?: string | null): Promise<SubmitReply>;
  status(studyId: string, reader?: string | null): StudyStatus;
  /** The studies `reader` may see (its own and those nobody owns), newest first. */
  list(limit: number, reader?: string | null): StudyStatus[];
  /** `auth`: signed by the study's owner, for action `cancel` and body `{study_id}`. */
  cancel(studyId: string, auth?: RequestAuth): Promise<StudyStatus>;
  results(studyId: string, offset: number, limit: number, reader?: string | null): Promise<ResultsReply>;
  provenance(
    studyId: string,
    offset: number,
    limit: number,
    signatures?: boolean,
    reader?: string | null,
  ): Promise<ProvenanceReply>;
  workers(limit: number): z.infer<typeof WorkersReply>['workers'];
}

export interface StudyServiceDeps {
  resources: Pick<Resources, 'kv' | 'jobspecs'>;
  store: StateStore;
  registry: WorkerRegistry;
  outputs: Outputs;
  intake: Intake;
  clock: Clock;
  image: string;
  retry: RetryPolicy;
  /** Epochs of live studies the coordinator holds at most: what bounds its memory and its restart. */
  maxLiveEpochs: number;
  /** Paying studies' escrow as placement sees it. */
  funds?: StudyFunds;
  /** The ledger's front desk: a study with a budget escrows it at submit (none: budgets are refused). */
  bank?: Bank;
  log: Logger;
}

/** Archived studies' job records kept for result pages (one study's worth each). */
const ARCHIVE_CACHE = 4;
/** Job writes a cancel has in flight at once. */
const CANCEL_WRITES = 256;
/** A finished study stays in memory this long (its results are often read right away), then is archived. */
export const ARCHIVE_AFTER_MS = 10_000;

/**
 * The study API: submit (expansion off the main thread, idempotency keys, the live limit), status, list, cancel and
 * results; and closing, a reaction to the commit that ends a study's last live job. A closed study is archived by
 * the store, so what stays in memory is bounded by the live studies.
 */
export class StudyService implements StudyApi {
  private readonly keys: IdempotencyKeys;
  private readonly archived = new Map<string, Promise<JobRecord[]>>();
  private readonly closing = new Map<string, Promise<void>>();
  private readonly holds = new Map<string, Promise<unknown>>();
  private archiving: Promise<void> | undefined;
  private readonly d: StudyServiceDeps;
  /** Nonces of signed submits without a budget and of signed cancels (the bank guards those that move SIM). */
  private readonly nonces = new NonceGuard();

  constructor(deps: StudyServiceDeps) {
    this.d = deps;
    this.keys = new IdempotencyKeys(deps.resources.kv.idempotency, deps.clock, (id) => this.replyFor(id));
  }

  async submit(
    req: SubmitRequest,
    raw: unknown = req,
    requester: string | null = null,
  ): Promise<SubmitReply> {
    const { store, clock, log } = this.d;
    const budget = req.budget === undefined ? 0 : sim(req.budget);
    if (req.public_good && !this.d.bank)
      throw new InputError('invalid submit request', [
        'public_good: this coordinator keeps no ledger to fund it',
      ]);
    if (budget > 0 && !this.d.bank)
      throw new InputError('invalid submit request', ['budget: this coordinator keeps no ledger']);
    // A signature makes its key the owner: it must check out even when no SIM moves (the escrow checks its own).
    if (req.auth && budget === 0) {
      const { auth: _auth, ...body } = raw as Record<string, unknown>;
      verifyRequest({ ...req.auth, action: 'submit', body }, 'submit', clock.now(), this.nonces);
    }
    const owner = req.auth?.key ?? (requester === ANONYMOUS ? null : requester);
    const key = req.idempotency_key ? createHash('sha256').update(req.idempotency_key).digest('hex') : null;
    if (key) {
      const seen = await this.keys.reply(key);
      if (seen) return seen;
    }
    const image = req.image ?? this.d.image;
    const known = new Set([this.d.image, ...this.d.registry.images()]);
    if (!known.has(image)) {
      throw new InputError('invalid submit request', [
        `image: unknown image ${JSON.stringify(image)}; known: ${[...known].join(', ')}`,
      ]);
    }
    const now = clock.now();
    const studyId = `s${now.toString(36)}${randomBytes(4).toString('hex')}`;
    const built = await this.d.intake.build(req, { studyId, image, now, retry: this.d.retry, budget });
    const sub = { ...built, study: { ...built.study, owner } };
    const live = store.liveEpochs();
    if (live + sub.study.epochs > this.d.maxLiveEpochs) {
      throw new ConflictError(
        `the coordinator holds ${live} epochs of live studies and takes at most ${this.d.maxLiveEpochs}; ` +
          'submit again when some have finished',
      );
    }
    if (key) {
      const seen = await this.keys.claim(key, studyId);
      if (seen) return seen;
    }
    if (budget > 0) {
      // The escrow comes first: a study that exists is paid for. Its op id is the signed request's, so the same
      // signed submit escrows once, ever.
      const { auth, ...body } = raw as Record<string, unknown>;
      try {
        // A public good's budget is its submitter's first contribution (counted by the funding rounds like any).
        if (req.public_good) await this.d.bank!.contribute(studyId, req.auth!, body, budget);
        else await this.d.bank!.escrow(studyId, req.auth!, body, budget);
      } catch (e) {
        if (key) await this.keys.release(key);
        throw e;
      }
    }
    try {
      await store.createStudy(sub.study, sub.jobs);
    } catch (e) {
      if (key) await this.keys.release(key); // nothing was started: a retry may submit again
      if (budget > 0)
        await this.d
          .bank!.refund(studyId, req.auth!.key)
          .catch((err) =>
            log.error(
              { study_id: studyId, err: (err as Error).message },
              'escrow of a study not created not refunded',
            ),
          );
      throw e;
    }
    log.info({ study_id: studyId, epochs: sub.study.epochs, jobs: sub.jobs.length }, 'study submitted');
    return {
      study_id: studyId,
      name: sub.study.name,
      epochs: sub.study.epochs,
      jobs: sub.jobs.length,
      duplicate: false,
    };
  }

  private replyFor(studyId: string): SubmitReply | undefined {
    const s = this.d.store.study(studyId);
    return s && { study_id: s.study_id, name: s.name, epochs: s.epochs, jobs: s.jobs, duplicate: true };
  }

  status(studyId: string, reader: string | null = null): StudyStatus {
    const study = this.readable(studyId, reader);
    return summarise(study, this.d.store.jobsOf(study), this.extras(studyId));
  }

  private extras(studyId: string) {
    return { funds: this.d.funds?.of(studyId) ?? null, waiting: this.d.funds?.waiting(studyId) ?? null };
  }

  list(limit: number, reader: string | null = null): StudyStatus[] {
    return [...this.d.store.allStudies()]
      .filter((s) => mayRead(s, reader))
      .sort((a, b) => b.submitted_at - a.submitted_at)
      .slice(0, limit)
      .map((s) => summarise(s, this.d.store.jobsOf(s), this.extras(s.study_id)));
  }

  /**
   * Marks the study cancelled, then cancels its live jobs (a bounded number of writes at a time, so a large study
   * does not flood the bus), then closes it. The mark comes first, so a study whose last job ends during the cancel
   * closes as cancelled. A study that has already ended is left as it is.
   */
  async cancel(studyId: string, auth?: RequestAuth): Promise<StudyStatus> {
    const { store, clock } = this.d;
    const study = this.require(studyId);
    if (study.owner !== null) {
      if (!auth)
        throw new AuthError('malformed', `cancelling ${studyId} takes a request signed by its owner`);
      const ok = verifyRequest(
        { ...auth, action: 'cancel', body: { study_id: studyId } },
        'cancel',
        clock.now(),
        this.nonces,
      );
      if (ok.key !== study.owner) throw new ForbiddenError(`${studyId} belongs to someone else`);
    }
    if (study.state !== 'running') return this.status(studyId);
    await store.updateStudy(studyId, (r) => (r.state === 'running' ? { ...r, state: 'cancelled' } : r));
    const live = store.jobsOf(study).filter((j) => !isTerminal(j));
    for (let i = 0; i < live.length; i += CANCEL_WRITES) {
      await Promise.all(
        live
          .slice(i, i + CANCEL_WRITES)
          .map((j) => store.update(j.job.job_id, (r) => cancel(r, clock.now()))),
      );
    }
    await this.close(studyId);
    return this.status(studyId);
  }

  /** Per job, who ran it, what each provider returned and the verdict (jobs in submit order, paged). */
  async provenance(
    studyId: string,
    offset: number,
    limit: number,
    signatures = false,
    reader: string | null = null,
  ): Promise<ProvenanceReply> {
    const study = this.readable(studyId, reader);
    const jobs = study.archived ? await this.archivedJobs(study) : this.d.store.jobsOf(study);
    // A batch holds several results: each is read once per page.
    const batches = new Map<number, Promise<ResultBatch>>();
    const evidence = async (e: Execution): Promise<Signed> => {
      if (!signatures || e.ended !== 'ok' || e.seq === null) return null;
      let batch = batches.get(e.seq);
      if (!batch) {
        batch = this.d.outputs.batchAt(e.seq);
        batches.set(e.seq, batch);
      }
      const b = await batch;
      return { claims: claimsOf(b.results), signature: b.signature };
    };
    const page = await Promise.all(
      jobs.slice(offset, offset + limit).map(async (j) => ({
        job_id: j.job.job_id,
        status: j.status,
        epoch_ids: j.job.epochs.map((e) => e.epoch_id),
        quorum: j.quorum,
        accepted: j.result && { output_digest: j.result.output_digest, agreed: j.result.agreed },
        executions: await Promise.all(
          j.executions.map(async (e) => ({
            attempt: e.attempt,
            worker_id: e.worker_id,
            output_digest: e.output_digest,
            seq: e.seq,
            ended: e.ended,
            verdict: e.verdict,
            reason: e.reason,
            pay: e.pay,
            signed: await evidence(e),
          })),
        ),
      })),
    );
    const next = offset + page.length;
    return {
      study_id: studyId,
      total: jobs.length,
      jobs: page,
      next_offset: next < jobs.length ? next : null,
    };
  }

  async results(
    studyId: string,
    offset: number,
    limit: number,
    reader: string | null = null,
  ): Promise<ResultsReply> {
    const study = this.readable(studyId, reader);
    const jobs = study.archived ? await this.archivedJobs(study) : this.d.store.jobsOf(study);
    const rows: ResultRow[] = [];
    let index = 0;
    let total = 0;
    for (const job of jobs) {
      if (job.status !== 'done' || !job.result) continue;
      const n = job.job.epochs.length;
      total += n;
      if (index + n <= offset || rows.length >= limit) {
        index += n;
        continue;
      }
      const output = await this.d.outputs.accepted(job.job.job_id, job.result);
      job.job.epochs.forEach((e, i) => {
        if (index + i >= offset && rows.length < limit)
          rows.push({ ...epochRow(e, output.results[i]!.result), worker_id: job.result!.worker_id });
      });
      index += n;
    }
    const next = offset + rows.length;
    return {
      study_id: studyId,
      study: offset === 0 ? study.study : null,
      total,
      rows,
      next_offset: next < total ? next : null,
    };
  }

  workers(limit: number): z.infer<typeof WorkersReply>['workers'] {
    return this.d.registry
      .live()
      .slice(0, limit)
      .map(({ ad, ago }) => ({ ...ad, last_seen_ms_ago: ago }));
  }

  private require(studyId: string): StudyRecord {
    const study = this.d.store.study(studyId);
    if (!study) throw new NotFoundError(`no study ${studyId}`);
    return study;
  }

  /** The study, when `reader` may read it. */
  private readable(studyId: string, reader: string | null): StudyRecord {
    const study = this.require(studyId);
    if (!mayRead(study, reader)) throw new ForbiddenError(`${studyId} belongs to someone else`);
    return study;
  }

  private archivedJobs(study: StudyRecord): Promise<JobRecord[]> {
    let jobs = this.archived.get(study.study_id);
    if (!jobs) {
      jobs = getStudyJobs(this.d.resources, study.study_id).then((j) => j ?? []);
      jobs.catch(() => this.archived.delete(study.study_id));
      if (this.archived.size >= ARCHIVE_CACHE) this.archived.delete(this.archived.keys().next().value!);
      this.archived.set(study.study_id, jobs);
    }
    return jobs;
  }

  /** Closes a study whose last live job just ended (a reaction to that commit, at the end of its turn). */
  readonly onCommit = (c: Commit): void => {
    if (c.kind !== 'job' || isTerminal(c.before) || !isTerminal(c.after)) return;
    const studyId = c.after.job.study_id;
    // After this turn: the job events of the turn go out first, not queued behind the study record's write.
    if (this.d.store.liveJobs(studyId) === 0) setImmediate(() => void this.close(studyId));
  };

  /**
   * Gives a study whose jobs have all ended its final state and summary (one write: a client following it hears at
   * once). Idempotent, one at a time per study; the reconciler calls it too, for a study a crash left open.
   */
  close(studyId: string): Promise<void> {
    const running = this.closing.get(studyId);
    if (running) return running;
    const p = this.closeOnce(studyId)
      .catch((e) =>
        this.d.log.error({ study_id: studyId, err: (e as Error).message }, 'study not closed; will retry'),
      )
      .finally(() => this.closing.delete(studyId));
    this.closing.set(studyId, p);
    return p;
  }

  /**
   * Keeps a study from closing until `change` is stored: a job of it about to be reopened (re-verification) must not
   * find its study closed under it.
   */
  holdOpen(studyId: string, change: Promise<unknown>): void {
    const held = (this.holds.get(studyId) ?? Promise.resolve()).then(() => change.catch(() => {}));
    this.holds.set(studyId, held);
    void held.then(() => {
      if (this.holds.get(studyId) === held) this.holds.delete(studyId);
    });
  }

  private async closeOnce(studyId: string): Promise<void> {
    const { store, clock, log } = this.d;
    await this.holds.get(studyId);
    const rec = store.study(studyId);
    if (!rec || rec.summary || store.liveJobs(studyId) > 0) return;
    const jobs = store.jobsOf(rec);
    const closed = await store.updateStudy(studyId, (cur) => {
      if (cur.summary) return cur;
      const finished = { ...cur, state: studyState(cur, jobs), finished_at: cur.finished_at ?? clock.now() };
      return { ...finished, summary: summarise(finished, jobs) };
    });
    log.info({ study_id: studyId, state: closed?.state }, 'study finished');
  }

  /**
   * Archives studies that finished at least `ARCHIVE_AFTER_MS` ago, one after another: housekeeping kept off the path
   * of the results that close a study (and of a client reading them right after).
   */
  archiveFinished(): Promise<void> {
    this.archiving ??= (async () => {
      const { store, clock, log } = this.d;
      const due = store
        .unarchivedStudies()
        .filter((s) => (s.finished_at ?? 0) <= clock.now() - ARCHIVE_AFTER_MS);
      for (const s of due) {
        await store.archive(s.study_id).catch((e) => {
          log.warn({ study_id: s.study_id, err: (e as Error).message }, 'study not archived yet; will retry');
        });
      }
    })().finally(() => {
      this.archiving = undefined;
    });
    return this.archiving;
  }

  /** Resolves once no close or archiving is under way. */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.closing.values(), this.archiving]);
  }
}

/** A reader on an authenticated bus whose inbox names no key: it may read only what nobody owns. */
export const ANONYMOUS = 'anonymous';

/**
 * Whether a reply about `study` may go to `reader`: anyone for a public good, else the owner's key, or anyone for a
 * study nobody owns; null is a bus without authentication, where nobody can be told apart and nothing is checked.
 */
function mayRead(study: StudyRecord, reader: string | null): boolean {
  return study.public_good !== null || study.owner === null || reader === null || reader === study.owner;
}
