import { z } from 'zod';
import type { SubmitRequest } from '../models/api.ts';
import { digestOf } from '../models/digest.ts';
import { InputError, parseInput } from '../models/errors.ts';
import { type Job, jobInput, ResourceLimits } from '../models/job.ts';
import type { JobRecord } from '../models/job-record.ts';
import { Scenario } from '../models/scenario.ts';
import { Study, studyNameFrom, studySizeProblem } from '../models/study.ts';
import { jobIdOf, type StudyRecord } from '../models/study-record.ts';
import { expandStudy } from '../study/expand.ts';
import { type JobTerms, newJobRecord, type RetryPolicy } from './job-state.ts';
import { DEFAULT_PACK, packEpochs } from './pack.ts';
import { studyEstimate } from './pricing.ts';

/** With a budget and no max price, a study pays at most this per CPU-second (SIM): ~2× the workers' default ask. */
export const DEFAULT_MAX_PRICE = 0.002;

/** A budget below what the study's jobs cost at its max price, each run by its quorum (the figures in µSIM). */
export class BudgetTooSmallError extends InputError {
  readonly estimate: number;
  readonly budget: number;
  constructor(budget: number, estimate: number, path: string) {
    super('budget too small', [
      `${path}: ${budget / 1e6} SIM does not cover the estimate of ${estimate / 1e6} SIM (every job at max_price, run by its quorum)`,
    ]);
    this.name = 'BudgetTooSmallError';
    this.estimate = estimate;
    this.budget = budget;
  }
}

/** A single scenario's own seed (expansion replaces it with a run seed, so it is checked here). */
const OwnSeed = z.object({ seed: Scenario.shape.seed.default(0) });

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
  ctx: { studyId: string; image: string; now: number; retry: RetryPolicy; budget?: number },
): Submission {
  // Bad input ends as an InputError (the API's `invalid`), never as a ZodError or RangeError (`internal`).
  const study: Study = req.study
    ? req.study
    : parseInput(
        Study,
        { name: studyNameFrom(req.scenario?.name), scenario: req.scenario, runs: 1 },
        'invalid submit',
      );
  if (typeof study.scenario === 'string')
    throw new InputError('invalid submit', ['study.scenario: expected inline']);
  const root = req.study ? 'study.scenario' : 'scenario';
  // Sized from the sweep's arithmetic: a refused study costs no more than its axes' lengths.
  const tooBig = studySizeProblem(study);
  if (tooBig)
    throw new InputError('study too large', [
      `${req.study ? 'study.' : ''}${tooBig.path}: ${tooBig.message}`,
    ]);
  let epochs: ReturnType<typeof expandStudy>;
  try {
    epochs = req.study
      ? expandStudy(study, study.scenario)
      : expandStudy({ ...study, seed: 0 }, study.scenario);
  } catch (e) {
    if (e instanceof InputError) {
      throw new InputError(
        e.message.split(':')[0] ?? 'invalid study',
        e.issues.map((i) =>
          i.startsWith('scenario') ? i.replace(/^scenario/, root) : req.study ? `study.${i}` : i,
        ),
      );
    }
    throw e;
  }
  if (!req.study) {
    // A single scenario keeps its own seed.
    const { seed } = parseInput(OwnSeed, req.scenario, 'invalid submit', 'scenario');
    epochs = epochs.map((e) => ({ ...e, scenario: { ...e.scenario, seed } }));
    epochs = epochs.map((e) => ({ ...e, epoch_id: digestOf(e.scenario).slice(0, 16) }));
  }
  const limits = parseInput(ResourceLimits, req.limits ?? {}, 'invalid submit', 'limits');
  const batches = packEpochs(epochs, {
    ...DEFAULT_PACK,
    ...(req.target_job_seconds !== undefined ? { targetSeconds: req.target_job_seconds } : {}),
  });
  const retry: RetryPolicy = {
    ...ctx.retry,
    ...(req.max_attempts !== undefined ? { maxAttempts: req.max_attempts } : {}),
    // A public good waits for windows and funds by design: the coordinator's queue timeout is not for it.
    ...(req.public_good ? { queueTimeoutMs: null } : {}),
    ...(req.queue_timeout_s !== undefined ? { queueTimeoutMs: req.queue_timeout_s * 1000 } : {}),
  };
  // Community money pays a public good: its price is held to the default ceiling, so a submitter cannot set a price
  // at which one provider of its own drains what funders gave.
  if (req.public_good && req.max_price !== undefined && req.max_price > DEFAULT_MAX_PRICE)
    throw new InputError('invalid submit request', [
      `max_price: a public good pays at most ${DEFAULT_MAX_PRICE} SIM per CPU-second, got ${req.max_price}`,
    ]);
  const quorum = req.verification?.quorum ?? 2;
  const budget = ctx.budget ?? 0;
  const publicGood = req.public_good ?? null;
  // A study without a budget is free: nothing is paid, so there is no price to cap. A public good always pays (from
  // what the community gives it), however little it holds at submit.
  const maxPrice = budget > 0 || publicGood ? (req.max_price ?? DEFAULT_MAX_PRICE) : null;
  const terms: JobTerms = {
    quorum,
    max_results: req.verification?.max_results ?? quorum + 2,
    adaptive: req.verification?.adaptive ?? true,
    max_price: maxPrice,
    public_good: publicGood !== null,
  };
  const jobs = batches.map((batch, i) => {
    const jobId = jobIdOf(ctx.studyId, i);
    const job: Job = {
      job_id: jobId,
      study_id: ctx.studyId,
      image: ctx.image,
      input_digest: digestOf(jobInput(jobId, batch)),
      epochs: batch,
      limits,
      priority: req.priority ?? 0,
    };
    return newJobRecord(job, ctx.now, retry, terms);
  });
  // A public good's funds arrive over time: what they cannot cover waits in the queue.
  if (maxPrice !== null && !publicGood) {
    const estimate = studyEstimate(
      jobs.map((j) => j.job),
      maxPrice,
      quorum,
    );
    if (budget < estimate) throw new BudgetTooSmallError(budget, estimate, 'budget');
  }
  return {
    study: {
      study_id: ctx.studyId,
      name: study.name,
      study,
      idempotency_key: req.idempotency_key ?? null,
      submitted_at: ctx.now,
      finished_at: null,
      state: 'running',
      jobs: jobs.length,
      epochs: epochs.length,
      image: ctx.image,
      summary: null,
      archived: false,
      quorum,
      budget,
      // A public good's leftovers go to the matching pool, not back to whoever gave first.
      payer: budget > 0 && !publicGood ? (req.auth?.key ?? null) : null,
      owner: null,
      max_price: maxPrice,
      public_good: publicGood,
    },
    jobs,
  };
}
