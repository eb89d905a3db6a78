import type { Job } from '../models/job.ts';

/**
 * What a job is worth, by a measure its provider cannot inflate: the work its spec implies, not the usage a provider
 * reports. The grid epoch's cost is linear in prosumer-intervals (every household is dispatched, settled and put on
 * the feeder once per interval), plus a fixed cost per epoch (profiles, metrics, digest) and per job (starting the
 * runner). The constants are calibrated from `npm run bench:sim` (README): 5.7–7.5 M prosumer-intervals/s per core
 * at 100 prosumers and a little less at 1,000, so 2.5·10⁻⁷ CPU-s each is a ceiling with room for slower machines.
 */
export const CPU_S_PER_PROSUMER_INTERVAL = 2.5e-7;
export const CPU_S_PER_EPOCH = 0.002;
export const CPU_S_PER_JOB = 0.25;

/** 1 SIM in µSIM: the ledger's integer unit. */
export const MICRO = 1_000_000;

/** Estimated CPU-seconds of one execution of a job. */
export function jobWork(job: Pick<Job, 'epochs'>): number {
  let s = CPU_S_PER_JOB;
  for (const e of job.epochs) {
    const intervals = (e.scenario.time.days * 1440) / e.scenario.time.interval_minutes;
    s += CPU_S_PER_EPOCH + e.scenario.community.size * intervals * CPU_S_PER_PROSUMER_INTERVAL;
  }
  return s;
}

/** What one execution of `work` CPU-seconds is paid at `pricePerCpuS` SIM, in whole µSIM (rounded up). */
export function payFor(work: number, pricePerCpuS: number): number {
  return Math.ceil(work * pricePerCpuS * MICRO - 1e-9);
}

/** What a study must escrow: each job's work at the study's max price, once per execution its quorum needs. */
export function studyEstimate(
  jobs: readonly Pick<Job, 'epochs'>[],
  maxPrice: number,
  quorum: number,
): number {
  let total = 0;
  for (const j of jobs) total += payFor(jobWork(j), maxPrice) * quorum;
  return total;
}
