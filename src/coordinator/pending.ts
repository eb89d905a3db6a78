import type { JobRecord } from '../models/job-record.ts';
import { fresh, isTerminal, quorumOf, wanted, workersToAvoid, workersUsed } from './job-state.ts';
import type { PendingJob } from './placement.ts';
import { jobWork } from './pricing.ts';

/**
 * What placement is asked to place this round (pure): the due jobs that want executions, in queue order, until they
 * want four times the free slots (a round costs what it can place, not the queue's length).
 */
export function pendingJobs(
  queue: Iterable<JobRecord>,
  o: {
    now: number;
    free: number;
    /** Whether a provider has earned trust (from the reputations). */
    established: (workerId: string) => boolean;
    /** Jobs being assigned right now: not again until that is recorded. */
    busy?: (jobId: string) => boolean;
  },
): PendingJob[] {
  const pending: PendingJob[] = [];
  let wantedTotal = 0;
  for (const rec of queue) {
    if (wantedTotal >= o.free * 4) break;
    if (rec.not_before > o.now || o.busy?.(rec.job.job_id) || isTerminal(rec)) continue;
    const want = wanted(rec);
    if (want < 1) continue;
    wantedTotal += want;
    const used = workersUsed(rec);
    const newcomers = used.filter((w) => !o.established(w)).length;
    // What it is paid for, and (a public good) how long a provider's window must stay open for it.
    const estimate = rec.max_price !== null || rec.public_good ? jobWork(rec.job) : 0;
    pending.push({
      job_id: rec.job.job_id,
      study_id: rec.job.study_id,
      image: rec.job.image,
      limits: rec.job.limits,
      priority: rec.job.priority,
      enqueued_at: rec.enqueued_at,
      not_before: rec.not_before,
      avoid: workersToAvoid(rec),
      exclude: used,
      want,
      adaptive: rec.adaptive && fresh(rec),
      needs_established: newcomers === used.length,
      quorum: quorumOf(rec),
      newcomers,
      work: rec.max_price === null ? 0 : estimate,
      max_price: rec.max_price,
      window_s: rec.public_good ? estimate : 0,
    });
  }
  return pending;
}
