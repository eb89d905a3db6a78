import type { Logger } from 'pino';
import type { StudyRecord } from '../models/study-record.ts';
import { type CommonsPolicy, planRound, type WindowView } from './backfill.ts';
import { seededDraw } from './candidates.ts';
import type { Clock } from './clock.ts';
import type { Dispatcher } from './dispatch.ts';
import { liveExecutions } from './job-state.ts';
import { windowState } from './offpeak.ts';
import { type Funds, fillableSlots, type RoundBudget, type WorkerView } from './placement.ts';
import { preemptibleOf, windowClosures } from './preempt.ts';
import { reconcile } from './reconcile.ts';
import type { StateStore } from './store.ts';
import type { WorkerRegistry } from './workers.ts';

/** What placement needs to know beyond capacity: providers' standing (reputation, stake) and studies' funds. */
export interface Standing {
  provider(workerId: string): Pick<WorkerView, 'established' | 'trusted' | 'audit' | 'suspect'>;
  /** What each study can still commit to new executions (µSIM); a study absent from it has none. */
  funds(): Funds;
  /** Whether any provider has earned trust (online or not): newcomers then never make a quorum by themselves. */
  anchored(): boolean;
}

/** Before any result is in: nobody is established, and studies have nothing to spend (free ones need nothing). */
export const NO_STANDING: Standing = {
  provider: () => ({ established: false, trusted: false, audit: 1 }),
  funds: () => new Map(),
  anchored: () => false,
};

export interface SchedulerDeps {
  standing?: Standing;
  /** Told which studies had executions wait for funds in a round (their status says so). */
  funds?: { markShort(studyIds: Iterable<string>): void };
  /** The draw that decides whether a trusted provider's job is audited (injected so tests can fix it). */
  rand?: () => number;
  /** Uniform draws in [0, 1) that order placement's candidates (default: seeded by the clock at construction). */
  shuffle?: () => number;
  /** What one round may place and examine (default ROUND_BUDGET). */
  budget?: RoundBudget;
  store: StateStore;
  registry: WorkerRegistry;
  dispatch: Dispatcher;
  clock: Clock;
  missedHeartbeats: number;
  tickMs: number;
  /** Where public-goods work may run (default `offpeak`). */
  commonsPolicy?: CommonsPolicy;
  /** How long a public-goods execution may go on after its provider's window closed (default 5 min). */
  offpeakGraceMs?: number;
  log: Logger;
}

export const DEFAULT_OFFPEAK_GRACE_MS = 5 * 60_000;

/**
 * One round's work: a few thousand executions, some 10–40 ms of placement in a 100,000-worker cluster (README,
 * bench:placement). A longer queue takes more rounds, with heartbeats and results handled in between.
 */
export const ROUND_BUDGET: RoundBudget = { placements: 4096, probes: 262_144 };

/** A timer tick this much later than due means the coordinator itself was paused (a long task, a stopped VM). */
const PAUSE_MS = 1000;

/**
 * The scheduling loop: kicked by commits, joins and a timer, it takes a snapshot, reconciles, places and hands the
 * plan to the dispatcher. Rounds never overlap; kicks during a round coalesce into one more. It also notices its own
 * pauses: liveness is then judged afresh, so workers are not blamed for heartbeats the coordinator could not handle.
 */
export class Scheduler {
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private livenessFrom = 0;
  private lastTick = 0;
  private lastSweep = 0;
  private absent = new Map<string, number>();
  private readonly d: SchedulerDeps;
  private readonly shuffle: () => number;

  constructor(deps: SchedulerDeps) {
    this.d = deps;
    this.shuffle = deps.shuffle ?? seededDraw(deps.clock.now());
    // Nobody has been heard from yet: liveness is judged from now on.
    this.livenessFrom = deps.clock.now();
  }

  start(): void {
    this.livenessFrom = this.d.clock.now();
    this.lastTick = performance.now();
    this.timer = setInterval(() => this.tick(), this.d.tickMs);
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.round;
  }

  /** The timer: a round, and a check for a pause of our own (on the monotonic clock: it is about this process). */
  private tick(): void {
    const mono = performance.now();
    if (mono - this.lastTick > PAUSE_MS + this.d.tickMs) {
      const paused = Math.round(mono - this.lastTick);
      this.d.log.warn({ paused_ms: paused }, 'coordinator was paused; judging worker liveness afresh');
      this.livenessFrom = this.d.clock.now();
    }
    this.lastTick = mono;
    this.kick();
  }

  /**
   * Asks for a round: at once when none is running (a submit or a freed slot is acted on without delay), else one more
   * after the running one, however many kicks arrive meanwhile (a batch of results makes one round, not one each).
   */
  kick(): void {
    if (this.stopped) return;
    if (this.round) {
      this.again = true;
      return;
    }
    this.round = this.runRound()
      .catch((e) => this.d.log.error({ err: (e as Error).message }, 'scheduling round failed'))
      .finally(() => {
        this.round = undefined;
        if (this.again) {
          this.again = false;
          setImmediate(() => this.kick());
        }
      });
  }

  /**
   * One round: reconcile, then place what capacity and the round's budget allow. A round that stops at its budget
   * having placed something asks for another at once (after the event loop's pending IO).
   */
  async runRound(): Promise<void> {
    const { store, registry, dispatch, clock } = this.d;
    const now = clock.now();
    const running = [...store.running()].map((id) => store.job(id)!);
    // Queue timeouts and studies left open by a crash need no precision: a sweep four times a second.
    const sweep = now - this.lastSweep >= 250;
    if (sweep) this.lastSweep = now;
    const settled: StudyRecord[] = [];
    if (sweep) {
      for (const s of store.openStudies()) if (store.liveJobs(s.study_id) === 0) settled.push(s);
    }
    const plan = reconcile({
      now,
      assigned: running,
      queued: sweep && store.queuedWithDeadline() > 0 ? store.queue() : [],
      settled,
      workers: registry.liveness(),
      liveness_from: this.livenessFrom,
      missed_heartbeats: this.d.missedHeartbeats,
      absent_since: this.absent,
      inflight: new Set(dispatch.inflight.keys()),
    });
    this.absent = plan.absent_since;
    // Applied while placing; a write that fails here is retried by a later round (the reconciler is level-triggered).
    const reconciling = dispatch
      .apply(plan.actions)
      .catch((e) => this.d.log.warn({ err: (e as Error).message }, 'reconciling actions not all applied'));

    // Capacity from our own records of what runs where, which are current; adverts can be a second old.
    const busy = new Map<string, number>();
    const count = (w: string) => busy.set(w, (busy.get(w) ?? 0) + 1);
    for (const rec of running) for (const e of liveExecutions(rec)) count(e.worker_id);
    for (const [id, ws] of dispatch.inflight) {
      const recorded = new Set(
        store
          .job(id)
          ?.executions.filter((e) => e.ended === null)
          .map((e) => e.worker_id),
      );
      for (const w of ws) if (!recorded.has(w)) count(w);
    }
    const standing = this.d.standing ?? NO_STANDING;
    const policy = this.d.commonsPolicy ?? 'offpeak';
    const views: WorkerView[] = [];
    const windows = new Map<string, WindowView>();
    const closed = new Map<string, number | null>();
    let free = 0;
    for (const { ad } of registry.live(now)) {
      const slotsFree = ad.draining
        ? 0
        : fillableSlots(ad.slots, Math.max(0, ad.slots - (busy.get(ad.worker_id) ?? 0)));
      free += slotsFree;
      views.push({ ...ad, slots_free: slotsFree, ...standing.provider(ad.worker_id) });
      const win = windowState(ad.offpeak, ad.tz, now);
      if (win.open)
        windows.set(ad.worker_id, {
          open: true,
          left_s: win.closesInMs === null ? null : win.closesInMs / 1000,
          price: ad.offpeak_price_per_cpu_s ?? ad.price_per_cpu_s,
        });
      else closed.set(ad.worker_id, win.closedForMs);
    }
    const preemptible = preemptibleOf(
      [...store.runningCommons()].map((id) => store.job(id)!),
      (key) => dispatch.preempting.has(key),
    );
    // A closed window lets public goods finish within the grace, then takes its slots back.
    const closures =
      policy === 'offpeak'
        ? windowClosures(preemptible, closed, now, this.d.offpeakGraceMs ?? DEFAULT_OFFPEAK_GRACE_MS)
        : [];
    const preempting =
      closures.length > 0
        ? dispatch
            .apply(
              closures.map((p) => ({
                kind: 'preempt',
                ...p,
                reason: `${p.worker_id}'s off-peak window closed`,
              })),
            )
            .catch((e) =>
              this.d.log.warn({ err: (e as Error).message }, 'window preemptions not all applied'),
            )
        : undefined;
    const closing = new Set(closures);
    const usable = preemptible.filter((p) => !closing.has(p));
    if (free > 0 || (usable.length > 0 && store.queueSize('paid') > 0)) {
      const budget = this.d.budget ?? ROUND_BUDGET;
      const short = new Set<string>();
      const round = planRound({
        now,
        paid: () => store.queue('paid'),
        commons: () => store.queue('commons'),
        workers: views,
        windows,
        preemptible: usable,
        policy,
        established: (w) => standing.provider(w).established,
        busy: (id) => dispatch.inflight.has(id),
        funds: standing.funds(),
        rand: this.d.rand,
        short,
        anchored: standing.anchored(),
        shuffle: this.shuffle,
        budget,
      });
      this.d.funds?.markShort(short);
      if (round.stopped && round.placements.length > 0) this.again = true;
      await dispatch.place(round.placements);
    }
    await preempting;
    await reconciling;
  }
}
