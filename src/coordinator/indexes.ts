import type { JobRecord } from '../models/job-record.ts';
import { isTerminal } from './job-state.ts';

/**
 * The indexes the store derives from its job records, kept in step on every change: the queue in order (priority,
 * then age), the jobs with live executions, and per study the jobs not yet terminal (with their epochs, which the
 * live limit counts).
 */
export class JobIndexes {
  private readonly queued = new Set<string>();
  /** Jobs with a live execution (assigned ones, and queued ones whose first replicas run while more are wanted). */
  readonly running = new Set<string>();
  private order: string[] = [];
  private head = 0;
  private dirty = false;
  private readonly live = new Map<string, number>();
  liveEpochs = 0;
  /** Queued jobs with a queue deadline: only when there are any does a sweep look for expired ones. */
  private readonly deadlines = new Set<string>();

  /** Accounts for a job's change from `before` (undefined: new to the store) to `after`. */
  apply(id: string, before: JobRecord | undefined, after: JobRecord): void {
    this.queued.delete(id);
    this.running.delete(id);
    this.deadlines.delete(id);
    if (after.status === 'queued' && after.queue_deadline !== null) this.deadlines.add(id);
    if (after.status === 'queued') {
      this.queued.add(id);
      if (before?.status !== 'queued' || before.enqueued_at !== after.enqueued_at) this.dirty = true;
    }
    if (!isTerminal(after) && after.executions.some((e) => e.ended === null)) this.running.add(id);
    const study = after.job.study_id;
    const wasLive = before !== undefined && !isTerminal(before);
    const isLive = !isTerminal(after);
    if (isLive && !wasLive) {
      this.live.set(study, (this.live.get(study) ?? 0) + 1);
      this.liveEpochs += after.job.epochs.length;
    }
    if (wasLive && !isLive) {
      this.live.set(study, (this.live.get(study) ?? 1) - 1);
      this.liveEpochs -= after.job.epochs.length;
    }
  }

  queuedWithDeadline(): number {
    return this.deadlines.size;
  }

  liveJobs(studyId: string): number {
    return this.live.get(studyId) ?? 0;
  }

  /** Forgets an archived study (its jobs are all terminal). */
  dropStudy(studyId: string): void {
    this.live.delete(studyId);
  }

  /**
   * Queued job ids in queue order. The order is rebuilt only when a job (re)enters the queue; in between a cursor
   * skips what has left it, so a round costs what it takes, not the queue's length.
   */
  *queue(get: (id: string) => JobRecord): Generator<JobRecord> {
    if (this.dirty) {
      this.order = [...this.queued].sort((a, b) => {
        const x = get(a);
        const y = get(b);
        return y.job.priority - x.job.priority || x.enqueued_at - y.enqueued_at || (a < b ? -1 : 1);
      });
      this.head = 0;
      this.dirty = false;
    }
    while (this.head < this.order.length && !this.queued.has(this.order[this.head]!)) this.head++;
    for (let i = this.head; i < this.order.length; i++) {
      const id = this.order[i]!;
      if (this.queued.has(id)) yield get(id);
    }
  }
}
