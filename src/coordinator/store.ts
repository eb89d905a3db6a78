import type { Logger } from 'pino';
import type { JobRecord } from '../models/job-record.ts';
import { StoredJobState } from '../models/job-record.ts';
import { jobIdsOf, StoredStudyRecord, type StudyRecord } from '../models/study-record.ts';
import { BUCKETS, type Resources } from '../transport/resources.ts';
import { type CasOps, compareAndSet, StoreWriteError } from './cas.ts';
import type { Clock } from './clock.ts';
import { type JobClass, JobIndexes } from './indexes.ts';
import { isTerminal } from './job-state.ts';
import { jobKey, putStudyJobs, stateJson } from './jobspecs.ts';
import { type Entry, moveLegacyStates, readState, removeOrphans } from './load.ts';

/** A change the store committed (or found committed by someone else): what the rest of the coordinator reacts to. */
export type Commit =
  | { kind: 'job'; id: string; before: JobRecord; after: JobRecord }
  | { kind: 'study'; id: string; before: StudyRecord | undefined; after: StudyRecord };

type StoreResources = Pick<Resources, 'jsm' | 'jobspecs'> & { kv: Pick<Resources['kv'], 'jobs' | 'studies'> };

/**
 * The coordinator's state: the only writer of the `jobs` and `studies` buckets (and of `jobspecs`). It holds every
 * live record with its KV revision and the indexes derived from them (queue order, assigned jobs, live jobs per
 * study). `update(id, fn)` is serialised per record and compare-and-sets on the revision; on a conflict it reloads
 * the record and applies `fn` again, so a transition is never dropped. Every committed change goes out on `onCommit`:
 * events, study closing and scheduling follow from commits, never ride along on a save.
 */
export class StateStore {
  private readonly jobs = new Map<string, Entry<JobRecord>>();
  private readonly studies = new Map<string, Entry<StudyRecord>>();
  private readonly index = new JobIndexes();
  /** Studies not closed yet, and closed ones not archived yet: what the sweeps look at, not every study ever. */
  private readonly open = new Set<string>();
  private readonly toArchive = new Set<string>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly listeners: ((c: Commit) => void)[] = [];
  private readonly r: StoreResources;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly fence: () => void;

  /** `fence` throws when this coordinator may no longer write (a standby took over: leadership.ts). */
  constructor(resources: StoreResources, clock: Clock, log: Logger, fence: () => void = () => {}) {
    this.r = resources;
    this.clock = clock;
    this.log = log;
    this.fence = fence;
  }

  // ─── reads ──────────────────────────────────────────────────────────────────────────────────────────────

  job(id: string): JobRecord | undefined {
    return this.jobs.get(id)?.rec;
  }
  study(id: string): StudyRecord | undefined {
    return this.studies.get(id)?.rec;
  }
  allStudies(): IterableIterator<StudyRecord> {
    return Array.from(this.studies.values(), (e) => e.rec)[Symbol.iterator]();
  }
  /** Studies without a summary yet (running, or ended but not closed). */
  openStudies(): StudyRecord[] {
    return [...this.open].map((id) => this.studies.get(id)!.rec);
  }
  /** Closed studies not archived yet. */
  unarchivedStudies(): StudyRecord[] {
    return [...this.toArchive].map((id) => this.studies.get(id)!.rec);
  }
  /** The jobs of a live study (an archived study's are in its jobspecs object; see `archivedJobs`). */
  jobsOf(study: StudyRecord): JobRecord[] {
    return jobIdsOf(study)
      .map((id) => this.jobs.get(id)?.rec)
      .filter((r): r is JobRecord => r !== undefined);
  }
  /** Jobs of a study not yet terminal. */
  liveJobs(studyId: string): number {
    return this.index.liveJobs(studyId);
  }
  /** Epochs of every job not yet terminal (what a submit's live limit counts). */
  liveEpochs(): number {
    return this.index.liveEpochs;
  }
  running(): ReadonlySet<string> {
    return this.index.running;
  }
  /** Public-goods jobs with a live execution: what paid work may preempt. */
  runningCommons(): ReadonlySet<string> {
    return this.index.runningCommons;
  }
  /** Jobs held in memory. */
  size(): { jobs: number; studies: number } {
    return { jobs: this.jobs.size, studies: this.studies.size };
  }

  /** How many queued jobs have a queue deadline. */
  queuedWithDeadline(): number {
    return this.index.queuedWithDeadline();
  }
  /** Queued jobs of a class in queue order (priority, then age); without one, paid work then public goods. */
  *queue(cls?: JobClass): Generator<JobRecord> {
    const get = (id: string) => this.jobs.get(id)!.rec;
    if (cls) {
      yield* this.index.queue(get, cls);
      return;
    }
    yield* this.index.queue(get, 'paid');
    yield* this.index.queue(get, 'commons');
  }
  queueSize(cls: JobClass): number {
    return this.index.queueSize(cls);
  }

  onCommit(fn: (c: Commit) => void): () => void {
    this.listeners.push(fn);
    return () => {
      const i = this.listeners.indexOf(fn);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  // ─── writes ─────────────────────────────────────────────────────────────────────────────────────────────

  /**
   * Applies `fn` to a job's record and stores the result (unless `fn` returns the record unchanged). Serialised per
   * job; on a revision conflict the stored record is reloaded and `fn` applied again. Resolves with the record as
   * now stored, or undefined for a job the store does not hold (unknown, or its study archived). Rejects with a
   * StoreWriteError when the write fails otherwise: the change did not happen (as far as anyone may assume).
   */
  update(jobId: string, fn: (rec: JobRecord) => JobRecord): Promise<JobRecord | undefined> {
    const { jobs } = this.r.kv;
    return this.casUpdate(`job ${jobId}`, fn, {
      get: () => this.jobs.get(jobId),
      write: (next, rev) =>
        rev === 0
          ? jobs.create(jobKey(next), stateJson(next))
          : jobs.update(jobKey(next), stateJson(next), rev),
      reload: async () => {
        this.log.warn({ job_id: jobId }, 'job record changed underneath; reloading and applying again');
        await this.reloadJob(jobId);
        return true;
      },
      set: (e) => this.setJob(jobId, e),
    });
  }

  /** As `update`, for a study record. */
  updateStudy(studyId: string, fn: (rec: StudyRecord) => StudyRecord): Promise<StudyRecord | undefined> {
    const { studies } = this.r.kv;
    return this.casUpdate(`study ${studyId}`, fn, {
      get: () => this.studies.get(studyId),
      write: (next, rev) => studies.update(studyId, JSON.stringify(next), rev),
      reload: async () => {
        const entry = await studies.get(studyId);
        if (entry?.operation !== 'PUT') return false;
        this.setStudy(studyId, {
          rec: StoredStudyRecord.parse(JSON.parse(entry.string())),
          rev: entry.revision,
        });
        return true;
      },
      set: (e) => this.setStudy(studyId, e),
    });
  }

  /** Serialised per record: its transitions never interleave. */
  private casUpdate<T>(what: string, fn: (rec: T) => T, ops: CasOps<T>): Promise<T | undefined> {
    return this.serial(what, () =>
      compareAndSet(what, fn, {
        ...ops,
        write: (next, rev) => {
          this.fence();
          return ops.write(next, rev);
        },
      }),
    );
  }

  /**
   * Stores a new study: its jobs first (one object), then the record that makes the submission exist. If the record
   * cannot be written, the object is removed again, so nothing is left behind.
   */
  async createStudy(study: StudyRecord, jobs: readonly JobRecord[]): Promise<void> {
    this.fence();
    await putStudyJobs(this.r, study.study_id, jobs);
    let rev: number;
    try {
      rev = await this.r.kv.studies.create(study.study_id, JSON.stringify(study));
    } catch (err) {
      await this.r.jobspecs.delete(study.study_id).catch((e) => {
        this.log.warn(
          { study_id: study.study_id, err: (e as Error).message },
          'orphaned jobspecs object left',
        );
      });
      throw new StoreWriteError(`study ${study.study_id} not stored`, { cause: err });
    }
    for (const job of jobs) this.setJob(job.job.job_id, { rec: job, rev: 0 }, false);
    this.setStudy(study.study_id, { rec: study, rev });
  }

  /**
   * A finished study leaves the live state: its final job records replace its jobspecs object, its record is marked
   * archived, then its job states are purged from KV and dropped from memory. Each step is safe to repeat, and `load`
   * finishes one a crash interrupted.
   */
  async archive(studyId: string): Promise<void> {
    const entry = this.studies.get(studyId);
    if (!entry || entry.rec.archived) return;
    const jobs = this.jobsOf(entry.rec);
    if (jobs.some((j) => !isTerminal(j))) throw new Error(`study ${studyId} still has live jobs`);
    await putStudyJobs(this.r, studyId, jobs);
    const done = await this.updateStudy(studyId, (rec) => ({ ...rec, archived: true }));
    if (!done?.archived) return;
    await this.purgeJobStates(studyId);
    for (const id of jobIdsOf(done)) this.jobs.delete(id);
    this.index.dropStudy(studyId);
  }

  private purgeJobStates(studyId: string) {
    return this.r.jsm.streams.purge(`KV_${BUCKETS.jobs}`, { filter: `$KV.${BUCKETS.jobs}.${studyId}.>` });
  }

  // ─── loading ────────────────────────────────────────────────────────────────────────────────────────────

  /**
   * Loads every study record and, for live studies, their jobs with their stored states (see `readState`), then
   * finishes what a crash interrupted: states of an archived study are purged, jobspecs objects without a study are
   * removed.
   */
  async load(): Promise<{ studies: number; live: number; jobs: number }> {
    const loaded = await readState(this.r, this.log);
    await moveLegacyStates(this.r.kv.jobs, loaded);
    for (const [id, e] of loaded.studies) {
      this.studies.set(id, e);
      this.indexStudy(id, e.rec);
    }
    for (const [id, e] of loaded.jobs) this.setJob(id, e, false);
    for (const studyId of loaded.stale) await this.purgeJobStates(studyId);
    await removeOrphans(this.r, loaded.stored, this.clock.now(), this.log);
    return { studies: this.studies.size, live: loaded.live, jobs: this.jobs.size };
  }

  private async reloadJob(jobId: string): Promise<void> {
    const e = this.jobs.get(jobId)!;
    const entry = await this.r.kv.jobs.get(jobKey(e.rec));
    if (entry?.operation !== 'PUT') {
      this.setJob(jobId, { rec: e.rec, rev: 0 });
      return;
    }
    const state = StoredJobState.parse(JSON.parse(entry.string()));
    this.setJob(jobId, { rec: { ...state, job: e.rec.job }, rev: entry.revision });
  }

  // ─── indexes ────────────────────────────────────────────────────────────────────────────────────────────

  private setJob(id: string, entry: Entry<JobRecord>, announce = true): void {
    const before = this.jobs.get(id)?.rec;
    const rec = entry.rec;
    this.jobs.set(id, entry);
    this.index.apply(id, before, rec);
    if (announce && before && before !== rec) this.emit({ kind: 'job', id, before, after: rec });
  }

  private setStudy(id: string, entry: Entry<StudyRecord>): void {
    const before = this.studies.get(id)?.rec;
    this.studies.set(id, entry);
    this.indexStudy(id, entry.rec);
    if (before !== entry.rec) this.emit({ kind: 'study', id, before, after: entry.rec });
  }

  private indexStudy(id: string, rec: StudyRecord): void {
    this.open.delete(id);
    this.toArchive.delete(id);
    if (!rec.summary) this.open.add(id);
    else if (!rec.archived) this.toArchive.add(id);
  }

  private emit(c: Commit): void {
    for (const fn of this.listeners) {
      try {
        fn(c);
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'commit listener failed');
      }
    }
  }

  /** Serialises work on one record: its transitions never interleave. */
  private serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const next = prev.then(fn);
    const tail = next.catch(() => {});
    this.locks.set(key, tail);
    void tail.then(() => {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    });
    return next;
  }

  /** Resolves once every write under way has settled. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.locks.values()]);
  }
}
