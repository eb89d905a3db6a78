import type { JobRecord } from '../models/job-record.ts';
import { pendingJobs } from './pending.ts';
import {
  type Funds,
  type PendingJob,
  type Placement,
  placeRound,
  type RoundBudget,
  UNBOUNDED,
  type WorkerView,
} from './placement.ts';
import { chooseVictims, type Preemptible } from './preempt.ts';

/**
 * One scheduling round's placements across both classes of work (pure): paid work first, on any free slot; public
 * goods on what is left, only where the provider's off-peak window is open (or, by policy, on any idle slot), at its
 * off-peak price; then paid work that found no free slot takes the slots of running public-goods executions, which
 * are preempted youngest first.
 */

/**
 * Where public goods may run: `offpeak` on idle slots inside a provider's window, and only if the window stays open
 * long enough for the job; `idle` on any slot no paid job wants (at the off-peak price inside a window, else the
 * usual one).
 */
export const COMMONS_POLICIES = ['offpeak', 'idle'] as const;
export type CommonsPolicy = (typeof COMMONS_POLICIES)[number];

/** A worker's off-peak window as of the round. */
export interface WindowView {
  open: boolean;
  /** While open: seconds until it closes. */
  left_s: number | null;
  /** SIM per CPU-second inside it. */
  price: number;
}

export interface BackfillInput {
  now: number;
  /** The queues, in order (each may be walked more than once). */
  paid: () => Iterable<JobRecord>;
  commons: () => Iterable<JobRecord>;
  /** Workers with their free slots now. */
  workers: readonly WorkerView[];
  /** Each worker's window (absent: it has none). */
  windows: ReadonlyMap<string, WindowView>;
  /** Live public-goods executions paid work may preempt. */
  preemptible: readonly Preemptible[];
  policy: CommonsPolicy;
  /** Whether a provider has earned trust (from the reputations). */
  established: (workerId: string) => boolean;
  /** Jobs being assigned right now: not again until that is recorded. */
  busy?: (jobId: string) => boolean;
  funds?: Funds;
  rand?: () => number;
  short?: Set<string>;
  anchored?: boolean;
  shuffle?: () => number;
  budget?: RoundBudget;
}

export interface BackfillRound {
  placements: Placement[];
  /** Of them, public-goods executions, and paid ones that preempt. */
  commons: number;
  preempting: number;
  probes: number;
  /** The budget ran out with executions still to try. */
  stopped: boolean;
}

const slotsOf = (views: readonly WorkerView[]) => views.reduce((s, w) => s + w.slots_free, 0);

/** The workers public goods may use, with what the paid placements left of their slots, priced for the commons. */
export function commonsViews(
  workers: readonly WorkerView[],
  windows: ReadonlyMap<string, WindowView>,
  policy: CommonsPolicy,
  taken: ReadonlyMap<string, number>,
): WorkerView[] {
  const out: WorkerView[] = [];
  for (const w of workers) {
    const free = w.slots_free - (taken.get(w.worker_id) ?? 0);
    if (free <= 0) continue;
    const win = windows.get(w.worker_id);
    if (win?.open)
      out.push({
        ...w,
        slots_free: free,
        price_per_cpu_s: win.price,
        window_left_s: policy === 'offpeak' ? win.left_s : null,
      });
    else if (policy === 'idle') out.push({ ...w, slots_free: free, window_left_s: null });
  }
  return out;
}

/** How many executions (placed or running) each worker has among `items`. */
const perWorker = (items: readonly { worker_id: string }[]) => {
  const out = new Map<string, number>();
  for (const p of items) out.set(p.worker_id, (out.get(p.worker_id) ?? 0) + 1);
  return out;
};

export function planRound(input: BackfillInput): BackfillRound {
  const { now, workers, budget = UNBOUNDED } = input;
  const common = {
    now,
    funds: input.funds ?? new Map(),
    rand: input.rand,
    short: input.short,
    anchored: input.anchored,
    shuffle: input.shuffle,
  };
  let probes = 0;
  const placements: Placement[] = [];
  const left = (): RoundBudget => ({
    placements: budget.placements - placements.length,
    probes: budget.probes - probes,
  });
  const pending = (queue: Iterable<JobRecord>, free: number) =>
    pendingJobs(queue, {
      now,
      free: Math.min(free, budget.placements),
      established: input.established,
      ...(input.busy ? { busy: input.busy } : {}),
    });

  // 1. Paid work on free slots.
  const paid = pending(input.paid(), slotsOf(workers));
  const first = placeRound({ ...common, jobs: paid, workers, budget: left() });
  placements.push(...first.placements);
  probes += first.probes;
  if (first.stopped) return { placements, commons: 0, preempting: 0, probes, stopped: true };

  // 2. Public goods on the slots paid work left.
  const views = commonsViews(workers, input.windows, input.policy, perWorker(placements));
  let commons = 0;
  const commonsFree = slotsOf(views);
  if (commonsFree > 0) {
    const second = placeRound({
      ...common,
      jobs: pending(input.commons(), commonsFree),
      workers: views,
      budget: left(),
    });
    placements.push(...second.placements);
    commons = second.placements.length;
    probes += second.probes;
    if (second.stopped) return { placements, commons, preempting: 0, probes, stopped: true };
  }

  // 3. Paid work still wanting executions takes public-goods slots.
  if (input.preemptible.length === 0) return { placements, commons, preempting: 0, probes, stopped: false };
  const victims = perWorker(input.preemptible);
  const placed = new Map<string, string[]>();
  for (const p of first.placements) placed.set(p.job_id, [...(placed.get(p.job_id) ?? []), p.worker_id]);
  const waiting: PendingJob[] = [];
  for (const job of pending(input.paid(), input.preemptible.length)) {
    const got = placed.get(job.job_id) ?? [];
    if (job.want > got.length)
      waiting.push({ ...job, want: job.want - got.length, exclude: [...job.exclude, ...got] });
  }
  if (waiting.length === 0) return { placements, commons, preempting: 0, probes, stopped: false };
  const preemptViews = workers
    .filter((w) => victims.has(w.worker_id))
    .map((w) => ({ ...w, slots_free: victims.get(w.worker_id)!, window_left_s: null }));
  const third = placeRound({ ...common, jobs: waiting, workers: preemptViews, budget: left() });
  probes += third.probes;
  const preempting = chooseVictims(third.placements, input.preemptible);
  placements.push(...preempting);
  return { placements, commons, preempting: preempting.length, probes, stopped: third.stopped };
}
