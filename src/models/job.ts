import { z } from 'zod';
import { digestOf } from './digest.ts';
import { EpochResult } from './result.ts';
import { Scenario } from './scenario.ts';
import { ParamValue } from './study.ts';

/** Hard limits every attempt of a job runs under, whatever the executor. */
export const ResourceLimits = z.strictObject({
  memory_mb: z.number().int().min(16).max(65_536).default(512),
  // Docker gets NanoCpus = round(cpus × 1e9), where 0 means unlimited: 0.01 CPU is the least it accepts.
  cpus: z.number().finite().min(0.01).max(64).default(1),
  pids: z.number().int().min(8).max(4096).default(64),
  timeout_s: z.number().finite().gt(0).max(86_400).default(300),
});
export type ResourceLimits = z.infer<typeof ResourceLimits>;

/** One epoch inside a job, with where it sits in its study. */
export const EpochTask = z.strictObject({
  epoch_id: z.string().regex(/^[0-9a-f]{16}$/),
  subset: z.number().int().min(0),
  run: z.number().int().min(1),
  params: z.record(z.string(), ParamValue),
  scenario: Scenario,
});
export type EpochTask = z.infer<typeof EpochTask>;

/** What the epoch runner reads inside the container (mounted read-only at /input/job.json). */
export const JobInput = z.strictObject({
  job_id: z.string().min(1),
  epochs: z.array(z.strictObject({ epoch_id: z.string(), scenario: Scenario })).min(1),
});
export type JobInput = z.infer<typeof JobInput>;

/** The runner's input for a job: each epoch's id and scenario, nothing about where it sits in its study. */
export function jobInput(
  jobId: string,
  epochs: readonly Pick<EpochTask, 'epoch_id' | 'scenario'>[],
): JobInput {
  return { job_id: jobId, epochs: epochs.map((e) => ({ epoch_id: e.epoch_id, scenario: e.scenario })) };
}

/** What the epoch runner writes (to /output/results.json): one result per epoch, in input order. */
export const JobOutput = z.strictObject({
  job_id: z.string(),
  results: z.array(z.strictObject({ epoch_id: z.string(), result: EpochResult })),
});
export type JobOutput = z.infer<typeof JobOutput>;

/**
 * The digest a worker signs for an output: SHA-256 of the canonical list of its epochs' ids and digests. Each epoch
 * digest already covers that epoch's content, so checking an output canonicalises every result once, not twice.
 */
export function outputDigest(output: JobOutput): string {
  return digestOf({
    job_id: output.job_id,
    epochs: output.results.map((r) => [r.epoch_id, r.result.digest]),
  });
}

/** A unit of scheduling: an image pinned by ID and a batch of epochs sized to amortise container start-up. */
export const Job = z.strictObject({
  job_id: z.string().min(1),
  study_id: z.string().min(1),
  /** Docker image ID (sha256:…) so every replica runs the same bytes. */
  image: z.string().min(1),
  /** SHA-256 of the canonical JobInput. */
  input_digest: z.string().regex(/^[0-9a-f]{64}$/),
  epochs: z.array(EpochTask).min(1),
  limits: ResourceLimits,
  /** Higher runs first. */
  priority: z.number().int().default(0),
});
export type Job = z.infer<typeof Job>;
