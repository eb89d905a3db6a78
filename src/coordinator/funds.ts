import type { Execution, JobRecord } from '../models/job-record.ts';
import type { StudyRecord } from '../models/study-record.ts';
import type { Funds } from './placement.ts';
import type { Commit } from './store.ts';

/**
 * What an execution may still cost its study: its pay while it runs, while its result awaits the vote, and once it
 * is valid (then it is paid). Ended without a result, or outvoted, it costs nothing.
 */
export const committedPay = (e: Execution): number =>
  e.ended === null || (e.ended === 'ok' && e.verdict !== 'invalid') ? e.pay : 0;

const jobCommitted = (rec: JobRecord): number => rec.executions.reduce((s, e) => s + committedPay(e), 0);

/**
 * Each paying study's escrow, kept in step with the store's commits: its budget, and what its executions placed so
 * far may cost. Placement draws on what is left, so a study never commits more than it escrowed (the ledger then
 * cannot be asked to pay more than the budget).
 */
export class StudyFunds {
  private readonly budgets = new Map<string, number>();
  private readonly committed = new Map<string, number>();
  /** Studies that had a job wait for funds in the last round (for their status). */
  private readonly short = new Set<string>();

  /** Accounts for a loaded study and its jobs (on start). */
  load(study: StudyRecord, jobs: readonly JobRecord[]): void {
    if (study.budget === 0 || study.archived) return;
    this.budgets.set(study.study_id, study.budget);
    this.committed.set(
      study.study_id,
      jobs.reduce((s, j) => s + jobCommitted(j), 0),
    );
  }

  readonly onCommit = (c: Commit): void => {
    if (c.kind === 'study') {
      if (c.after.archived) this.drop(c.id);
      else if (!c.before && c.after.budget > 0) {
        this.budgets.set(c.id, c.after.budget);
        this.committed.set(c.id, 0);
      }
      return;
    }
    const study = c.after.job.study_id;
    if (!this.budgets.has(study)) return;
    const delta = jobCommitted(c.after) - jobCommitted(c.before);
    if (delta !== 0) this.committed.set(study, (this.committed.get(study) ?? 0) + delta);
  };

  private drop(studyId: string): void {
    this.budgets.delete(studyId);
    this.committed.delete(studyId);
    this.short.delete(studyId);
  }

  of(studyId: string): { budget: number; committed: number; available: number } | null {
    const budget = this.budgets.get(studyId);
    if (budget === undefined) return null;
    const committed = this.committed.get(studyId) ?? 0;
    return { budget, committed, available: budget - committed };
  }

  /** What every paying study can still commit: a snapshot placement draws down. */
  available(): Funds {
    const out: Funds = new Map();
    for (const [id, budget] of this.budgets) out.set(id, budget - (this.committed.get(id) ?? 0));
    return out;
  }

  /** Records which studies had jobs wait for funds in a round (placement's leftovers). */
  markShort(studyIds: Iterable<string>): void {
    this.short.clear();
    for (const id of studyIds) this.short.add(id);
  }

  waiting(studyId: string): string | null {
    return this.short.has(studyId) ? 'the escrow cannot cover the next execution' : null;
  }
}
