import type { SubmitRequest } from '../models/api.ts';
import { InputError } from '../models/errors.ts';
import { type Job, jobInput, ResourceLimits } from '../models/job.ts';
import type { JobRecord } from '../models/job-record.ts';
import { Study } from '../models/study.ts';
import type { StudyRecord } from '../models/study-record.ts';
import { digestOf } from '../models/digest.ts';
import { expandStudy, sweepPoints } from '../study/expand.ts';
import { newJobRecord, type RetryPolicy } from './job-state.ts';
import { DEFAULT_PACK, packEpochs } from './pack.ts';

/** Epochs per study the coordinator accepts in one submit. */
export const MAX_EPOCHS_PER_STUDY = 100_000;

export interface Submission {
  study: StudyRecord;
  jobs: JobRecord[];
}

/**
 * Turns a validated submit request into a study record and its queued jobs. Pure: the same request, id and clock
 * give the same records.
 */
export function buildSubmission(
  req: SubmitRequest,
  ctx: { studyId: string; image: string; now: number; retry: RetryPolicy },
): Submission {
  const study: Study = req.study
    ? req.study
    : Study.parse({ name: String(req.scenario?.name ?? 'scenario'), scenario: req.scenario, runs: 1 });
  if (typeof study.scenario === 'string')
    throw new InputError('invalid submit', ['study.scenario: expected inline']);
  const root = req.study ? 'study.scenario' : 'scenario';
  const planned = sweepPoints(study).length * study.runs;
  if (planned > MAX_EPOCHS_PER_STUDY) {
    throw new InputError('study too large', [
      `${req.study ? 'study.' : ''}runs: the study expands to ${planned} epochs; the limit is ${MAX_EPOCHS_PER_STUDY}`,
    ]);
  }
  let epochs: ReturnType<typeof expandStudy>;
  try {
    epochs = req.study
      ? expandStudy(study, study.scenario)
      : expandStudy({ ...study, seed: 0 }, study.scenario);
  } catch (e) {
    if (e instanceof InputError) {
      throw new InputError(
        e.message.split(':')[0] ?? 'invalid study',
        e.issues.map((i) => i.replace(/^scenario/, root)),
      );
    }
    throw e;
  }
  if (!req.study) {
    // A single scenario keeps its own seed.
    const seed = (req.scenario as { seed?: number }).seed ?? 0;
    epochs = epochs.map((e) => ({ ...e, scenario: { ...e.scenario, seed } }));
    epochs = epochs.map((e) => ({ ...e, epoch_id: digestOf(e.scenario).slice(0, 16) }));
  }
  const limits = ResourceLimits.parse(req.limits ?? {});
  const batches = packEpochs(epochs, {
    ...DEFAULT_PACK,
    ...(req.target_job_seconds !== undefined ? { targetSeconds: req.target_job_seconds } : {}),
  });
  const retry: RetryPolicy = {
    ...ctx.retry,
    ...(req.max_attempts !== undefined ? { maxAttempts: req.max_attempts } : {}),
    ...(req.queue_timeout_s !== undefined ? { queueTimeoutMs: req.queue_timeout_s * 1000 } : {}),
  };
  const jobs = batches.map((batch, i) => {
    const jobId = `${ctx.studyId}-${String(i).padStart(5, '0')}`;
    const job: Job = {
      job_id: jobId,
      study_id: ctx.studyId,
      image: ctx.image,
      input_digest: digestOf(jobInput(jobId, batch)),
      epochs: batch,
      limits,
      priority: req.priority ?? 0,
    };
    return newJobRecord(job, ctx.now, retry);
  });
  return {
    study: {
      study_id: ctx.studyId,
      name: study.name,
      study,
      idempotency_key: req.idempotency_key ?? null,
      submitted_at: ctx.now,
      finished_at: null,
      state: 'running',
      job_ids: jobs.map((j) => j.job.job_id),
      epochs: epochs.length,
      request: req,
      image: ctx.image,
    },
    jobs,
  };
}
