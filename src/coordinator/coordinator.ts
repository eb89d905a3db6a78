import type { NatsConnection } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { Bank } from '../ledger/bank.ts';
import { raisedOf } from '../ledger/funding.ts';
import { stakeOf } from '../ledger/rules.ts';
import { Settlement } from '../ledger/settlement.ts';
import { definitionsFor, keepStreams, type Resources, type StreamKeeper } from '../transport/resources.ts';
import type { CommonsPolicy } from './backfill.ts';
import { type Clock, systemClock } from './clock.ts';
import { Commons, DEFAULT_ROUND_EVERY_MS } from './commons.ts';
import { Dispatcher } from './dispatch.ts';
import { EventPublisher } from './events.ts';
import { StudyFunds } from './funds.ts';
import { type Intake, threadIntake } from './intake-pool.ts';
import { DEFAULT_RETRY, isTerminal, liveExecutions, type RetryPolicy, reverify } from './job-state.ts';
import { getStudyJobs } from './jobspecs.ts';
import { Outputs } from './outputs.ts';
import type { TrustPolicy } from './reputation.ts';
import { kvReputations } from './reputation-kv.ts';
import { ResultsConsumer } from './results.ts';
import { Scheduler } from './scheduler.ts';
import { ProviderStanding, type ReputationStore } from './standing.ts';
import { StateStore } from './store.ts';
import { StudyService } from './studies.ts';
import { WorkerRegistry } from './workers.ts';

export interface CoordinatorOptions {
  /** Image every job pins (an image ID where Docker workers exist). */
  image: string;
  retry?: RetryPolicy;
  /** Added to a job's timeout to form its lease: room for container start-up and result upload. */
  leaseGraceMs?: number;
  /** A worker is lost after this many missed heartbeats. */
  missedHeartbeats?: number;
  tickMs?: number;
  /** How long a worker has to answer an assignment. */
  assignTimeoutMs?: number;
  /** Epochs of live studies held at most (a submit beyond it is refused with `conflict`). */
  maxLiveEpochs?: number;
  /** Bytes of accepted outputs kept in memory for result pages. */
  outputCacheBytes?: number;
  clock?: Clock;
  /** Where submits are expanded (default: a worker thread). */
  intake?: Intake;
  /** Run scheduling rounds on a timer as well as on changes (default true; the test harness drives them). */
  timer?: boolean;
  /** When providers earn trust (adaptive replication). */
  trust?: TrustPolicy;
  /** The draw that decides audits of trusted providers' jobs (default Math.random). */
  rand?: () => number;
  /** A provider's stake in µSIM (default: the ledger's; none without one). */
  stakeOf?: (workerId: string) => number;
  /** The SIM ledger: budgets are escrowed, valid executions paid, outvoted ones slashed (none: only free studies). */
  bank?: Bank;
  /** Where reputations are kept (default: KV `reputation`). */
  reputations?: ReputationStore;
  /** Throws when this coordinator may no longer write (a standby took over; see leadership.ts). */
  fence?: () => void;
  /** Where public goods run (default `offpeak`: idle slots inside providers' windows). */
  commonsPolicy?: CommonsPolicy;
  /** How long public goods may go on after a provider's window closed (default 5 min). */
  offpeakGraceMs?: number;
  /** Funding rounds this often (default 10 min; null: only when `commons.round()` is called). */
  roundEveryMs?: number | null;
  log: Logger;
}

export const DEFAULT_MAX_LIVE_EPOCHS = 300_000;

/**
 * The composition root: the state store, the worker registry, the actors around them and how they listen to each
 * other. Commits drive everything that follows a change: events, study closing, cancels to workers, and the next
 * scheduling round.
 */
export class Coordinator {
  readonly store: StateStore;
  readonly registry: WorkerRegistry;
  readonly studies: StudyService;
  readonly scheduler: Scheduler;
  readonly funds: StudyFunds;
  readonly standing: ProviderStanding;
  readonly settlement: Settlement | undefined;
  readonly bank: Bank | undefined;
  /** The Simulation Commons (with a ledger). */
  readonly commons: Commons | undefined;
  readonly image: string;
  private readonly events: EventPublisher;
  private readonly dispatch: Dispatcher;
  private readonly results: ResultsConsumer;
  private readonly intake: Intake;
  private readonly nc: NatsConnection;
  private readonly resources: Resources;
  private readonly log: Logger;
  private readonly timer: boolean;
  private keeper: StreamKeeper | undefined;
  private housekeeping: NodeJS.Timeout | undefined;

  constructor(nc: NatsConnection, resources: Resources, o: CoordinatorOptions) {
    const clock = o.clock ?? systemClock;
    const retry = o.retry ?? DEFAULT_RETRY;
    const missedHeartbeats = o.missedHeartbeats ?? 3;
    this.nc = nc;
    this.resources = resources;
    this.log = o.log;
    this.image = o.image;
    this.timer = o.timer ?? true;
    this.intake = o.intake ?? threadIntake();
    this.store = new StateStore(resources, clock, o.log, o.fence);
    this.registry = new WorkerRegistry({ clock, missedHeartbeats, log: o.log });
    // A public good's events are public, like its results.
    this.events = new EventPublisher(nc, clock, (id) => {
      const s = this.store.study(id);
      return s?.public_good ? null : s?.owner;
    });
    const outputs = new Outputs(resources, o.outputCacheBytes);
    this.funds = new StudyFunds((id) => (o.bank ? raisedOf(o.bank.journal.state, id) : 0));
    this.standing = new ProviderStanding({
      funds: this.funds,
      stakeOf: o.stakeOf ?? (o.bank ? (w) => stakeOf(o.bank!.journal.state, w) : () => 0),
      reverify: (id) => {
        // Only while its study is open: a closed study's results have been read; its provider is slashed all the same.
        const rec = this.store.job(id);
        if (!rec || this.store.study(rec.job.study_id)?.summary) return;
        const reopened = this.store
          .update(id, (r) => reverify(r, clock.now(), retry))
          .catch((e) =>
            o.log.warn({ job_id: id, err: (e as Error).message }, 're-verification not recorded'),
          );
        this.studies.holdOpen(rec.job.study_id, reopened);
      },
      persist: o.reputations ?? kvReputations(resources.kv.reputation),
      clock,
      ...(o.trust ? { policy: o.trust } : {}),
      log: o.log,
    });
    this.studies = new StudyService({
      resources,
      store: this.store,
      registry: this.registry,
      outputs,
      intake: this.intake,
      clock,
      image: o.image,
      retry,
      maxLiveEpochs: o.maxLiveEpochs ?? DEFAULT_MAX_LIVE_EPOCHS,
      funds: this.funds,
      ...(o.bank ? { bank: o.bank } : {}),
      log: o.log,
    });
    this.dispatch = new Dispatcher({
      nc,
      store: this.store,
      registry: this.registry,
      clock,
      retry,
      leaseGraceMs: o.leaseGraceMs ?? 30_000,
      assignTimeoutMs: o.assignTimeoutMs ?? 2000,
      log: o.log,
      close: (id) => this.studies.close(id),
      flushEvents: () => this.events.flush(),
    });
    this.scheduler = new Scheduler({
      standing: this.standing,
      funds: this.funds,
      ...(o.rand ? { rand: o.rand } : {}),
      store: this.store,
      registry: this.registry,
      dispatch: this.dispatch,
      clock,
      missedHeartbeats,
      tickMs: o.tickMs ?? 100,
      commonsPolicy: o.commonsPolicy ?? 'offpeak',
      ...(o.offpeakGraceMs !== undefined ? { offpeakGraceMs: o.offpeakGraceMs } : {}),
      log: o.log,
    });
    this.results = new ResultsConsumer({
      resources,
      store: this.store,
      outputs,
      registry: this.registry,
      clock,
      retry,
      log: o.log,
      afterTurn: () => this.events.flush(),
    });
    this.bank = o.bank;
    this.commons =
      o.bank &&
      new Commons({
        store: this.store,
        bank: o.bank,
        funds: this.funds,
        clock,
        status: (id) => this.studies.status(id),
        kick: () => this.scheduler.kick(),
        policy: o.commonsPolicy ?? 'offpeak',
        roundEveryMs: o.roundEveryMs === undefined ? DEFAULT_ROUND_EVERY_MS : o.roundEveryMs,
        log: o.log,
      });
    this.settlement =
      o.bank && new Settlement({ journal: o.bank.journal, now: () => clock.now(), log: o.log });
    const settlement = this.settlement;
    // Payments, slashes and refunds follow commits (the ledger never imports the coordinator).
    if (settlement)
      this.store.onCommit((c) =>
        c.kind === 'job' ? settlement.onJob(c.before, c.after) : settlement.onStudy(c.before, c.after),
      );
    this.store.onCommit(this.funds.onCommit);
    this.store.onCommit(this.standing.onCommit);
    this.store.onCommit(this.events.onCommit);
    this.store.onCommit(this.dispatch.onCommit);
    this.store.onCommit(this.studies.onCommit);
    this.store.onCommit((c) => {
      // A job left the queue or the running set, came back to the queue, or an execution ended (a slot is free):
      // capacity or work changed.
      if (
        c.kind === 'job' &&
        (c.before.status !== c.after.status ||
          isTerminal(c.after) ||
          liveExecutions(c.before).length !== liveExecutions(c.after).length)
      )
        this.scheduler.kick();
      if (c.kind === 'study' && c.before === undefined) this.scheduler.kick();
    });
    this.registry.onJoin(() => this.scheduler.kick());
  }

  async start(): Promise<void> {
    // nats-server 2.9 does not restore memory streams (EVENTS) after a restart: re-ensure them on every reconnect.
    this.keeper = keepStreams(
      this.nc,
      this.resources.jsm,
      this.log,
      Object.values(definitionsFor(this.resources.replicas)),
    );
    const loaded = await this.store.load();
    for (const study of this.store.allStudies()) this.funds.load(study, this.store.jobsOf(study));
    await this.standing.load();
    if (this.settlement) {
      // Level-triggered: whatever a crash left between a commit and its posting is posted now, once.
      const healed = await this.settlement.reconcile(this.store.allStudies(), async (s) =>
        s.archived ? ((await getStudyJobs(this.resources, s.study_id)) ?? []) : this.store.jobsOf(s),
      );
      if (healed > 0) this.log.info({ postings: healed }, 'settlement reconciled');
    }
    await this.registry.start(this.nc, this.resources);
    await this.results.start();
    if (this.timer) {
      this.scheduler.start();
      this.commons?.start();
      this.housekeeping = setInterval(() => {
        void this.studies.archiveFinished();
        void this.standing.flush();
        void this.bank
          ?.releaseDue()
          .catch((e) => this.log.warn({ err: (e as Error).message }, 'unbonded stake not released'));
      }, 1000);
      this.housekeeping.unref();
    }
    this.log.info({ ...loaded, image: this.image }, 'coordinator started');
  }

  async stop(): Promise<void> {
    clearInterval(this.housekeeping);
    this.keeper?.stop();
    this.registry.stop();
    await this.commons?.stop();
    await this.scheduler.stop();
    await this.results.stop();
    await this.studies.idle();
    await this.store.settle();
    await this.settlement?.stop();
    await this.standing.flush();
    this.events.flush();
    await this.intake.close();
  }
}
