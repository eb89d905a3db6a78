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
 * cannot be asked to pay more than the budget). A public-goods study's budget is what its escrow has raised so far
 * (contributions and matches, from the ledger): it grows as funders give, and what it cannot cover waits.
 */
export class StudyFunds {
  private readonly budgets = new Map<string, number>();
  /** Public-goods studies held (their budget is `raised`). */
  private readonly commons = new Set<string>();
  private readonly raised: (studyId: string) => number;

  /** `raised`: what a public-goods study's escrow has received in all (µSIM; default: nothing). */
  constructor(raised: (studyId: string) => number = () => 0) {
    this.raised = raised;
  }
  private readonly committed = new Map<string, number>();
  /** Studies that had a job wait for funds in the last round (for their status). */
  private readonly short = new Set<string>();

  /** Accounts for a loaded study and its jobs (on start). */
  load(study: StudyRecord, jobs: readonly JobRecord[]): void {
    if (study.archived || (study.budget === 0 && !study.public_good)) return;
    this.hold(study);
    this.committed.set(
      study.study_id,
      jobs.reduce((s, j) => s + jobCommitted(j), 0),
    );
  }

  readonly onCommit = (c: Commit): void => {
    if (c.kind === 'study') {
      if (c.after.archived) this.drop(c.id);
      else if (!c.before && (c.after.budget > 0 || c.after.public_good)) {
        this.hold(c.after);
        this.committed.set(c.id, 0);
      }
      return;
    }
    const study = c.after.job.study_id;
    if (!this.budgets.has(study)) return;
    const delta = jobCommitted(c.after) - jobCommitted(c.before);
    if (delta !== 0) this.committed.set(study, (this.committed.get(study) ?? 0) + delta);
  };

  private hold(study: StudyRecord): void {
    this.budgets.set(study.study_id, study.budget);
    if (study.public_good) this.commons.add(study.study_id);
  }

  private budgetOf(studyId: string): number | undefined {
    return this.commons.has(studyId) ? this.raised(studyId) : this.budgets.get(studyId);
  }

  private drop(studyId: string): void {
    this.budgets.delete(studyId);
    this.commons.delete(studyId);
    this.committed.delete(studyId);
    this.short.delete(studyId);
  }

  of(studyId: string): { budget: number; committed: number; available: number } | null {
    if (!this.budgets.has(studyId)) return null;
    const budget = this.budgetOf(studyId)!;
    const committed = this.committed.get(studyId) ?? 0;
    return { budget, committed, available: budget - committed };
  }

  /** What every paying study can still commit: a snapshot placement draws down. */
  available(): Funds {
    const out: Funds = new Map();
    for (const id of this.budgets.keys()) out.set(id, this.budgetOf(id)! - (this.committed.get(id) ?? 0));
    return out;
  }

  /** Records which studies had jobs wait for funds in a round (placement's leftovers). */
  markShort(studyIds: Iterable<string>): void {
    this.short.clear();
    for (const id of studyIds) this.short.add(id);
  }

  waiting(studyId: string): string | null {
    if (!this.short.has(studyId)) return null;
    return this.commons.has(studyId)
      ? 'its funds cannot cover the next execution: waiting for contributions or a match'
      : 'the escrow cannot cover the next execution';
  }
}
