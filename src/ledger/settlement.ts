import type { JobRecord } from '../models/job-record.ts';
import type { StudyRecord } from '../models/study-record.ts';
import { LedgerError } from './accounts.ts';
import type { Builder, Journal } from './journal.ts';
import { pay, refund, refundToPool, settled, slash } from './rules.ts';

/** A provider outvoted on a job loses ten times what the execution would have earned, and at least 1 SIM. */
export const SLASH_MIN = 1_000_000;
export const slashFor = (pay: number) => Math.max(SLASH_MIN, 10 * pay);

export type SettlementOp =
  | { kind: 'pay'; study_id: string; job_id: string; attempt: number; key: string; amount: number }
  | { kind: 'slash'; job_id: string; attempt: number; key: string; amount: number }
  /** What is left of a study's escrow to its payer's key, or (null: a public good) to the matching pool. */
  | { kind: 'refund'; study_id: string; key: string | null };

/**
 * What a job's record calls for (pure): each valid execution paid what it was placed at, each outvoted one slashed.
 * Only verdicts that `before` did not have yet, unless `before` is omitted (then all: the level-triggered pass).
 */
export function jobSettlement(after: JobRecord, before?: JobRecord): SettlementOp[] {
  // Most commits carry no verdict (an execution started, or ended without a result): nothing to look at.
  if (after.executions.every((e) => e.verdict === null)) return [];
  const had = new Map(before?.executions.map((e) => [e.attempt, e.verdict]));
  const ops: SettlementOp[] = [];
  for (const e of after.executions) {
    if (e.verdict === null || had.get(e.attempt) === e.verdict) continue;
    const ref = { job_id: after.job.job_id, attempt: e.attempt, key: e.worker_id };
    if (e.verdict === 'valid' && e.pay > 0)
      ops.push({ kind: 'pay', study_id: after.job.study_id, ...ref, amount: e.pay });
    if (e.verdict === 'invalid') ops.push({ kind: 'slash', ...ref, amount: slashFor(e.pay) });
  }
  return ops;
}

/**
 * Where what is left of a study's escrow goes when it ends: a public good's to the matching pool (null), a paying
 * study's to its payer; undefined for a free study (no escrow to settle).
 */
function refundTo(study: StudyRecord): string | null | undefined {
  if (study.public_good) return null;
  return study.budget > 0 && study.payer ? study.payer : undefined;
}

export interface SettlementDeps {
  journal: Journal;
  now: () => number;
  log: {
    warn(o: object, m: string): void;
    error(o: object, m: string): void;
    info(o: object, m: string): void;
  };
  /** Pause before retrying an append that failed for want of the server. */
  retryMs?: number;
}

/**
 * Settlement follows committed job and study changes (the composition root subscribes it to the store's commits): a
 * valid execution is paid, an outvoted one slashed, and a study's escrow refunded once it has closed (a public good's
 * to the matching pool). Every posting
 * is named by its operation (`pay:<job>:<attempt>`, `slash:…`, `refund:<study>`), so applying one twice is a no-op;
 * and on start `reconcile` walks every study not yet settled, so a crash between a commit and its posting heals
 * itself — exactly once, never lost. Postings go out one at a time, in commit order: a study's refund always comes
 * after its payments.
 */
export class Settlement {
  private readonly queue: SettlementOp[] = [];
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly d: SettlementDeps;

  constructor(deps: SettlementDeps) {
    this.d = deps;
  }

  onJob(before: JobRecord, after: JobRecord): void {
    this.enqueue(jobSettlement(after, before));
  }

  onStudy(before: StudyRecord | undefined, after: StudyRecord): void {
    const to = refundTo(after);
    if (after.summary && !before?.summary && to !== undefined)
      this.enqueue([{ kind: 'refund', study_id: after.study_id, key: to }]);
  }

  /**
   * The level-triggered pass: for each paying study whose escrow is not settled, every verdict its jobs hold, then
   * its refund once it has closed; for each free study not yet archived, its slashes.
   */
  async reconcile(
    studies: Iterable<StudyRecord>,
    jobsOf: (s: StudyRecord) => Promise<JobRecord[]>,
  ): Promise<number> {
    let n = 0;
    for (const study of studies) {
      const to = refundTo(study);
      // A free study pays nothing but still slashes: its jobs are walked while they are held (until archived).
      if (to === undefined) {
        if (!study.archived) this.enqueue((await jobsOf(study)).flatMap((j) => jobSettlement(j)));
        continue;
      }
      if (settled(this.d.journal.state, study.study_id)) continue;
      const ops = (await jobsOf(study)).flatMap((j) => jobSettlement(j));
      if (study.summary) ops.push({ kind: 'refund', study_id: study.study_id, key: to });
      n += ops.length;
      this.enqueue(ops);
    }
    await this.idle();
    return n;
  }

  /** Resolves once every queued posting is applied. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  stop(): Promise<void> {
    this.stopped = true;
    return this.idle();
  }

  private enqueue(ops: SettlementOp[]): void {
    if (ops.length === 0) return;
    this.queue.push(...ops);
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const op = this.queue[0]!;
      try {
        await this.d.journal.append(this.builder(op));
        this.queue.shift();
      } catch (e) {
        if (e instanceof LedgerError && e.code !== 'conflict') {
          // The rules refuse it (e.g. an escrow already settled): retrying would not change that.
          this.d.log.error({ op, code: e.code, err: e.message }, 'settlement posting refused');
          this.queue.shift();
          continue;
        }
        // The server is away, or other writers kept winning the race: keep the order, try again shortly (on a restart, reconcile covers whatever is lost).
        this.d.log.warn({ op: op.kind, err: (e as Error).message }, 'settlement posting failed; retrying');
        if (this.stopped) return;
        await new Promise((r) => setTimeout(r, this.d.retryMs ?? 1000));
      }
    }
  }

  private builder(op: SettlementOp): Builder {
    const now = this.d.now();
    switch (op.kind) {
      case 'pay':
        return (s) => pay(s, op.study_id, op.key, op.amount, op.job_id, op.attempt, now);
      case 'slash':
        return (s) => slash(s, op.key, op.amount, op.job_id, op.attempt, now);
      case 'refund': {
        const to = op.key;
        return to === null
          ? (s) => refundToPool(s, op.study_id, now)
          : (s) => refund(s, op.study_id, to, now);
      }
    }
  }
}
