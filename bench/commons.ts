// The Simulation Commons over a simulated day: a discrete-event simulation (a simulated clock and an event heap) of a
// provider pool across time zones, paid work arriving with peaks, and a public-goods backlog, scheduled by the
// coordinator's own pure code — the queues (indexes.ts `JobIndexes`), the job state machine (job-state.ts), the round
// (backfill.ts `planRound`: paid work first, public goods on idle slots inside open off-peak windows, then paid work
// preempting public goods youngest first), the preemptible executions and window closures (preempt.ts) and the
// windows themselves (offpeak.ts `windowState`); no NATS, no processes. The same seeded day runs twice, without and
// with the commons, and the bench reports:
//  1. utilisation: public-goods slot-seconds inside providers' open windows ÷ idle slot-seconds inside them (idle: not
//     used by paid work), over the 24 h measured — target ≥ 90 %;
//  2. the paid jobs' queueing delay (arrival → placement; a placement that preempts starts after the stop delay)
//     p50 / p95 / p99 without and with the commons, and the p99's increase — target ≤ 5 %;
//  3. the share of public-goods CPU lost to preemption: CPU-seconds of executions that were preempted ÷ all the
//     public-goods CPU-seconds run, by paid work and by closing windows;
// with counts (paid jobs, public goods completed, preemptions), rounds and the wall time per round.
//
// Rounds run when something happened (a paid arrival, an execution's end, a preempted container's slot coming free,
// a window opening or closing, a window's grace running out), as the coordinator's are kicked by commits; events at
// the same simulated instant make one round, and rounds run at most once per --round-gap-s simulated seconds (1 s by
// default; 0: one per instant with an event). A round is skipped, as the scheduler skips it, when there is no free slot
// and no paid work that could preempt, and also when neither queue has work a free slot could take (such a round
// places nothing).
//
// Flags, or environment variables (`npm run bench:commons -- --help` lists them): --workers (BENCH_WORKERS, 2000),
// --peak-load (BENCH_LOAD, 1.05), --base-load (0.3), --paid-median-min (12), --commons-median-min (15),
// --estimate-error (0.2), --round-gap-s (1), --stop-s (BENCH_STOP_S, 1), --grace-s (BENCH_GRACE_S, 300),
// --warmup-h (2), --seed (BENCH_SEED, 1). Prints a table and writes bench/results/commons.json.
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import Table from 'cli-table3';
import { type CommonsPolicy, planRound, type WindowView } from '../src/coordinator/backfill.ts';
import { seededDraw } from '../src/coordinator/candidates.ts';
import { JobIndexes } from '../src/coordinator/indexes.ts';
import { DEFAULT_MAX_PRICE } from '../src/coordinator/intake.ts';
import {
  DEFAULT_RETRY,
  endExecution,
  type JobTerms,
  liveExecution,
  newJobRecord,
  report,
  startExecution,
} from '../src/coordinator/job-state.ts';
import { windowState } from '../src/coordinator/offpeak.ts';
import { fillableSlots, type WorkerView } from '../src/coordinator/placement.ts';
import { preemptibleOf, windowClosures } from '../src/coordinator/preempt.ts';
import {
  CPU_S_PER_EPOCH,
  CPU_S_PER_JOB,
  CPU_S_PER_PROSUMER_INTERVAL,
  jobWork,
} from '../src/coordinator/pricing.ts';
import { ROUND_BUDGET } from '../src/coordinator/scheduler.ts';
import type { Job } from '../src/models/job.ts';
import type { JobRecord } from '../src/models/job-record.ts';
import type { OffPeakWindow } from '../src/models/worker.ts';
import { envNumber } from './env.ts';
import { templateJob } from './template-job.ts';

// ---- Parameters ---------------------------------------------------------------------------------------------------

/** Each setting: its environment variable, default and meaning; the flag is its key. */
const SETTINGS = {
  workers: { env: 'BENCH_WORKERS', fallback: 2000, help: 'providers (1–4 slots each)' },
  'peak-load': { env: 'BENCH_LOAD', fallback: 1.05, help: 'paid demand ÷ capacity at the peaks' },
  'base-load': { env: 'BENCH_BASE_LOAD', fallback: 0.3, help: 'paid demand ÷ capacity in the trough' },
  'paid-median-min': { env: 'BENCH_PAID_MEDIAN_MIN', fallback: 12, help: 'median paid job, minutes' },
  'commons-median-min': {
    env: 'BENCH_COMMONS_MEDIAN_MIN',
    fallback: 15,
    help: 'median public-goods job (its estimate), minutes',
  },
  'estimate-error': {
    env: 'BENCH_ESTIMATE_ERROR',
    fallback: 0.2,
    help: 'σ of ln(true ÷ estimated work) of public goods (0: exact)',
  },
  'round-gap-s': {
    env: 'BENCH_ROUND_GAP_S',
    fallback: 1,
    help: 'rounds at most once per this many simulated s (0: every instant with an event)',
  },
  'stop-s': {
    env: 'BENCH_STOP_S',
    fallback: 1,
    help: 'a preempted container’s stop before its slot is reused',
  },
  'grace-s': {
    env: 'BENCH_GRACE_S',
    fallback: 300,
    help: 'how long public goods run on after a window closes',
  },
  'warmup-h': { env: 'BENCH_WARMUP_H', fallback: 2, help: 'simulated hours before the measured day' },
  seed: { env: 'BENCH_SEED', fallback: 1, help: 'seed of every draw' },
} as const;
type Setting = keyof typeof SETTINGS;

const { values: flags } = parseArgs({
  options: {
    ...(Object.fromEntries(Object.keys(SETTINGS).map((k) => [k, { type: 'string' }])) as Record<
      Setting,
      { type: 'string' }
    >),
    help: { type: 'boolean', short: 'h' },
  },
});
if (flags.help) {
  console.log(
    'usage: npm run bench:commons -- [--flag value]…   (or the environment variables; default last)',
  );
  for (const [k, s] of Object.entries(SETTINGS))
    console.log(`  --${k.padEnd(19)} ${s.env.padEnd(25)} ${s.help} (${s.fallback})`);
  process.exit(0);
}
const setting = (k: Setting): number => {
  const v = flags[k];
  if (v === undefined) return envNumber(SETTINGS[k].env, SETTINGS[k].fallback);
  const n = Number(v);
  if (v === '' || !Number.isFinite(n) || n < 0) throw new Error(`--${k}: expected a number ≥ 0, got ${v}`);
  return n;
};
const P = Object.fromEntries(Object.keys(SETTINGS).map((k) => [k, setting(k as Setting)])) as Record<
  Setting,
  number
>;
if (!Number.isInteger(P.workers) || P.workers < 1) throw new Error('--workers: expected a whole number ≥ 1');
if (P['peak-load'] < P['base-load']) throw new Error('--peak-load must be at least --base-load');
const WORKERS = P.workers;
const ROUND_GAP_MS = P['round-gap-s'] * 1000;
const STOP_MS = P['stop-s'] * 1000;
const GRACE_MS = P['grace-s'] * 1000;
const SEED = P.seed;
const POLICY: CommonsPolicy = 'offpeak';

const MINUTE = 60_000;
const HOUR = 3_600_000;
/** The measured day: a Monday in June (daylight saving on in the north, off in the south; no clock change in it). */
const DAY_START = Date.UTC(2026, 5, 15);
const DAY_END = DAY_START + 24 * HOUR;
/** The run starts before the day (so the pool is not empty at 00:00) and goes on until the day's paid jobs are placed. */
const SIM_START = DAY_START - P['warmup-h'] * HOUR;
const SIM_LIMIT = DAY_END + 12 * HOUR;
/**
 * Windows are looked at on every quarter hour (and at every instant one closes): every zone here is a whole or half
 * hour off UTC and every window starts on the hour, so none opens unseen.
 */
const WINDOW_CHECK_MS = 15 * MINUTE;
/** Leases are not simulated (no worker is lost). */
const LEASE_MS = 1e12;

/** Where the providers are, and how many of them (weights). */
const ZONES: [string, number][] = [
  ['Europe/Berlin', 0.2],
  ['Europe/London', 0.1],
  ['America/New_York', 0.18],
  ['America/Los_Angeles', 0.12],
  ['America/Sao_Paulo', 0.07],
  ['Asia/Kolkata', 0.13],
  ['Asia/Tokyo', 0.1],
  ['Australia/Sydney', 0.1],
];
/** Off-peak windows on the provider's own clock, and how often each is declared. */
const WINDOWS: [string, OffPeakWindow[], number][] = [
  ['22-06', [{ from_hour: 22, to_hour: 6 }], 0.6],
  ['23-07', [{ from_hour: 23, to_hour: 7 }], 0.25],
  ['0-08', [{ from_hour: 0, to_hour: 8 }], 0.15],
];
/** Usual price per CPU-second: log-normal around this; the off-peak price is 30–60 % of it. */
const PRICE_MEDIAN = 0.0008;
/** What paid studies pay at most (above every provider's usual price); public goods pay up to the default cap. */
const PAID_MAX_PRICE = 0.01;
const COMMONS_MAX_PRICE = DEFAULT_MAX_PRICE;
const PAID_SIGMA = 0.8;
const COMMONS_SIGMA = 0.5;
/** Paid demand peaks, UTC hours: Europe's working day, its overlap with America's, America's afternoon. */
const PEAKS_UTC_H = [10, 15.5, 20];

// ---- Randomness ---------------------------------------------------------------------------------------------------

const pick = <T>(items: readonly (readonly [T, number])[], u: number): T => {
  for (const [item, w] of items) {
    if (u < w) return item;
    u -= w;
  }
  return items[items.length - 1]![0];
};
const normal = (rand: () => number) => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
/** A log-normal draw with this median and shape, cut to [min, max]. */
const lognormal = (rand: () => number, median: number, sigma: number, min: number, max: number) =>
  Math.min(max, Math.max(min, median * Math.exp(sigma * normal(rand))));

// ---- The providers ------------------------------------------------------------------------------------------------

interface Provider {
  id: string;
  slots: number;
  price: number;
  offpeakPrice: number;
  tz: string;
  windowName: string;
  offpeak: OffPeakWindow[];
}
const providers: Provider[] = (() => {
  const r = seededDraw(SEED);
  return Array.from({ length: WORKERS }, (_, i) => {
    const price = Math.min(PAID_MAX_PRICE / 2, PRICE_MEDIAN * Math.exp(0.3 * normal(r)));
    const [windowName, offpeak] = pick(
      WINDOWS.map(([name, w, p]) => [[name, w] as const, p] as const),
      r(),
    );
    return {
      id: `w${String(i).padStart(6, '0')}`,
      slots: 1 + Math.floor(r() * 4),
      price,
      offpeakPrice: Math.min(COMMONS_MAX_PRICE, price * (0.3 + 0.3 * r())),
      tz: pick(ZONES, r()),
      windowName,
      offpeak,
    };
  });
})();
const SLOTS = providers.reduce((s, p) => s + p.slots, 0);
const providerIndex = new Map(providers.map((p, i) => [p.id, i]));

// ---- Work ---------------------------------------------------------------------------------------------------------

/**
 * A job spec whose estimated work (pricing.ts `jobWork`, what placement reads: to price an execution and to keep a
 * public good off a window that closes before its work would end) is `seconds`: one prosumer over as many 1-minute
 * intervals as that takes (fractional days: only the estimate reads the scenario). How long an execution really runs
 * is kept apart, per job (`Work.trueS`): for paid jobs it equals the estimate; for public goods it is the estimate
 * times a log-normal error (--estimate-error), so that some overrun the window they were placed in.
 */
const template = templateJob('sha256:bench');
function jobOf(id: string, study: string, seconds: number): Job {
  const base = template.epochs[0]!;
  const intervals = Math.max(1, (seconds - CPU_S_PER_JOB - CPU_S_PER_EPOCH) / CPU_S_PER_PROSUMER_INTERVAL);
  const scenario = {
    ...base.scenario,
    community: { ...base.scenario.community, size: 1 },
    time: { interval_minutes: 1, days: intervals / 1440 },
  };
  return { ...template, job_id: id, study_id: study, epochs: [{ ...base, scenario }] };
}
for (const s of [60, 900, 5400])
  if (Math.abs(jobWork(jobOf('check', 'check', s)) - s) > 1e-6)
    throw new Error(`jobOf(${s}): estimate is off`);

const PAID_STUDY = 'paid';
const COMMONS_STUDY = 'commons';
const terms = (publicGood: boolean): JobTerms => ({
  quorum: 1,
  max_results: 1,
  adaptive: false,
  max_price: publicGood ? COMMONS_MAX_PRICE : PAID_MAX_PRICE,
  public_good: publicGood,
});

/** Paid demand as a share of capacity at `t`: a night-time trough (UTC) and the peaks. */
function loadAt(t: number): number {
  const h = ((((t - DAY_START) / HOUR) % 24) + 24) % 24;
  let peak = 0;
  for (const [k, centre] of PEAKS_UTC_H.entries()) {
    const d = Math.min(Math.abs(h - centre), 24 - Math.abs(h - centre));
    peak = Math.max(peak, (k === 2 ? 0.9 : 1) * Math.exp(-((d / 2.2) ** 2)));
  }
  return P['base-load'] + (P['peak-load'] - P['base-load']) * peak;
}
const paidMinutes = (r: () => number) => lognormal(r, P['paid-median-min'], PAID_SIGMA, 1, 240);
/** Mean paid job in seconds (sampled once): the arrival rate that makes `loadAt` come true. */
const MEAN_PAID_S = (() => {
  const r = seededDraw(SEED + 99);
  let s = 0;
  for (let i = 0; i < 50_000; i++) s += paidMinutes(r);
  return (s / 50_000) * 60;
})();

interface Arrival {
  id: string;
  at: number;
  seconds: number;
}
/** A non-homogeneous Poisson process by thinning, seeded: the same paid jobs in both runs. */
function paidArrivals(): Arrival[] {
  const r = seededDraw(SEED + 1);
  const maxRate = (P['peak-load'] * SLOTS) / MEAN_PAID_S; // jobs per second at the peak
  const out: Arrival[] = [];
  if (maxRate <= 0) return out;
  for (let t = SIM_START; ; ) {
    t += (-Math.log(1 - r()) / maxRate) * 1000;
    if (t >= DAY_END) return out;
    if (r() * P['peak-load'] < loadAt(t))
      out.push({ id: `paid-${String(out.length).padStart(7, '0')}`, at: t, seconds: paidMinutes(r) * 60 });
  }
}

// ---- Events -------------------------------------------------------------------------------------------------------

/** What an event is. */
const Kind = {
  /** An execution ends (if still live: a preempted one's end is stale). */
  End: 0,
  /** A preempted container has stopped: its slot is free again. */
  Released: 1,
  /** Windows looked at (quarter hours, and every instant a window closes). */
  Windows: 2,
  /** A closed window's grace runs out: a round looks for what still runs there. */
  Grace: 3,
  /** The next round allowed after a coalescing gap. */
  Round: 4,
} as const;
type Kind = (typeof Kind)[keyof typeof Kind];

interface Event {
  t: number;
  seq: number;
  kind: Kind;
  job: string;
  attempt: number;
  worker: number;
}

/** A binary min-heap of events by time, then by insertion (deterministic). */
class EventHeap {
  private a: Event[] = [];
  private seq = 0;
  peek(): Event | undefined {
    return this.a[0];
  }
  push(t: number, kind: Kind, job = '', attempt = 0, worker = -1): void {
    const a = this.a;
    const item: Event = { t, seq: this.seq++, kind, job, attempt, worker };
    let i = a.push(item) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!less(item, a[parent]!)) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = item;
  }
  pop(): Event | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const c = l + 1 < a.length && less(a[l + 1]!, a[l]!) ? l + 1 : l;
      if (!less(a[c]!, last)) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
    return top;
  }
}
const less = (x: Event, y: Event) => x.t < y.t || (x.t === y.t && x.seq < y.seq);

// ---- One simulated day --------------------------------------------------------------------------------------------

interface DayResult {
  /** Per measured paid job (arrived within the day): its queueing delay, seconds. */
  delay: Map<string, number>;
  paidArrived: number;
  paidPreempting: number;
  commonsCreated: number;
  commonsDone: number;
  /** Slot-seconds inside open windows within the day: not used by paid work; used by public goods. */
  idleInWindowS: number;
  commonsInWindowS: number;
  /** Public-goods slot-seconds within the day outside windows (the grace after a close). */
  commonsOutsideS: number;
  commonsCpuS: number;
  lostToPaidS: number;
  lostToWindowsS: number;
  /** What paid work's preemptions would have cost had each round's victims been the pool's youngest executions. */
  lostToPaidIfYoungestS: number;
  preemptedByPaid: number;
  preemptedByWindows: number;
  rounds: number;
  roundsSkipped: number;
  roundsStopped: number;
  roundMs: number[];
  planMs: number[];
  /** The simulated instant the run ended (every paid job of the day placed). */
  endedAt: number;
}

interface Work {
  /** Seconds an execution of it really runs (see jobOf). */
  trueS: number;
  /** A paid job's arrival (null: a public good). */
  arrival: number | null;
}

function simulate(withCommons: boolean, arrivals: readonly Arrival[]): DayResult {
  const index = new JobIndexes();
  const jobs = new Map<string, JobRecord>();
  const work = new Map<string, Work>();
  const get = (id: string) => jobs.get(id)!;
  const set = (rec: JobRecord) => {
    const id = rec.job.job_id;
    const before = jobs.get(id);
    if (before === rec) return;
    index.apply(id, before, rec);
    // Finished records are read no more: dropped, as the store archives them.
    if (rec.status === 'done' || rec.status === 'failed') {
      jobs.delete(id);
      work.delete(id);
    } else jobs.set(id, rec);
  };

  const n = providers.length;
  const busyPaid = new Int32Array(n);
  const busyCommons = new Int32Array(n);
  const stopping = new Int32Array(n);
  // Each provider's window as windowState last said, kept as instants: while open, when it closes (Infinity: never);
  // while closed, when it last closed (null: it has none). Between two looks these give exactly what windowState
  // says at any instant (the instants do not move; each look checks that they did not), without asking it for
  // every provider in every round.
  const open = new Uint8Array(n);
  const closesAt = new Float64Array(n);
  const closedAt: (number | null)[] = new Array(n).fill(null);
  // Slots, paid and public-goods executions on providers whose window is open: what the utilisation integrates.
  let openSlots = 0;
  let openPaid = 0;
  let openCommons = 0;
  let commonsTotal = 0;
  /** Live public-goods executions, `<job>#<attempt>`: where, and since when they run. */
  const liveCommons = new Map<string, { worker: number; start: number }>();

  const out: DayResult = {
    delay: new Map(),
    paidArrived: 0,
    paidPreempting: 0,
    commonsCreated: 0,
    commonsDone: 0,
    idleInWindowS: 0,
    commonsInWindowS: 0,
    commonsOutsideS: 0,
    commonsCpuS: 0,
    lostToPaidS: 0,
    lostToWindowsS: 0,
    lostToPaidIfYoungestS: 0,
    preemptedByPaid: 0,
    preemptedByWindows: 0,
    rounds: 0,
    roundsSkipped: 0,
    roundsStopped: 0,
    roundMs: [],
    planMs: [],
    endedAt: SIM_START,
  };
  const events = new EventHeap();

  const addPaid = (w: number, d: number) => {
    busyPaid[w]! += d;
    if (open[w]) openPaid += d;
  };
  const addCommons = (w: number, d: number) => {
    busyCommons[w]! += d;
    commonsTotal += d;
    if (open[w]) openCommons += d;
  };

  /** The public-goods backlog: endless, topped up to three times the slots (more than the windows take in a day). */
  const commonsRand = seededDraw(SEED + 2);
  const topUp = (now: number) => {
    if (!withCommons || index.queueSize('commons') >= SLOTS) return;
    for (let k = 0; k < 2 * SLOTS; k++) {
      const id = `pg-${String(out.commonsCreated++).padStart(7, '0')}`;
      const estimate = lognormal(commonsRand, P['commons-median-min'], COMMONS_SIGMA, 2, 90) * 60;
      const error = Math.exp(P['estimate-error'] * normal(commonsRand));
      work.set(id, { trueS: estimate * error, arrival: null });
      set(newJobRecord(jobOf(id, COMMONS_STUDY, estimate), now, DEFAULT_RETRY, terms(true)));
    }
  };

  // The workers' views, kept from round to round (planRound reads them, never writes them): only the free slots
  // change. The windows as planRound takes them: the open ones' views, their time left set each round.
  const views: WorkerView[] = providers.map((p) => ({
    worker_id: p.id,
    executor: 'process',
    slots: p.slots,
    slots_free: 0,
    cpus: 4,
    memory_mb: 8192,
    images: [],
    price_per_cpu_s: p.price,
    draining: false,
    established: false,
    trusted: false,
    audit: 1,
  }));
  const windows = new Map<string, WindowView>();
  const openViews: [number, WindowView][] = [];

  /** Windows at `now`: flips those that opened or closed, and checks that the kept instants of the others held. */
  const scheduledChecks = new Set<number>();
  const closesSeen = new Set<number>();
  let looked = false;
  const lookAtWindows = (now: number) => {
    let changed = false;
    for (let w = 0; w < n; w++) {
      const p = providers[w]!;
      const st = windowState(p.offpeak, p.tz, now);
      const was = open[w] === 1;
      const closes = st.closesInMs === null ? Number.POSITIVE_INFINITY : now + st.closesInMs;
      const closed = st.closedForMs === null ? null : now - st.closedForMs;
      if (looked && was && st.open && closesAt[w] !== closes)
        throw new Error(`${p.id}: its window's close moved (kept ${closesAt[w]}, now ${closes})`);
      if (looked && !was && !st.open && closedAt[w] !== closed)
        throw new Error(`${p.id}: its window's last close moved (kept ${closedAt[w]}, now ${closed})`);
      closesAt[w] = st.open ? closes : 0;
      closedAt[w] = st.open ? null : closed;
      // Looked at again the instant it closes, and a round when its grace runs out.
      if (st.open && Number.isFinite(closes) && !closesSeen.has(closes)) {
        closesSeen.add(closes);
        if (!scheduledChecks.has(closes)) {
          scheduledChecks.add(closes);
          events.push(closes, Kind.Windows);
        }
        events.push(closes + GRACE_MS + 1, Kind.Grace);
      }
      if (st.open !== was) {
        changed = true;
        const sign = st.open ? 1 : -1;
        open[w] = st.open ? 1 : 0;
        openSlots += sign * p.slots;
        openPaid += sign * busyPaid[w]!;
        openCommons += sign * busyCommons[w]!;
      }
    }
    looked = true;
    if (!changed) return false;
    windows.clear();
    openViews.length = 0;
    for (let w = 0; w < n; w++) {
      if (!open[w]) continue;
      const v: WindowView = { open: true, left_s: null, price: providers[w]!.offpeakPrice };
      windows.set(providers[w]!.id, v);
      openViews.push([w, v]);
    }
    return true;
  };

  /** Adds what the pool did from `from` to `to` to the day's integrals (only the part within the day counts). */
  const integrate = (from: number, to: number) => {
    const a = Math.max(from, DAY_START);
    const b = Math.min(to, DAY_END);
    if (b <= a) return;
    const s = (b - a) / 1000;
    out.idleInWindowS += (openSlots - openPaid) * s;
    out.commonsInWindowS += openCommons * s;
    out.commonsOutsideS += (commonsTotal - openCommons) * s;
  };

  /** Ends a public-goods execution as preempted (its CPU so far lost). Returns its worker. */
  const preempt = (job: string, attempt: number, now: number, byWindow: boolean, reason: string) => {
    const key = `${job}#${attempt}`;
    const l = liveCommons.get(key)!;
    liveCommons.delete(key);
    const ran = Math.max(0, now - l.start) / 1000;
    out.commonsCpuS += ran;
    if (byWindow) {
      out.lostToWindowsS += ran;
      out.preemptedByWindows++;
    } else {
      out.lostToPaidS += ran;
      out.preemptedByPaid++;
    }
    set(endExecution(get(job), attempt, providers[l.worker]!.id, 'preempted', reason, now, DEFAULT_RETRY));
    addCommons(l.worker, -1);
    return l.worker;
  };

  const funds = () =>
    new Map([
      [PAID_STUDY, Number.MAX_SAFE_INTEGER],
      [COMMONS_STUDY, Number.MAX_SAFE_INTEGER],
    ]);
  const shuffle = seededDraw(SEED + 3);

  /** One scheduling round at `now`, built as Scheduler.runRound builds it. Returns whether the budget stopped it. */
  const round = (now: number): boolean => {
    const t0 = performance.now();
    topUp(now);
    for (const [w, v] of openViews)
      v.left_s = Number.isFinite(closesAt[w]!) ? (closesAt[w]! - now) / 1000 : null;
    const preemptible = preemptibleOf([...index.runningCommons].map(get));
    // How long ago the windows closed, of the workers running public goods (windowClosures asks of no others; when
    // none runs outside a window, there is nothing to ask).
    const closed = new Map<string, number | null>();
    if (commonsTotal > openCommons)
      for (const p of preemptible) {
        const w = providerIndex.get(p.worker_id)!;
        if (!open[w]) closed.set(p.worker_id, closedAt[w] === null ? null : now - closedAt[w]!);
      }
    // A closed window lets public goods finish within the grace, then takes its slots back.
    const closures = windowClosures(preemptible, closed, now, GRACE_MS);
    for (const c of closures) {
      const w = preempt(c.job_id, c.attempt, now, true, `${c.worker_id}'s off-peak window closed`);
      stopping[w]!++;
      events.push(now + STOP_MS, Kind.Released, '', 0, w);
    }
    const closing = new Set(closures);
    const usable = closing.size > 0 ? preemptible.filter((p) => !closing.has(p)) : preemptible;
    let free = 0;
    let freeInWindows = 0;
    for (let w = 0; w < n; w++) {
      const p = providers[w]!;
      const slotsFree = fillableSlots(
        p.slots,
        Math.max(0, p.slots - busyPaid[w]! - busyCommons[w]! - stopping[w]!),
      );
      views[w]!.slots_free = slotsFree;
      free += slotsFree;
      if (open[w]) freeInWindows += slotsFree;
    }
    const paidQueued = index.queueSize('paid');
    // The scheduler's own condition, and rounds that could place nothing (no queued work for the free slots).
    const wanted = free > 0 || (usable.length > 0 && paidQueued > 0);
    const useful = paidQueued > 0 || (index.queueSize('commons') > 0 && freeInWindows > 0);
    if (!wanted || !useful) {
      out.roundsSkipped++;
      return false;
    }
    const t1 = performance.now();
    const plan = planRound({
      now,
      paid: () => index.queue(get, 'paid'),
      commons: () => index.queue(get, 'commons'),
      workers: views,
      windows,
      preemptible: usable,
      policy: POLICY,
      established: () => false,
      funds: funds(),
      rand: () => 1,
      anchored: false,
      shuffle,
      budget: ROUND_BUDGET,
    });
    out.planMs.push(performance.now() - t1);
    // For comparison only: the CPU the round's preemptions would lose were its victims the youngest of the pool's
    // preemptible executions (planRound picks the worker by price and load, then the youngest on that worker).
    const preempting = plan.placements.filter((pl) => pl.preempts?.length).length;
    if (preempting > 0) {
      const ages = usable.map((p) => now - p.assigned_at).sort((a, b) => a - b);
      for (let k = 0; k < preempting; k++) out.lostToPaidIfYoungestS += ages[k]! / 1000;
    }
    for (const pl of plan.placements) {
      const w = providerIndex.get(pl.worker_id)!;
      let begin = now;
      for (const v of pl.preempts ?? []) {
        preempt(v.job_id, v.attempt, now, false, `its slot went to paid job ${pl.job_id}`);
        begin = now + STOP_MS;
      }
      const before = get(pl.job_id);
      const rec = startExecution(before, pl.worker_id, now, LEASE_MS, { pay: pl.pay });
      if (rec === before) throw new Error(`${pl.job_id}: placed on ${pl.worker_id} but not started`);
      set(rec);
      const wk = work.get(pl.job_id)!;
      if (rec.public_good) {
        addCommons(w, 1);
        liveCommons.set(`${pl.job_id}#${rec.attempts}`, { worker: w, start: begin });
      } else {
        // The slot is the paid job's from its placement (while a preempted container stops, too).
        addPaid(w, 1);
        if (pl.preempts?.length) out.paidPreempting++;
        if (wk.arrival! >= DAY_START) out.delay.set(pl.job_id, (begin - wk.arrival!) / 1000);
      }
      events.push(begin + wk.trueS * 1000, Kind.End, pl.job_id, rec.attempts, w);
    }
    out.rounds++;
    out.roundMs.push(performance.now() - t0);
    if (plan.stopped) out.roundsStopped++;
    return plan.stopped;
  };

  // Window looks on every quarter hour of the run.
  for (let t = SIM_START; t <= SIM_LIMIT; t += WINDOW_CHECK_MS) {
    scheduledChecks.add(t);
    events.push(t, Kind.Windows);
  }

  let next = 0;
  let now = SIM_START;
  let dirty = false;
  let nextRoundAt = Number.NEGATIVE_INFINITY;
  let roundPending = false;
  const measured = arrivals.filter((a) => a.at >= DAY_START).length;
  for (;;) {
    const t = Math.min(events.peek()?.t ?? Infinity, arrivals[next]?.at ?? Infinity);
    if (t === Infinity || t > SIM_LIMIT) break;
    // Done once the day is over and every paid job of it has been placed.
    if (t > DAY_END && out.delay.size === measured) break;
    integrate(now, t);
    now = t;
    // Everything that happens at this instant, then (at most) one round.
    while (arrivals[next]?.at === now) {
      const arr = arrivals[next++]!;
      work.set(arr.id, { trueS: arr.seconds, arrival: arr.at });
      set(newJobRecord(jobOf(arr.id, PAID_STUDY, arr.seconds), arr.at, DEFAULT_RETRY, terms(false)));
      if (arr.at >= DAY_START) out.paidArrived++;
      dirty = true;
    }
    while (events.peek()?.t === now) {
      const ev = events.pop()!;
      switch (ev.kind) {
        case Kind.End: {
          const rec = jobs.get(ev.job);
          const wid = providers[ev.worker]!.id;
          if (!rec || !liveExecution(rec, ev.attempt, wid)) break; // preempted before its end
          if (rec.public_good) {
            const key = `${ev.job}#${ev.attempt}`;
            out.commonsCpuS += (now - liveCommons.get(key)!.start) / 1000;
            liveCommons.delete(key);
            addCommons(ev.worker, -1);
            out.commonsDone++;
          } else addPaid(ev.worker, -1);
          set(report(rec, ev.attempt, wid, { seq: 1, output_digest: 'ok' }, now, DEFAULT_RETRY));
          dirty = true;
          break;
        }
        case Kind.Released:
          stopping[ev.worker]!--;
          dirty = true;
          break;
        case Kind.Windows:
          if (lookAtWindows(now)) dirty = true;
          break;
        case Kind.Grace:
          dirty = true;
          break;
        case Kind.Round:
          roundPending = false;
          break;
      }
    }
    if (!dirty) continue;
    if (now >= nextRoundAt) {
      dirty = round(now);
      nextRoundAt = now + ROUND_GAP_MS;
    }
    if (dirty && !roundPending) {
      roundPending = true;
      events.push(Math.max(nextRoundAt, now + 1), Kind.Round);
    }
  }
  out.endedAt = now;
  return out;
}

// ---- The run and its figures --------------------------------------------------------------------------------------

const quantile = (xs: readonly number[], q: number) => {
  if (xs.length === 0) return Number.NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const fmt = (x: number) => x.toLocaleString('en');

const cpu = cpus()[0]?.model ?? 'unknown';
const started = performance.now();
const arrivals = paidArrivals();
const inDay = arrivals.filter((a) => a.at >= DAY_START).length;
const zoneCounts = ZONES.map(([z]) => [z, providers.filter((p) => p.tz === z).length] as const);
const windowCounts = WINDOWS.map(([w]) => [w, providers.filter((p) => p.windowName === w).length] as const);
console.log(
  `bench:commons — a simulated day (${new Date(DAY_START).toISOString().slice(0, 10)}, UTC) through the coordinator's own scheduling code; ${cpu}, ${cpus().length} cores, node ${process.versions.node}`,
);
console.log(
  `  providers: ${fmt(WORKERS)} (${fmt(SLOTS)} slots, 1–4 each): ${zoneCounts.map(([z, c]) => `${z} ${c}`).join(', ')}`,
);
console.log(
  `  off-peak windows on their own clocks: ${windowCounts.map(([w, c]) => `${w} ${c}`).join(', ')}; off-peak price 30–60 % of the usual (median ${PRICE_MEDIAN} SIM/CPU-s)`,
);
console.log(
  `  paid: ${fmt(inDay)} jobs in the day (+${fmt(arrivals.length - inDay)} in a ${P['warmup-h']} h warm-up), Poisson, demand ${P['base-load']}× capacity in the trough to ${P['peak-load']}× at the peaks (${PEAKS_UTC_H.join(', ')} h UTC); log-normal, median ${P['paid-median-min']} min, mean ${(MEAN_PAID_S / 60).toFixed(1)} min (1–240)`,
);
console.log(
  `  public goods: an endless backlog, funded without limit; estimated work log-normal, median ${P['commons-median-min']} min (2–90); true ÷ estimated work log-normal, σ ${P['estimate-error']}`,
);
console.log(
  `  rounds on events, ${ROUND_GAP_MS > 0 ? `coalesced to at most one per ${P['round-gap-s']} simulated s` : 'one per instant with an event'}; a preempted container stops in ${P['stop-s']} s; window grace ${P['grace-s']} s; policy ${POLICY}; round budget ${fmt(ROUND_BUDGET.placements)} placements; seed ${SEED}`,
);

let t = performance.now();
const without = simulate(false, arrivals);
const withoutS = (performance.now() - t) / 1000;
t = performance.now();
const withC = simulate(true, arrivals);
const withS = (performance.now() - t) / 1000;
console.log(`  simulated without the commons in ${withoutS.toFixed(1)} s, with it in ${withS.toFixed(1)} s`);

const delays = (r: DayResult) => [...r.delay.values()];
const dq = (r: DayResult, q: number) => quantile(delays(r), q);
const p99w = dq(without, 0.99);
const p99c = dq(withC, 0.99);
const p99Increase = p99w > 0 ? (p99c - p99w) / p99w : p99c > 0 ? Number.POSITIVE_INFINITY : 0;
const utilisation = withC.idleInWindowS > 0 ? withC.commonsInWindowS / withC.idleInWindowS : 0;
const lost = withC.commonsCpuS > 0 ? (withC.lostToPaidS + withC.lostToWindowsS) / withC.commonsCpuS : 0;
// The same paid jobs in both runs: which of them waited longer with the commons, which less, and by how much.
let later = 0;
let laterBy = 0;
let sooner = 0;
let soonerBy = 0;
for (const [id, d] of withC.delay) {
  const d0 = without.delay.get(id);
  if (d0 === undefined) continue;
  if (d > d0 + 1e-6) {
    later++;
    laterBy += d - d0;
  } else if (d < d0 - 1e-6) {
    sooner++;
    soonerBy += d0 - d;
  }
}
const unplaced = (r: DayResult) => r.paidArrived - r.delay.size;
const QUEUED_S = 10;

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)} %` : '∞');
const sec = (x: number) => `${x.toFixed(1)} s`;
const hours = (s: number) => `${fmt(Math.round(s / 3600))} h`;
const met = (ok: boolean) => (ok ? 'met' : 'MISSED');

const delayTable = new Table({
  head: ['paid queueing delay', 'p50', 'p95', 'p99', 'max', 'mean', `waited ≥ ${QUEUED_S} s`],
  style: { head: [], border: [] },
});
for (const [label, r] of [
  ['without the commons', without],
  ['with the commons', withC],
] as const) {
  const ds = delays(r);
  delayTable.push([
    label,
    sec(dq(r, 0.5)),
    sec(dq(r, 0.95)),
    sec(dq(r, 0.99)),
    sec(quantile(ds, 1)),
    sec(mean(ds)),
    pct(ds.filter((d) => d >= QUEUED_S).length / Math.max(1, ds.length)),
  ]);
}
const utilOk = utilisation >= 0.9;
const p99Ok = p99Increase <= 0.05;
const figures = new Table({ head: ['figure', 'value', 'target'], style: { head: [], border: [] } });
figures.push(
  [
    'off-peak idle slot-hours used by public goods',
    `${pct(utilisation)} (${hours(withC.commonsInWindowS)} of ${hours(withC.idleInWindowS)})`,
    `≥ 90 %: ${met(utilOk)}`,
  ],
  [
    'paid p99 delay, with vs without the commons',
    `${sec(p99c)} vs ${sec(p99w)}: ${p99Increase >= 0 ? '+' : ''}${pct(p99Increase)}`,
    `≤ +5 %: ${met(p99Ok)}`,
  ],
  [
    'public-goods CPU lost to preemption',
    `${pct(lost)} (${fmt(Math.round(withC.lostToPaidS / 3600))} h to paid work, ${fmt(Math.round(withC.lostToWindowsS / 3600))} h to closing windows, of ${hours(withC.commonsCpuS)} run)`,
    '',
  ],
  [
    'preemptions',
    `${fmt(withC.preemptedByPaid)} by paid work (${sec(withC.preemptedByPaid ? withC.lostToPaidS / withC.preemptedByPaid : 0)} of CPU lost each; ${sec(withC.preemptedByPaid ? withC.lostToPaidIfYoungestS / withC.preemptedByPaid : 0)} had the victims been the pool's youngest), ${fmt(withC.preemptedByWindows)} by closing windows (${sec(withC.preemptedByWindows ? withC.lostToWindowsS / withC.preemptedByWindows : 0)} each)`,
    '',
  ],
  [
    'paid jobs in the day',
    `${fmt(withC.paidArrived)}; ${fmt(withC.paidPreempting)} placed by preempting; with the commons ${fmt(later)} waited longer (by ${sec(later ? laterBy / later : 0)} on average), ${fmt(sooner)} less (by ${sec(sooner ? soonerBy / sooner : 0)})`,
    '',
  ],
  [
    'public-goods jobs completed',
    `${fmt(withC.commonsDone)} (in the day, ${hours(withC.commonsOutsideS)} of public goods ran outside windows, in the grace)`,
    '',
  ],
  [
    'rounds, with · without the commons',
    `${fmt(withC.rounds)} · ${fmt(without.rounds)} (skipped, nothing to place: ${fmt(withC.roundsSkipped)} · ${fmt(without.roundsSkipped)}; stopped by the budget: ${withC.roundsStopped} · ${without.roundsStopped})`,
    '',
  ],
  [
    'wall time per round, with the commons',
    `p50 ${quantile(withC.roundMs, 0.5).toFixed(2)} ms, p99 ${quantile(withC.roundMs, 0.99).toFixed(2)} ms, mean ${mean(withC.roundMs).toFixed(2)} ms (planRound alone: p50 ${quantile(withC.planMs, 0.5).toFixed(2)}, p99 ${quantile(withC.planMs, 0.99).toFixed(2)} ms)`,
    '',
  ],
);
console.log(delayTable.toString());
console.log(figures.toString());
if (unplaced(without) || unplaced(withC))
  console.log(
    `  note: paid jobs of the day never placed: ${unplaced(without)} without, ${unplaced(withC)} with the commons`,
  );
if (!utilOk)
  console.log(
    `  utilisation target MISSED: ${hours(withC.idleInWindowS - withC.commonsInWindowS)} of idle slot-time inside windows went unused`,
  );
if (!p99Ok)
  console.log(
    `  p99 target MISSED: ${fmt(later)} paid jobs waited longer with the commons; ${fmt(withC.paidPreempting)} waited for a preempted container to stop (${P['stop-s']} s each)`,
  );

const seconds = (performance.now() - started) / 1000;
const summary = (r: DayResult) => ({
  delay_s: {
    p50: dq(r, 0.5),
    p95: dq(r, 0.95),
    p99: dq(r, 0.99),
    max: quantile(delays(r), 1),
    mean: mean(delays(r)),
  },
  paid_jobs: r.paidArrived,
  paid_unplaced: unplaced(r),
  paid_placed_by_preempting: r.paidPreempting,
  idle_in_windows_slot_h: r.idleInWindowS / 3600,
  commons_in_windows_slot_h: r.commonsInWindowS / 3600,
  commons_outside_windows_slot_h: r.commonsOutsideS / 3600,
  commons_jobs_created: r.commonsCreated,
  commons_completed: r.commonsDone,
  commons_cpu_h: r.commonsCpuS / 3600,
  lost_to_paid_cpu_h: r.lostToPaidS / 3600,
  lost_to_windows_cpu_h: r.lostToWindowsS / 3600,
  lost_to_paid_if_pool_youngest_cpu_h: r.lostToPaidIfYoungestS / 3600,
  preempted: { by_paid: r.preemptedByPaid, by_windows: r.preemptedByWindows },
  rounds: r.rounds,
  rounds_skipped: r.roundsSkipped,
  rounds_stopped_by_budget: r.roundsStopped,
  round_ms: { p50: quantile(r.roundMs, 0.5), p99: quantile(r.roundMs, 0.99), mean: mean(r.roundMs) },
  plan_round_ms: { p50: quantile(r.planMs, 0.5), p99: quantile(r.planMs, 0.99), mean: mean(r.planMs) },
  simulated_until: new Date(r.endedAt).toISOString(),
});
writeFileSync(
  new URL('./results/commons.json', import.meta.url),
  `${JSON.stringify(
    {
      benchmark: 'commons',
      at: new Date().toISOString(),
      node: process.versions.node,
      cpu,
      cores: cpus().length,
      seconds,
      run_seconds: { without: withoutS, with: withS },
      parameters: {
        ...P,
        slots: SLOTS,
        day: new Date(DAY_START).toISOString().slice(0, 10),
        zones: Object.fromEntries(zoneCounts),
        windows: Object.fromEntries(windowCounts),
        price_median: PRICE_MEDIAN,
        offpeak_price_share: [0.3, 0.6],
        paid_max_price: PAID_MAX_PRICE,
        commons_max_price: COMMONS_MAX_PRICE,
        paid_sigma: PAID_SIGMA,
        paid_mean_min: MEAN_PAID_S / 60,
        commons_sigma: COMMONS_SIGMA,
        peaks_utc_h: PEAKS_UTC_H,
        window_check_min: WINDOW_CHECK_MS / MINUTE,
        policy: POLICY,
        budget: ROUND_BUDGET,
      },
      figures: {
        utilisation,
        utilisation_target_met: utilOk,
        p99_increase: p99Increase,
        p99_target_met: p99Ok,
        lost_to_preemption: lost,
        paid_jobs_waiting_longer_with_commons: later,
        paid_jobs_waiting_longer_mean_s: later ? laterBy / later : 0,
        paid_jobs_waiting_less_with_commons: sooner,
        paid_jobs_waiting_less_mean_s: sooner ? soonerBy / sooner : 0,
      },
      without: summary(without),
      with: summary(withC),
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote bench/results/commons.json (${seconds.toFixed(0)} s)`);
