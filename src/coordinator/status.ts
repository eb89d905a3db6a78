import type { StudyStatus } from '../models/api.ts';
import type { JobRecord } from '../models/job-record.ts';
import type { StudyRecord } from '../models/study-record.ts';
import { failureReasons } from './job-state.ts';

type Counts = StudyStatus['epochs'];
const zero = (): Counts => ({ total: 0, done: 0, running: 0, queued: 0, failed: 0, cancelled: 0 });

/** A queued job with a replica already running counts as running: work on it is under way. */
const bucket = (r: JobRecord): keyof Counts =>
  r.status === 'assigned' || (r.status === 'queued' && r.executions.some((e) => e.ended === null))
    ? 'running'
    : r.status;

/** The study's state given its jobs: done when all succeeded, failed when any failed, cancelled on cancel. */
export function studyState(study: StudyRecord, jobs: readonly JobRecord[]): StudyStatus['state'] {
  if (study.state === 'cancelled') return 'cancelled';
  if (jobs.some((j) => j.status === 'queued' || j.status === 'assigned')) return 'running';
  if (jobs.every((j) => j.status === 'done')) return 'done';
  return jobs.some((j) => j.status === 'failed') ? 'failed' : 'cancelled';
}

/** What the coordinator knows of a study beyond its records: its escrow, and why its queue is not moving. */
export interface StudyExtras {
  funds: StudyStatus['funds'];
  waiting: string | null;
}

export function summarise(
  study: StudyRecord,
  jobs: readonly JobRecord[],
  extras: StudyExtras = { funds: null, waiting: null },
): StudyStatus {
  if (study.summary)
    return {
      ...study.summary,
      state: study.state,
      finished_at: study.finished_at,
      funds: extras.funds ?? study.summary.funds,
    };
  const epochs = zero();
  const jobCounts = zero();
  for (const j of jobs) {
    const b = bucket(j);
    jobCounts.total++;
    jobCounts[b]++;
    epochs.total += j.job.epochs.length;
    epochs[b] += j.job.epochs.length;
  }
  const failures = jobs
    .filter((j) => j.status === 'failed')
    .slice(0, 10)
    .map((j) => ({
      job_id: j.job.job_id,
      reasons: failureReasons(j),
    }));
  return {
    study_id: study.study_id,
    name: study.name,
    state: studyState(study, jobs),
    submitted_at: study.submitted_at,
    finished_at: study.finished_at,
    epochs,
    jobs: jobCounts,
    failures,
    funds: extras.funds,
    waiting: extras.waiting,
  };
}
