import type { JobRecord } from '../models/job-record.ts';
import { isTerminal } from './job-state.ts';

/** Which queue a job waits in: paid work always comes first; public goods take what capacity is left. */
export type JobClass = 'paid' | 'commons';
export const classOf = (rec: JobRecord): JobClass => (rec.public_good ? 'commons' : 'paid');

/**
 * Queued job ids in queue order (priority, then age). The order is rebuilt only when a job (re)enters the queue; in
 * between a cursor skips what has left it, so a round costs what it takes, not the queue's length.
 */
class OrderedQueue {
  readonly ids = new Set<string>();
  private order: string[] = [];
  private head = 0;
  private dirty = false;

  add(id: string, reordered: boolean): void {
    this.ids.add(id);
    if (reordered) this.dirty = true;
  }

  *items(get: (id: string) => JobRecord): Generator<JobRecord> {
    if (this.dirty) {
      this.order = [...this.ids].sort((a, b) => {
        const x = get(a);
        const y = get(b);
        return y.job.priority - x.job.priority || x.enqueued_at - y.enqueued_at || (a < b ? -1 : 1);
      });
      this.head = 0;
      this.dirty = false;
    }
    while (this.head < this.order.length && !this.ids.has(this.order[this.head]!)) this.head++;
    for (let i = this.head; i < this.order.length; i++) {
      const id = this.order[i]!;
      if (this.ids.has(id)) yield get(id);
    }
  }
}

/**
 * The indexes the store derives from its job records, kept in step on every change: the queues in order (paid work and
 * public goods apart), the jobs with live executions (and which of them are public goods: what paid work may preempt),
 * and per study the jobs not yet terminal (with their epochs, which the live limit counts).
 */
export class JobIndexes {
  private readonly queues: Record<JobClass, OrderedQueue> = {
    paid: new OrderedQueue(),
    commons: new OrderedQueue(),
  };
  /** Jobs with a live execution (assigned ones, and queued ones whose first replicas run while more are wanted). */
  readonly running = new Set<string>();
  /** Of those, the public-goods jobs. */
  readonly runningCommons = new Set<string>();
  private readonly live = new Map<string, number>();
  liveEpochs = 0;
  /** Queued jobs with a queue deadline: only when there are any does a sweep look for expired ones. */
  private readonly deadlines = new Set<string>();

  /** Accounts for a job's change from `before` (undefined: new to the store) to `after`. */
  apply(id: string, before: JobRecord | undefined, after: JobRecord): void {
    const queue = this.queues[classOf(after)];
    queue.ids.delete(id);
    this.running.delete(id);
    this.runningCommons.delete(id);
    this.deadlines.delete(id);
    if (after.status === 'queued' && after.queue_deadline !== null) this.deadlines.add(id);
    if (after.status === 'queued')
      queue.add(id, before?.status !== 'queued' || before.enqueued_at !== after.enqueued_at);
    if (!isTerminal(after) && after.executions.some((e) => e.ended === null)) {
      this.running.add(id);
      if (after.public_good) this.runningCommons.add(id);
    }
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

  queueSize(cls: JobClass): number {
    return this.queues[cls].ids.size;
  }

  /** Queued jobs of one class in queue order. */
  queue(get: (id: string) => JobRecord, cls: JobClass): Generator<JobRecord> {
    return this.queues[cls].items(get);
  }
}
