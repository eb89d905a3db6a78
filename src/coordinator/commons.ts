import type { Logger } from 'pino';
import type { Bank } from '../ledger/bank.ts';
import { fundingOf } from '../ledger/funding.ts';
import { balance } from '../ledger/rules.ts';
import type { CommonsReply, CommonsStudy, FunderShare, StudyStatus } from '../models/api.ts';
import type { StudyRecord } from '../models/study-record.ts';
import type { CommonsPolicy } from './backfill.ts';
import type { Clock } from './clock.ts';
import { ConflictError, NotFoundError } from './errors.ts';
import type { StudyFunds } from './funds.ts';
import type { StateStore } from './store.ts';

export interface CommonsDeps {
  store: StateStore;
  bank: Bank;
  funds: StudyFunds;
  clock: Clock;
  /** A study's status as the API reports it (its epochs done, why it waits). */
  status: (studyId: string) => StudyStatus;
  /** New funds may let waiting executions be placed. */
  kick: () => void;
  policy: CommonsPolicy;
  /** A funding round this often (null: only when asked). */
  roundEveryMs: number | null;
  log: Logger;
}

/** Funding rounds run this often by default: the pool is matched to what funders gave since. */
export const DEFAULT_ROUND_EVERY_MS = 10 * 60_000;

/**
 * The Simulation Commons: funders give SIM to public-goods studies or to the matching pool (signed requests the bank
 * checks), funding rounds match the pool to what each study was given by quadratic funding, and the commons view
 * tells what was raised, matched, computed and spent — and, for one funder, what its contributions computed.
 */
export class Commons {
  private timer: NodeJS.Timeout | undefined;
  private nextRoundAt: number | null = null;
  private running: Promise<unknown> | undefined;
  private readonly d: CommonsDeps;

  constructor(deps: CommonsDeps) {
    this.d = deps;
  }

  start(): void {
    const every = this.d.roundEveryMs;
    if (every === null) return;
    this.nextRoundAt = this.d.clock.now() + every;
    this.timer = setInterval(() => {
      this.nextRoundAt = this.d.clock.now() + every;
      void this.round().catch((e) => this.d.log.warn({ err: (e as Error).message }, 'funding round failed'));
    }, every);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** A signed contribution to a public-goods study or to the pool. */
  async fund(raw: unknown) {
    const reply = await this.d.bank.fund(raw, (studyId) => this.fundable(studyId));
    this.d.kick();
    return reply;
  }

  /** Throws unless a study is a public good still running (only those take contributions). */
  private fundable(studyId: string): void {
    const study = this.d.store.study(studyId);
    if (!study) throw new NotFoundError(`no study ${studyId}`);
    if (!study.public_good)
      throw new ConflictError(`${studyId} is not a public good: fund a public-goods study or the pool`);
    if (study.state !== 'running')
      throw new ConflictError(`${studyId} has ended (${study.state}): fund another or the pool`);
  }

  /**
   * Matches the pool to the contributions made since each running public good was last matched (one posting, once:
   * its op id is the round's number). Null when there was nothing to match.
   */
  round() {
    const eligible = this.publicGoods()
      .filter((s) => s.state === 'running')
      .map((s) => s.study_id);
    const run = this.d.bank.matchRound(eligible).then((r) => {
      if (r) {
        this.d.log.info({ round: r.round, matches: r.matches.length }, 'funding round matched');
        this.d.kick();
      }
      return r;
    });
    this.running = run.catch(() => {});
    return run;
  }

  private publicGoods(): StudyRecord[] {
    return [...this.d.store.allStudies()].filter((s) => s.public_good !== null);
  }

  /** The commons as a reader sees it: newest studies first, running ones before ended ones. */
  view(limit: number, funder?: string): CommonsReply {
    const state = this.d.bank.journal.state;
    const studies = this.publicGoods()
      .sort(
        (a, b) =>
          Number(b.state === 'running') - Number(a.state === 'running') || b.submitted_at - a.submitted_at,
      )
      .slice(0, limit)
      .map((s) => this.studyView(s));
    const totals = { contributed: 0, matched: 0, spent: 0, epochs_done: 0 };
    for (const s of studies) {
      totals.contributed += s.contributed;
      totals.matched += s.matched;
      totals.spent += s.spent;
      totals.epochs_done += s.epochs.done;
    }
    return {
      pool: balance(state, 'pool'),
      pool_funders: state.funding.pool.size,
      rounds: state.funding.rounds,
      next_round_at: this.nextRoundAt,
      policy: this.d.policy,
      studies,
      totals,
      funder: funder ? this.funderView(funder, studies) : null,
    };
  }

  private studyView(s: StudyRecord): CommonsStudy {
    const f = fundingOf(this.d.bank.journal.state, s.study_id);
    const status = this.d.status(s.study_id);
    const funds = this.d.funds.of(s.study_id);
    return {
      study_id: s.study_id,
      name: s.name,
      title: s.public_good!.title,
      description: s.public_good!.description,
      state: s.state,
      submitted_at: s.submitted_at,
      finished_at: s.finished_at,
      funders: f.funders,
      contributed: f.contributed,
      matched: f.matched,
      spent: f.spent,
      returned: f.returned,
      available: Math.max(0, funds?.available ?? 0),
      epochs: { total: status.epochs.total, done: status.epochs.done },
      waiting: status.waiting,
    };
  }

  /** A funder's part of each study it gave to: its share of what the study raised, of its epochs and its spending. */
  private funderView(key: string, studies: readonly CommonsStudy[]): FunderShare {
    const state = this.d.bank.journal.state;
    const out: FunderShare = {
      key,
      pool: state.funding.pool.get(key) ?? 0,
      studies: [],
      epochs: 0,
      spent: 0,
    };
    for (const s of studies) {
      const given = fundingOf(state, s.study_id).byKey.get(key) ?? 0;
      if (given === 0) continue;
      const raised = s.contributed + s.matched;
      const share = raised > 0 ? given / raised : 0;
      const part = {
        study_id: s.study_id,
        title: s.title,
        contributed: given,
        share,
        epochs: share * s.epochs.done,
        spent: Math.floor(share * s.spent),
      };
      out.studies.push(part);
      out.epochs += part.epochs;
      out.spent += part.spent;
    }
    return out;
  }
}
