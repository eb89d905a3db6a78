import { gunzipSync, gzipSync } from 'node:zlib';
import { z } from 'zod';
import { JobRecord, JobState } from '../models/job-record.ts';
import type { Resources } from '../transport/resources.ts';

/**
 * A study's jobs as queued at submit, one object per study in the `jobspecs` object store. Writing them as one
 * object, before the study record that makes the submission visible, costs a submit a few chunk writes instead of
 * two KV writes per job, and no crash can leave a study with only some of its jobs. A job's state is written to KV
 * `jobs` only from its first transition on: until then the object's record is its state. The JSON is gzipped: a
 * study's jobs repeat the same scenarios with different seeds, and shrink some twentyfold in a few milliseconds.
 */
export const StudyJobs = z.strictObject({ study_id: z.string(), jobs: z.array(JobRecord) });
export type StudyJobs = z.infer<typeof StudyJobs>;

export async function putStudyJobs(resources: Resources, studyId: string, jobs: JobRecord[]): Promise<void> {
  const body: StudyJobs = { study_id: studyId, jobs };
  await resources.jobspecs.putBlob({ name: studyId }, gzipSync(JSON.stringify(body), { level: 1 }));
}

/** The study's jobs as submitted, or null when the store has none for it. */
export async function getStudyJobs(resources: Resources, studyId: string): Promise<JobRecord[] | null> {
  const blob = await resources.jobspecs.getBlob(studyId);
  if (!blob) return null;
  const parsed = StudyJobs.parse(JSON.parse(gunzipSync(blob).toString('utf8')));
  if (parsed.study_id !== studyId)
    throw new Error(`jobspecs object ${studyId} holds study ${parsed.study_id}`);
  return parsed.jobs;
}

/** The stored mutable part of a job record, as KV `jobs` holds it. */
export function stateJson(rec: JobRecord): string {
  const { job: _job, ...state } = rec;
  return JSON.stringify(state);
}

/**
 * A job's record as stored now: its submitted record with its KV state, if any, laid over it. Only the state is
 * parsed: the job itself was checked when its study's object was read.
 */
export function withState(submitted: JobRecord, state: unknown): JobRecord {
  return state === undefined ? submitted : { ...JobState.parse(state), job: submitted.job };
}
