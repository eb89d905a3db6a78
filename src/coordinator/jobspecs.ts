import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { z } from 'zod';
import { EpochTask, Job, ResourceLimits } from '../models/job.ts';
import { JobRecord, JobState, migrateJobState } from '../models/job-record.ts';
import { Scenario } from '../models/scenario.ts';
import { ParamValue } from '../models/study.ts';
import type { Resources } from '../transport/resources.ts';

/**
 * A study's jobs in the `jobspecs` object store, one object per study: written once before the study record that
 * makes the submission exist (so no crash leaves half a study), and once more when the study ends, with the final
 * job records (its KV states are then purged). Epochs of one sweep point differ only by their seed, so each point's
 * scenario is stored once and each epoch by its seed; loading rebuilds the epochs sharing their point's scenario
 * parts, which keeps a restarted coordinator's memory what it was before (some 300 bytes an epoch, not 4 KB).
 */

const StoredEpoch = z.strictObject({
  epoch_id: EpochTask.shape.epoch_id,
  subset: z.number().int().min(0),
  run: z.number().int().min(1),
  seed: z.number().int(),
  /** Only when the epoch is not its point's scenario with another seed. */
  scenario: Scenario.optional(),
});

const StoredJob = z.strictObject({
  job_id: z.string().min(1),
  image: z.string().min(1),
  input_digest: Job.shape.input_digest,
  limits: ResourceLimits,
  priority: z.number().int(),
  epochs: z.array(StoredEpoch).min(1),
  state: JobState,
});

export const StudyJobs = z.strictObject({
  version: z.literal(2),
  study_id: z.string(),
  points: z.array(z.strictObject({ params: z.record(z.string(), ParamValue), scenario: Scenario })),
  jobs: z.array(StoredJob),
});
export type StudyJobs = z.infer<typeof StudyJobs>;

/** The first format: every job record in full. */
const StudyJobsV1 = z.strictObject({
  study_id: z.string(),
  jobs: z.array(
    z.preprocess((r) => ({ ...(r as object), ...(migrateJobState(stateOf(r)) as object) }), JobRecord),
  ),
});

function stateOf(r: unknown): unknown {
  if (r === null || typeof r !== 'object') return r;
  const { job: _job, ...state } = r as Record<string, unknown>;
  return state;
}

/** Whether `scenario` is `point` with another seed (shared parts, as expansion makes them). */
function samePoint(scenario: Scenario, point: Scenario): boolean {
  for (const k of Object.keys(scenario) as (keyof Scenario)[]) {
    if (k !== 'seed' && scenario[k] !== point[k]) return false;
  }
  return Object.keys(scenario).length === Object.keys(point).length;
}

/** The stored form of a study's job records (pure). */
export function encodeStudyJobs(studyId: string, records: readonly JobRecord[]): StudyJobs {
  const points: StudyJobs['points'] = [];
  const jobs = records.map((rec) => {
    const { job, ...state } = rec;
    return {
      job_id: job.job_id,
      image: job.image,
      input_digest: job.input_digest,
      limits: job.limits,
      priority: job.priority,
      state,
      epochs: job.epochs.map((e) => {
        if (!points[e.subset]) points[e.subset] = { params: e.params, scenario: e.scenario };
        const point = points[e.subset]!;
        const stored: z.infer<typeof StoredEpoch> = {
          epoch_id: e.epoch_id,
          subset: e.subset,
          run: e.run,
          seed: e.scenario.seed,
        };
        if (!samePoint(e.scenario, point.scenario)) stored.scenario = e.scenario;
        return stored;
      }),
    };
  });
  // A study of one point per subset has no holes; fill any (subsets no job uses) so the array stays dense JSON.
  for (let i = 0; i < points.length; i++) points[i] ??= points.find(Boolean)!;
  return { version: 2, study_id: studyId, points, jobs };
}

/** Job records from their stored form (pure): epochs of a point share its scenario's parts. */
export function decodeStudyJobs(stored: StudyJobs): JobRecord[] {
  return stored.jobs.map((j) => ({
    ...j.state,
    job: {
      job_id: j.job_id,
      study_id: stored.study_id,
      image: j.image,
      input_digest: j.input_digest,
      limits: j.limits,
      priority: j.priority,
      epochs: j.epochs.map((e) => {
        const point = stored.points[e.subset]!;
        return {
          epoch_id: e.epoch_id,
          subset: e.subset,
          run: e.run,
          params: point.params,
          scenario: e.scenario ?? { ...point.scenario, seed: e.seed },
        };
      }),
    },
  }));
}

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/** Stores a study's jobs (gzipped off the event loop: a study's JSON repeats itself and shrinks some twentyfold). */
export async function putStudyJobs(
  resources: Pick<Resources, 'jobspecs'>,
  studyId: string,
  records: readonly JobRecord[],
): Promise<void> {
  const body = await gzipAsync(JSON.stringify(encodeStudyJobs(studyId, records)), { level: 1 });
  await resources.jobspecs.putBlob({ name: studyId }, body);
}

/** The study's stored job records, or null when the store has none for it. */
export async function getStudyJobs(
  resources: Pick<Resources, 'jobspecs'>,
  studyId: string,
): Promise<JobRecord[] | null> {
  const blob = await resources.jobspecs.getBlob(studyId);
  if (!blob) return null;
  const raw = JSON.parse((await gunzipAsync(blob)).toString('utf8')) as { version?: number };
  const records = raw.version === 2 ? decodeStudyJobs(StudyJobs.parse(raw)) : StudyJobsV1.parse(raw).jobs;
  const other = records.find((r) => r.job.study_id !== studyId);
  if (other) throw new Error(`jobspecs object ${studyId} holds a job of study ${other.job.study_id}`);
  return records;
}

/** The stored mutable part of a job record, as KV `jobs` holds it. */
export function stateJson(rec: JobRecord): string {
  const { job: _job, ...state } = rec;
  return JSON.stringify(state);
}
