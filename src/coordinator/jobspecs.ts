import { promisify } from 'node:util';
import { gunzip, gzip, gzipSync } from 'node:zlib';
import { z } from 'zod';
import { EpochTask, Job, ResourceLimits } from '../models/job.ts';
import { JobRecord, type JobState, migrateJobState, StoredJobState } from '../models/job-record.ts';
import { Scenario } from '../models/scenario.ts';
import { ParamValue } from '../models/study.ts';
import type { Resources } from '../transport/resources.ts';

/**
 * A study's jobs in the `jobspecs` object store, one object per study: written once before the study record that
 * makes the submission exist (so no crash leaves half a study), and once more when the study ends, with the final
 * job records (its KV states are then purged). Epochs of one sweep point differ only by their seed, so each point's
 * scenario is stored once and each epoch by its seed; loading rebuilds the epochs sharing their point's scenario
 * parts, which keeps a restarted coordinator's memory what it was before (some 300 bytes an epoch, not 4 KB). What
 * a study's jobs have in common (image, limits, priority, and the state they were queued in) is stored once too, and
 * per job only where it differs: a live study's job is then its id, its input digest and its epochs.
 */

const StoredEpoch = z.strictObject({
  epoch_id: EpochTask.shape.epoch_id,
  subset: z.number().int().min(0),
  run: z.number().int().min(1),
  seed: z.number().int(),
  /** Only when the epoch is not its point's scenario with another seed. */
  scenario: Scenario.optional(),
});

/** What a study's jobs have in common; a job stores a field only where it differs. */
const Common = z.strictObject({
  image: z.string().min(1),
  limits: ResourceLimits,
  priority: z.number().int(),
  // Migrated like a KV state: an archive written before verdicts has its accepted execution `valid`.
  state: StoredJobState,
});
type Common = z.infer<typeof Common>;

const StoredJob = z.strictObject({
  job_id: z.string().min(1),
  input_digest: Job.shape.input_digest,
  epochs: z.array(StoredEpoch).min(1),
  ...Common.partial().shape,
});

export const StudyJobs = z.strictObject({
  version: z.literal(2),
  study_id: z.string(),
  points: z.array(z.strictObject({ params: z.record(z.string(), ParamValue), scenario: Scenario })),
  /** Absent for a study without jobs. */
  common: Common.optional(),
  jobs: z.array(StoredJob),
});
export type StudyJobs = z.infer<typeof StudyJobs>;

/** The first format: every job record in full. */
const StudyJobsV1 = z.strictObject({
  study_id: z.string(),
  jobs: z.array(
    // The old state's own keys (attempt, worker_id, lease_until, history) give way to the migrated ones.
    z.preprocess(
      (r) => ({ job: (r as { job?: unknown })?.job, ...(migrateJobState(stateOf(r)) as object) }),
      JobRecord,
    ),
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

type Points = StudyJobs['points'];

const sameLimits = (a: ResourceLimits, b: ResourceLimits) =>
  a.memory_mb === b.memory_mb && a.cpus === b.cpus && a.pids === b.pids && a.timeout_s === b.timeout_s;

/** Whether two job states are the same (the common case: both as queued at submit). */
function sameState(a: JobState, b: JobState): boolean {
  for (const k of Object.keys(b) as (keyof JobState)[]) {
    const x = a[k];
    const y = b[k];
    if (x === y) continue;
    if (k !== 'executions' || (x as unknown[]).length > 0 || (y as unknown[]).length > 0) return false;
  }
  return Object.keys(a).length === Object.keys(b).length;
}

function commonOf(rec: JobRecord): Common {
  const { job, ...state } = rec;
  return { image: job.image, limits: job.limits, priority: job.priority, state };
}

/**
 * One job's stored form: only what differs from `common`; its epochs' points are added to `points` as they are met
 * (pure but for that).
 */
function encodeJob(rec: JobRecord, common: Common, points: Points): StudyJobs['jobs'][number] {
  const { job, ...state } = rec;
  const stored: StudyJobs['jobs'][number] = {
    job_id: job.job_id,
    input_digest: job.input_digest,
    epochs: job.epochs.map((e) => {
      if (!points[e.subset]) points[e.subset] = { params: e.params, scenario: e.scenario };
      const point = points[e.subset]!;
      const epoch: z.infer<typeof StoredEpoch> = {
        epoch_id: e.epoch_id,
        subset: e.subset,
        run: e.run,
        seed: e.scenario.seed,
      };
      if (!samePoint(e.scenario, point.scenario)) epoch.scenario = e.scenario;
      return epoch;
    }),
  };
  if (job.image !== common.image) stored.image = job.image;
  if (!sameLimits(job.limits, common.limits)) stored.limits = job.limits;
  if (job.priority !== common.priority) stored.priority = job.priority;
  if (!sameState(state, common.state)) stored.state = state;
  return stored;
}

/** A study may have sweep points no job uses (none today); fill the holes so the array stays dense JSON. */
function dense(points: Points): Points {
  for (let i = 0; i < points.length; i++) points[i] ??= points.find(Boolean)!;
  return points;
}

/** The stored form of a study's job records (pure). */
export function encodeStudyJobs(studyId: string, records: readonly JobRecord[]): StudyJobs {
  const points: Points = [];
  if (records.length === 0) return { version: 2, study_id: studyId, points, jobs: [] };
  const common = commonOf(records[0]!);
  const jobs = records.map((rec) => encodeJob(rec, common, points));
  return { version: 2, study_id: studyId, points: dense(points), common, jobs };
}

/** Jobs encoded between two yields to the event loop: a large study's archive must not hold up results. */
const JOBS_PER_TURN = 2000;

/** The JSON of `encodeStudyJobs`, built a slice of jobs per turn of the event loop. */
export async function studyJobsJson(studyId: string, records: readonly JobRecord[]): Promise<string> {
  if (records.length === 0) return JSON.stringify(encodeStudyJobs(studyId, records));
  const points: Points = [];
  const common = commonOf(records[0]!);
  const jobs: string[] = [];
  for (let i = 0; i < records.length; i++) {
    jobs.push(JSON.stringify(encodeJob(records[i]!, common, points)));
    if (i % JOBS_PER_TURN === JOBS_PER_TURN - 1) await new Promise((r) => setImmediate(r));
  }
  const head = JSON.stringify({ version: 2, study_id: studyId, points: dense(points), common }).slice(0, -1);
  return `${head},"jobs":[${jobs.join(',')}]}`;
}

/** Job records from their stored form (pure): epochs of a point share its scenario's parts. */
export function decodeStudyJobs(stored: StudyJobs): JobRecord[] {
  return stored.jobs.map((j) => decodeJob(j, stored));
}

function decodeJob(j: StudyJobs['jobs'][number], study: Omit<StudyJobs, 'jobs'>): JobRecord {
  const common = study.common!;
  return {
    ...(j.state ?? common.state),
    job: {
      job_id: j.job_id,
      study_id: study.study_id,
      image: j.image ?? common.image,
      input_digest: j.input_digest,
      limits: j.limits ?? common.limits,
      priority: j.priority ?? common.priority,
      epochs: j.epochs.map((e) => {
        const point = study.points[e.subset]!;
        return {
          epoch_id: e.epoch_id,
          subset: e.subset,
          run: e.run,
          params: point.params,
          scenario: e.scenario ?? { ...point.scenario, seed: e.seed },
        };
      }),
    },
  };
}

/**
 * Checks and decodes a parsed stored object a job at a time, letting go of each raw job as it goes: the checked
 * copies and the raw tree then die young instead of doubling a large study's memory while it loads.
 */
function decodeChecked(raw: { jobs?: unknown }): JobRecord[] {
  const jobs = Array.isArray(raw.jobs) ? raw.jobs : [];
  const study = StudyJobs.parse({ ...raw, jobs: [] });
  if (jobs.length > 0 && !study.common) throw new Error('stored jobs without their common part');
  const out: JobRecord[] = [];
  for (let i = 0; i < jobs.length; i++) {
    out.push(decodeJob(StoredJob.parse(jobs[i]), study));
    jobs[i] = null;
  }
  return out;
}

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/** Below this, gzip on the event loop costs less than the hop to libuv's thread pool. */
const SYNC_GZIP_BYTES = 64 * 1024;

/** Stores a study's jobs, gzipped (a study's JSON repeats itself and shrinks some twentyfold). */
export async function putStudyJobs(
  resources: Pick<Resources, 'jobspecs'>,
  studyId: string,
  records: readonly JobRecord[],
): Promise<void> {
  const json = await studyJobsJson(studyId, records);
  const body =
    json.length < SYNC_GZIP_BYTES ? gzipSync(json, { level: 1 }) : await gzipAsync(json, { level: 1 });
  await resources.jobspecs.putBlob({ name: studyId }, body);
}

/** The study's stored job records, or null when the store has none for it. */
export async function getStudyJobs(
  resources: Pick<Resources, 'jobspecs'>,
  studyId: string,
): Promise<JobRecord[] | null> {
  const blob = await fetchStudyJobs(resources, studyId);
  return blob && (await parseStudyJobs(blob, studyId));
}

/** The stored (gzipped) object of a study's jobs, or null (IO only: loading fetches the next while parsing one). */
export function fetchStudyJobs(
  resources: Pick<Resources, 'jobspecs'>,
  studyId: string,
): Promise<Uint8Array | null> {
  return resources.jobspecs.getBlob(studyId);
}

/** Job records from a study's stored object, checked against its schema and its study. */
export async function parseStudyJobs(blob: Uint8Array, studyId: string): Promise<JobRecord[]> {
  const raw = JSON.parse((await gunzipAsync(blob)).toString('utf8')) as { version?: number; jobs?: unknown };
  const records = raw.version === 2 ? decodeChecked(raw) : StudyJobsV1.parse(raw).jobs;
  const other = records.find((r) => r.job.study_id !== studyId);
  if (other) throw new Error(`jobspecs object ${studyId} holds a job of study ${other.job.study_id}`);
  return records;
}

/** KV `jobs` key of a job: under its study, so a finished study's states go in one purge. */
export const jobKey = (rec: JobRecord) => `${rec.job.study_id}.${rec.job.job_id}`;

/** The stored mutable part of a job record, as KV `jobs` holds it. */
export function stateJson(rec: JobRecord): string {
  const { job: _job, ...state } = rec;
  return JSON.stringify(state);
}
