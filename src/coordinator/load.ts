import type { Logger } from 'pino';
import { type JobRecord, StoredJobState } from '../models/job-record.ts';
import { StoredStudyRecord, type StudyRecord } from '../models/study-record.ts';
import type { Resources } from '../transport/resources.ts';
import { fetchStudyJobs, jobKey, parseStudyJobs, stateJson } from './jobspecs.ts';
import { readAll, safeJson } from './kv-read.ts';

export interface Entry<T> {
  rec: T;
  /** KV revision; 0 for a job whose state has not been written yet (it is still as submitted). */
  rev: number;
}

export interface LoadedState {
  studies: Map<string, Entry<StudyRecord>>;
  /** Every study the `studies` bucket names, readable or not: a jobspecs object of one of these is never an orphan. */
  stored: Set<string>;
  /** Jobs of live studies, as submitted with their stored states laid over them. */
  jobs: Map<string, Entry<JobRecord>>;
  live: number;
  /** Archived studies whose job states are still in KV (a crash between archiving and purging). */
  stale: Set<string>;
  /** Jobs whose state sits under a key of the first format (`<job>`), by job id: moved under `<study>.<job>`. */
  legacy: Map<string, string>;
}

/**
 * Reads the coordinator's state in bulk: every study record and every job state with one KV watch each (never one
 * read per key), and one jobspecs object per live study, several at a time. Archived studies cost their record only.
 */
export async function readState(
  r: Pick<Resources, 'jobspecs'> & { kv: Pick<Resources['kv'], 'jobs' | 'studies'> },
  log: Logger,
): Promise<LoadedState> {
  const studies = new Map<string, Entry<StudyRecord>>();
  const stored = new Set<string>();
  for (const e of await readAll(r.kv.studies)) {
    stored.add(e.key);
    const parsed = StoredStudyRecord.safeParse(safeJson(e.value));
    if (parsed.success) studies.set(e.key, { rec: parsed.data, rev: e.revision });
    else log.error({ study_id: e.key }, 'study record unreadable; skipped');
  }
  const states = new Map<string, { value: Uint8Array; revision: number }>();
  const stale = new Set<string>();
  const legacy = new Map<string, string>();
  for (const e of await readAll(r.kv.jobs)) {
    const dot = e.key.indexOf('.');
    const jobId = dot < 0 ? e.key : e.key.slice(dot + 1); // keys written before states sat under their study
    if (dot < 0) legacy.set(jobId, e.key);
    states.set(jobId, e);
    const studyId = dot < 0 ? jobId.slice(0, jobId.lastIndexOf('-')) : e.key.slice(0, dot);
    if (studies.get(studyId)?.rec.archived) stale.add(studyId);
  }
  const jobs = new Map<string, Entry<JobRecord>>();
  const live = [...studies.values()].filter((e) => !e.rec.archived).map((e) => e.rec);
  // One study parsed at a time (a large one parses into a few hundred MB of short-lived garbage, which must not pile
  // up), while the next one's object is already being fetched.
  const fetch = (i: number) =>
    i < live.length
      ? withRetries(() => fetchStudyJobs(r, live[i]!.study_id)).catch((e: Error) => e)
      : Promise.resolve(null);
  let next = fetch(0);
  for (let i = 0; i < live.length; i++) {
    const study = live[i]!;
    const blob = await next;
    next = fetch(i + 1);
    const submitted =
      blob instanceof Uint8Array
        ? await parseStudyJobs(blob, study.study_id).catch((e: Error) => e)
        : (blob ?? null);
    if (!Array.isArray(submitted)) {
      const err = submitted instanceof Error ? submitted.message : 'no stored jobs';
      // Skipped for now, never deleted: its record keeps its object from being taken for an orphan.
      log.error({ study_id: study.study_id, err }, 'jobs of study unreadable; study skipped');
      studies.delete(study.study_id);
      continue;
    }
    for (const job of submitted) {
      const id = job.job.job_id;
      const state = states.get(id);
      if (!state) {
        jobs.set(id, { rec: job, rev: 0 });
        continue;
      }
      const parsed = StoredJobState.safeParse(safeJson(state.value));
      if (parsed.success) jobs.set(id, { rec: { ...parsed.data, job: job.job }, rev: state.revision });
      else {
        // Nothing is known of how it went: it runs again from the queue (at worst a rerun, never a lost job), and
        // its next write replaces what cannot be read.
        log.error({ job_id: id }, 'job state unreadable; queued again as submitted');
        jobs.set(id, { rec: job, rev: state.revision });
      }
    }
  }
  for (const id of legacy.keys()) if (!jobs.has(id)) legacy.delete(id);
  return { studies, stored, jobs, live: live.length, stale, legacy };
}

/**
 * jobspecs objects whose study record never appeared (a submit that died in between), after a minute. `stored` is
 * every study the bucket names, so a study that could not be loaded (unreadable now, readable after a fix or a
 * retry) keeps its jobs.
 */
export async function removeOrphans(
  r: Pick<Resources, 'jobspecs'>,
  stored: ReadonlySet<string>,
  now: number,
  log: Logger,
): Promise<void> {
  for (const info of await r.jobspecs.list().catch(() => [])) {
    if (stored.has(info.name) || Date.parse(info.mtime) > now - 60_000) continue;
    log.warn({ study_id: info.name }, 'removing the jobs of a study that was never stored');
    await r.jobspecs.delete(info.name).catch(() => {});
  }
}

/** States under their first-format key (`<job>`) move under `<study>.<job>`: written there first, then purged. */
export async function moveLegacyStates(kv: Resources['kv']['jobs'], loaded: LoadedState): Promise<void> {
  for (const [id, oldKey] of loaded.legacy) {
    const e = loaded.jobs.get(id)!;
    const rev = await kv.put(jobKey(e.rec), stateJson(e.rec));
    loaded.jobs.set(id, { rec: e.rec, rev });
    await kv.purge(oldKey);
  }
}

/** A read that may fail for a moment (a timeout while the server is busy), tried three times. */
async function withRetries<T>(read: () => Promise<T>): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await read();
    } catch (e) {
      if (i >= 3) throw e;
      await new Promise((r) => setTimeout(r, 500 * i));
    }
  }
}
