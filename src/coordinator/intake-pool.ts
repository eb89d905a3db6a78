import { Piscina } from 'piscina';
import type { SubmitRequest } from '../models/api.ts';
import { InputError } from '../models/errors.ts';
import { studySize } from '../models/study.ts';
import { buildSubmission, type Submission } from './intake.ts';
import type { RetryPolicy } from './job-state.ts';
import { decodeStudyJobs, type StudyJobs } from './jobspecs.ts';

export interface IntakeContext {
  studyId: string;
  image: string;
  now: number;
  /** The escrowed budget in µSIM (0: a free study). */
  budget?: number;
  retry: RetryPolicy;
}

/** Expands submits into study records and jobs. */
export interface Intake {
  build(req: SubmitRequest, ctx: IntakeContext): Promise<Submission>;
  close(): Promise<void>;
}

/** Studies up to this size are expanded on the main thread: milliseconds, less than the hop to a thread. */
export const INLINE_MAX_EPOCHS = 1000;

/**
 * Expansion off the main thread: a 100,000-epoch study takes seconds of CPU (a digest per epoch), which on the main
 * thread would hold up heartbeats and results. A worker thread expands it and sends back the compact stored form
 * (each sweep point's scenario once), which is small to copy across and rebuilds into jobs that share their point's
 * scenario parts. Small studies, the common case, are expanded inline.
 */
export function threadIntake(): Intake {
  const pool = new Piscina({
    filename: new URL('./intake-thread.ts', import.meta.url).href,
    minThreads: 0,
    maxThreads: 1,
    idleTimeout: 30_000,
  });
  return {
    async build(req, ctx) {
      if (!req.study || studySize(req.study) <= INLINE_MAX_EPOCHS) return buildSubmission(req, ctx);
      const out = (await pool.run({ req, ctx })) as
        | { ok: true; study: Submission['study']; jobs: StudyJobs }
        | { ok: false; what: string; issues: string[] };
      if (!out.ok) throw new InputError(out.what, out.issues);
      return { study: out.study, jobs: decodeStudyJobs(out.jobs) };
    },
    close: () => pool.destroy(),
  };
}

/** Expansion on the calling thread (tests and tools that submit small studies). */
export function inlineIntake(): Intake {
  return {
    build: async (req, ctx) => buildSubmission(req, ctx),
    close: async () => {},
  };
}
