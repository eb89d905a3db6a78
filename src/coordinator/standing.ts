import type { Logger } from 'pino';
import type { JobRecord } from '../models/job-record.ts';
import type { Clock } from './clock.ts';
import type { StudyFunds } from './funds.ts';
import type { WorkerView } from './placement.ts';
import {
  auditProbability,
  DEFAULT_TRUST,
  established,
  newReputation,
  type Reputation,
  recordVerdict,
  suspect,
  type TrustPolicy,
  trusted,
} from './reputation.ts';
import type { Standing } from './scheduler.ts';
import type { Commit } from './store.ts';

export interface ReputationStore {
  load(): Promise<Reputation[]>;
  save(reps: readonly Reputation[]): Promise<void>;
}

export interface StandingDeps {
  funds: StudyFunds;
  /** A provider's stake in µSIM (from the ledger). */
  stakeOf(workerId: string): number;
  /** Reopens the vote on a job whose unreplicated result came from a provider since caught cheating. */
  reverify(jobId: string): void;
  persist?: ReputationStore;
  clock: Clock;
  policy?: TrustPolicy;
  log: Logger;
}

/** A result accepted on a solo execution's word alone (what an audit failure sends back for a second opinion). */
const unreplicated = (rec: JobRecord, attempt: number) =>
  rec.result?.agreed === 1 && rec.executions.some((e) => e.attempt === attempt && e.solo);

/**
 * Providers' standing as placement sees it: reputation from the verdicts the store commits (BOINC's adaptive
 * replication, see reputation.ts), stake from the ledger, and each study's funds. Reputations are saved in batches
 * (they steer placement; a few verdicts lost in a crash cost a little trust, never a token).
 */
export class ProviderStanding implements Standing {
  private readonly reps = new Map<string, Reputation>();
  private readonly dirty = new Set<string>();
  private saving: Promise<void> | undefined;
  private readonly policy: TrustPolicy;
  private readonly d: StandingDeps;

  constructor(deps: StandingDeps) {
    this.d = deps;
    this.policy = deps.policy ?? DEFAULT_TRUST;
  }

  async load(): Promise<void> {
    for (const r of (await this.d.persist?.load()) ?? []) this.reps.set(r.worker_id, r);
  }

  reputation(workerId: string): Reputation | undefined {
    return this.reps.get(workerId);
  }

  all(): Reputation[] {
    return [...this.reps.values()];
  }

  provider(workerId: string): Pick<WorkerView, 'established' | 'trusted' | 'audit' | 'suspect'> {
    const rep = this.reps.get(workerId);
    return {
      established: established(rep, this.policy),
      trusted: trusted(rep, this.d.stakeOf(workerId), this.policy),
      audit: auditProbability(rep, this.policy),
      suspect: suspect(rep),
    };
  }

  funds() {
    return this.d.funds.available();
  }

  anchored(): boolean {
    for (const r of this.reps.values()) if (established(r, this.policy)) return true;
    return false;
  }

  /** Verdicts a commit made: each updates its provider's reputation; a caught provider's recent solo results reopen. */
  readonly onCommit = (c: Commit): void => {
    if (c.kind !== 'job' || c.after.executions.every((e) => e.verdict === null)) return;
    const before = new Map(c.before.executions.map((e) => [e.attempt, e.verdict]));
    for (const e of c.after.executions) {
      if (e.verdict === null || before.get(e.attempt) === e.verdict) continue;
      const now = this.d.clock.now();
      const rep = this.reps.get(e.worker_id) ?? newReputation(e.worker_id, now);
      const solo = e.verdict === 'valid' && unreplicated(c.after, e.attempt) ? { job_id: c.id } : null;
      const next = recordVerdict(rep, e.verdict, solo, now, this.policy);
      this.reps.set(e.worker_id, next.rep);
      this.dirty.add(e.worker_id);
      if (next.reverify.length > 0) {
        this.d.log.warn(
          { worker_id: e.worker_id, job_id: c.id, reverify: next.reverify.length },
          'provider outvoted: its trust is reset and its recent unreplicated results are re-verified',
        );
        for (const id of next.reverify) this.d.reverify(id);
      }
    }
  };

  /** Saves the reputations changed since the last flush. */
  flush(): Promise<void> {
    if (this.saving || this.dirty.size === 0 || !this.d.persist) return this.saving ?? Promise.resolve();
    const reps = [...this.dirty].map((id) => this.reps.get(id)!);
    this.dirty.clear();
    this.saving = this.d.persist
      .save(reps)
      .catch((e) => {
        for (const r of reps) this.dirty.add(r.worker_id);
        this.d.log.warn({ err: (e as Error).message }, 'reputations not saved; will retry');
      })
      .finally(() => {
        this.saving = undefined;
      });
    return this.saving;
  }
}
