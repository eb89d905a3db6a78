import { z } from 'zod';
import { StudyState, SubmitRequest } from './api.ts';
import { Study } from './study.ts';

/**
 * A study's durable record (KV `studies`). Its jobs, as submitted, are one object in the `jobspecs` object store
 * (written first); their states are in KV `jobs` under `<study_id>-<n>`.
 */
export const StudyRecord = z.strictObject({
  study_id: z.string(),
  name: z.string(),
  /** The study with its scenario inline, as submitted (a single-scenario submit is a study of one run). */
  study: Study,
  idempotency_key: z.string().nullable(),
  submitted_at: z.number(),
  finished_at: z.number().nullable(),
  state: StudyState,
  job_ids: z.array(z.string()),
  epochs: z.number().int(),
  /** What was asked and which image it pinned. */
  request: SubmitRequest,
  image: z.string(),
});
export type StudyRecord = z.infer<typeof StudyRecord>;
