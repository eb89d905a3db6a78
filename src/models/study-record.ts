import { z } from 'zod';
import { PublicGood, StudyState, StudyStatus } from './api.ts';
import { Study } from './study.ts';

/**
 * A study's durable record (KV `studies`). Its jobs, as submitted, are one object in the `jobspecs` object store
 * (written first); their states are in KV `jobs` under `<study_id>.<job_id>` while the study runs. When it ends it
 * gets its summary; a little later it is archived: the final job records replace the object and the states are
 * purged, so a finished study costs one small record.
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
  /** Its jobs are `<study_id>-00000` … in submit order. */
  jobs: z.number().int().min(1),
  epochs: z.number().int(),
  /** The image its jobs pin. */
  image: z.string(),
  /** The final status, written when the study ends. */
  summary: StudyStatus.nullable(),
  /** Its final job records are in its jobspecs object and their KV states purged: only this record stays loaded. */
  archived: z.boolean(),
  /** How its results are verified (what each of its jobs was queued with). */
  quorum: z.number().int().min(1).default(1),
  /** Its escrow in µSIM (0: a free study, whose providers volunteer), and the key that paid it and gets the rest back. */
  budget: z.number().int().min(0).default(0),
  payer: z.string().nullable().default(null),
  /**
   * Who it belongs to: the key that signed its submit, else the user its submit's reply went to (permissions.ts
   * `inboxOwner`). Only the owner reads it and its events, and only a request signed by the owner cancels it. Null:
   * submitted without an identity (a server without authentication): anyone may.
   */
  owner: z.string().nullable().default(null),
  /** The most it pays per CPU-second of estimated work (SIM; null: nothing is paid). */
  max_price: z.number().min(0).nullable().default(null),
  /**
   * A public good (title, description): anyone reads it, funders and the matching pool pay for it (its escrow), its
   * jobs run on idle off-peak capacity, and what is left of its escrow returns to the pool. Null: an ordinary study.
   */
  public_good: PublicGood.nullable().default(null),
});
export type StudyRecord = z.infer<typeof StudyRecord>;

/** Records written before job ids were implied and the request was kept a second time. */
function migrate(raw: unknown): unknown {
  if (raw === null || typeof raw !== 'object' || !('job_ids' in raw)) return raw;
  const { job_ids, request: _request, ...rest } = raw as { job_ids: string[]; request: unknown };
  return { ...rest, jobs: job_ids.length, summary: null, archived: false };
}

export const StoredStudyRecord = z.preprocess(migrate, StudyRecord);

/** The id of a study's n-th job. */
export const jobIdOf = (studyId: string, n: number) => `${studyId}-${String(n).padStart(5, '0')}`;

/** Every job id of a study, in submit order. */
export function jobIdsOf(study: Pick<StudyRecord, 'study_id' | 'jobs'>): string[] {
  return Array.from({ length: study.jobs }, (_, n) => jobIdOf(study.study_id, n));
}
