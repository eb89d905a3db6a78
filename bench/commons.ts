// The Simulation Commons over a simulated day: a provider pool across time zones, paid work arriving with peaks, and
// a public-goods backlog, scheduled by the coordinator's own pure code — the queues (indexes.ts), the job state
// machine (job-state.ts), planRound (backfill.ts: paid first, public goods on idle slots inside open off-peak windows,
// preemption youngest first), windowClosures (preempt.ts) and the windows themselves (offpeak.ts) — in a discrete-event
// simulation with a simulated clock; no NATS, no processes. The same seeded day runs twice, without and with the
// commons, and the bench reports:
//  - utilisation: public-goods slot-seconds inside providers' windows ÷ idle slot-seconds inside them (idle: not used
//    by paid work), target ≥ 90 %;
//  - the paid jobs' queueing delay (arrival → start; a job that preempts starts after the stop delay) p50/p95/p99,
//    without and with the commons, and the p99's increase, target ≤ 5 %;
//  - the share of public-goods CPU lost to preemption (CPU-seconds of executions that were preempted ÷ all the
//    public-goods CPU-seconds run), by paid work and by closing windows.
// Rounds run when something changed (an arrival, an end, a window's edge), at most once per BENCH_TICK_S simulated
// seconds (the coordinator runs one on every commit and every 100 ms; the tick quantises both runs alike).
// Environment: BENCH_WORKERS (1000), BENCH_LOAD (peak paid load ÷ capacity, 1.05), BENCH_TICK_S (5),
// BENCH_STOP_S (1: a preempted container's stop before the paid job starts), BENCH_GRACE_S (300), BENCH_SEED (1).
// Prints a table and writes bench/results/commons.json.
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import Table from 'cli-table3';
import { type CommonsPolicy, planRound, type WindowView } from '../src/coordinator/backfill.ts';
import { seededDraw } from '../src/coordinator/candidates.ts';
import { JobIndexes } from '../src/coordinator/indexes.ts';
import {
  DEFAULT_RETRY,
  endExecution,
  type JobTerms,
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

const num = envNumber;
const WORKERS = num('BENCH_WORKERS', 1000);
const PEAK_LOAD = num('BENCH_LOAD', 1.05);
const TICK_MS = num('BENCH_TICK_S', 5) * 1000;
const STOP_MS = num('BENCH_STOP_S', 1) * 1000;
const GRACE_MS = num('BENCH_GRACE_S', 300) * 1000;
const SEED = num('BENCH_SEED', 1);
const POLICY: CommonsPolicy = 'offpeak';

const HOUR = 3_600_000;
const DAY_START = Date.UTC(2026, 5, 15); // a Monday in June: daylight saving on in the north, off in the south
const DAY_END = DAY_START + 24 * HOUR;
const PRICE = 0.001;
const OFFPEAK_PRICE = 0.0004;

/** Where the providers are, and how many of them (weights). */
const ZONES: [string, number][] = [
  ['Europe/Berlin', 0.22],
  ['Europe/London', 0.12],
  ['America/New_York', 0.18],
  ['America/Los_Angeles', 0.12],
  ['America/Sao_Paulo', 0.06],
  ['Asia/Kolkata', 0.12],
  ['Asia/Tokyo', 0.1],
  ['Australia/Sydney', 0.08],
];
/** Off-peak windows on the provider's clock, and how often each is declared. */
const WINDOWS: [OffPeakWindow[], number][] = [
  [[{ from_hour: 22, to_hour: 6 }], 0.6],
  [[{ from_hour: 23, to_hour: 7 }], 0.25],
  [[{ from_hour: 0, to_hour: 8 }], 0.15],
];

const draw = seededDraw(SEED);
const pick = <T>(items: [T, number][], u = draw()): T => {
  let acc = 0;
  for (const [item, w] of items) {
    acc += w;
    if (u < acc) return item;
  }
  return items[items.length - 1]![0];
};
/** Minutes from a log-normal with this median and shape, cut to [min, max]. */
const lognormal = (rand: () => number, median: number, sigma: number, min: number, max: number) => {
  const z = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  return Math.min(max, Math.max(min, median * Math.exp(sigma * z)));
};

interface Provider {
  view: WorkerView;
  offpeak: OffPeakWindow[];
  tz: string;
}
const providers: Provider[] = Array.from({ length: WORKERS }, (_, i) => {
  const slots = 1 + Math.floor(draw() * 4);
  return {
    view: {
      worker_id: `w${String(i).padStart(5, '0')}`,
      executor: 'process',
      slots,
      slots_free: slots,
      cpus: slots,
      memory_mb: 8192,
      images: [],
      price_per_cpu_s: PRICE,
      draining: false,
      established: false,
      trusted: false,
      audit: 1,
    },
    offpeak: pick(WINDOWS),
    tz: pick(ZONES),
  };
});
const SLOTS = providers.reduce((s, p) => s + p.view.slots, 0);

// ---- Work ---------------------------------------------------------------------------------------------------------

/**
 * A job spec whose estimated work (pricing.ts `jobWork`) is `seconds`: placement reads it to price an execution and
 * to keep a public good off a window that closes before it would end, and the simulated execution takes exactly that
 * long (an estimate that is right: the bench measures the scheduling, not the estimator).
 */
const template = templateJob('sha256:bench');
function jobOf(id: string, study: string, seconds: number): Job {
  const base = template.epochs[0]!;
  const intervals = Math.max(1, (seconds - CPU_S_PER_JOB - CPU_S_PER_EPOCH) / CPU_S_PER_PROSUMER_INTERVAL);
  // One prosumer over as many 1-minute intervals as the work needs (days may be fractional here: only the estimate reads it).
  const scenario = {
    ...base.scenario,
    community: { ...base.scenario.community, size: 1 },
    time: { interval_minutes: 1, days: intervals / 1440 },
  };
  return { ...template, job_id: id, study_id: study, epochs: [{ ...base, scenario }] };
}
const terms = (publicGood: boolean): JobTerms => ({
  quorum: 1,
  max_results: 1,
  adaptive: false,
  max_price: 0.01,
  public_good: publicGood,
});

/** Paid load as a share of capacity over the UTC day: a trough at night, peaks for Europe's and America's working days. */
function loadAt(t: number): number {
  const h = (t - DAY_START) / HOUR;
  const bump = (centre: number, width: number) => Math.exp(-(((h - centre) / width) ** 2));
  return 0.25 + (PEAK_LOAD - 0.25) * Math.max(bump(10, 2.5), bump(16.5, 2.5) * 0.95);
}
const PAID_MEDIAN_MIN = 12;
const PAID_SIGMA = 0.6;
/** Mean of the cut log-normal, by sampling once (for the arrival rate that makes `loadAt` come true). */
const meanPaidS = (() => {
  const r = seededDraw(SEED + 99);
  let s = 0;
  for (let i = 0; i < 20_000; i++) s += lognormal(r, PAID_MEDIAN_MIN, PAID_SIGMA, 1, 120);
  return (s / 20_000) * 60;
})();

interface Arrival {
  at: number;
  seconds: number;
}
/** A non-homogeneous Poisson process by thinning, seeded: the same paid jobs for both runs. */
function paidArrivals(): Arrival[] {
  const r = seededDraw(SEED + 1);
  const peakRate = (PEAK_LOAD * SLOTS) / meanPaidS; // jobs per second at the peak
  const out: Arrival[] = [];
  for (let t = DAY_START; ; ) {
    t += (-Math.log(1 - r()) / peakRate) * 1000;
    if (t >= DAY_END) return out;
    if (r() < loadAt(t) / PEAK_LOAD)
      out.push({ at: t, seconds: lognormal(r, PAID_MEDIAN_MIN, PAID_SIGMA, 1, 120) * 60 });
  }
}

// ---- One simulated day ------------------------------------------------------------------------------------------

interface Live {
  rec: JobRecord;
  worker: Provider;
  /** Simulated start (a preempting job starts after the stop delay) and end. */
  start: number;
  end: number;
  arrival: number | null;
}

interface DayResult {
  delays: number[];
  paidJobs: number;
  commonsDone: number;
  inWindowIdleS: number;
  inWindowCommonsS: number;
  commonsCpuS: number;
  lostToPaidS: number;
  lostToWindowsS: number;
  preemptedByPaid: number;
  preemptedByWindows: number;
  rounds: number;
  roundMs: number[];
}

function simulate(withCommons: boolean, arrivals: readonly Arrival[]): DayResult {
  const index = new JobIndexes();
  const jobs = new Map<string, JobRecord>();
  const get = (id: string) => jobs.get(id)!;
  const set = (rec: JobRecord) => {
    const before = jobs.get(rec.job.job_id);
    jobs.set(rec.job.job_id, rec);
    index.apply(rec.job.job_id, before, rec);
  };
  const commonsRand = seededDraw(SEED + 2);
  let commonsMade = 0;
  /** The backlog is endless: kept topped up so a round always finds more public goods than it can place. */
  const topUp = () => {
    if (!withCommons) return;
    while (index.queueSize('commons') < 2 * SLOTS) {
      const id = `pg-${commonsMade++}`;
      set(
        newJobRecord(
          jobOf(id, 'pg', lognormal(commonsRand, 15, 0.4, 2, 60) * 60),
          DAY_START,
          DEFAULT_RETRY,
          terms(true),
        ),
      );
    }
  };
  const live = new Map<string, Live>();
  const busy = new Map<string, { paid: number; commons: number }>();
  const use = (w: string) => {
    let b = busy.get(w);
    if (!b) {
      b = { paid: 0, commons: 0 };
      busy.set(w, b);
    }
    return b;
  };
  const out: DayResult = {
    delays: [],
    paidJobs: 0,
    commonsDone: 0,
    inWindowIdleS: 0,
    inWindowCommonsS: 0,
    commonsCpuS: 0,
    lostToPaidS: 0,
    lostToWindowsS: 0,
    preemptedByPaid: 0,
    preemptedByWindows: 0,
    rounds: 0,
    roundMs: [],
  };
  const funds = () =>
    new Map([
      ['paid', Number.MAX_SAFE_INTEGER],
      ['pg', Number.MAX_SAFE_INTEGER],
    ]);
  const arrivalOf = new Map<string, number>();
  let next = 0;
  let dirty = true;
  let lastHour = -1;

  const stop = (l: Live, now: number, byWindow: boolean, reason: string) => {
    live.delete(l.rec.job.job_id);
    use(l.worker.view.worker_id).commons--;
    const ran = Math.max(0, now - l.start) / 1000;
    out.commonsCpuS += ran;
    if (byWindow) {
      out.lostToWindowsS += ran;
      out.preemptedByWindows++;
    } else {
      out.lostToPaidS += ran;
      out.preemptedByPaid++;
    }
    const attempt = l.rec.attempts;
    set(
      endExecution(
        get(l.rec.job.job_id),
        attempt,
        l.worker.view.worker_id,
        'preempted',
        reason,
        now,
        DEFAULT_RETRY,
      ),
    );
  };

  for (let now = DAY_START; now < DAY_END; now += TICK_MS) {
    // Ends due by now.
    for (const l of [...live.values()]) {
      if (l.end > now) continue;
      live.delete(l.rec.job.job_id);
      const b = use(l.worker.view.worker_id);
      if (l.rec.public_good) {
        b.commons--;
        out.commonsDone++;
        out.commonsCpuS += (l.end - l.start) / 1000;
      } else b.paid--;
      const rec = get(l.rec.job.job_id);
      set(
        report(
          rec,
          rec.attempts,
          l.worker.view.worker_id,
          { seq: 1, output_digest: 'x' },
          l.end,
          DEFAULT_RETRY,
        ),
      );
      dirty = true;
    }
    // Arrivals by now.
    while (next < arrivals.length && arrivals[next]!.at <= now) {
      const a = arrivals[next++]!;
      const id = `paid-${next}`;
      arrivalOf.set(id, a.at);
      set(newJobRecord(jobOf(id, 'paid', a.seconds), a.at, DEFAULT_RETRY, terms(false)));
      out.paidJobs++;
      dirty = true;
    }
    // Window edges: re-plan on every hour and half hour (windows open and close on them; Kolkata on the half hour).
    const halfHour = Math.floor((now - DAY_START) / (HOUR / 2));
    if (halfHour !== lastHour) {
      lastHour = halfHour;
      dirty = true;
    }
    // What this tick's capacity was used for, inside windows.
    const windows = new Map<string, WindowView>();
    const closed = new Map<string, number | null>();
    for (const p of providers) {
      const win = windowState(p.offpeak, p.tz, now);
      const b = use(p.view.worker_id);
      if (win.open) {
        windows.set(p.view.worker_id, {
          open: true,
          left_s: win.closesInMs === null ? null : win.closesInMs / 1000,
          price: OFFPEAK_PRICE,
        });
        out.inWindowIdleS += ((p.view.slots - b.paid) * TICK_MS) / 1000;
        out.inWindowCommonsS += (b.commons * TICK_MS) / 1000;
      } else closed.set(p.view.worker_id, win.closedForMs);
    }
    if (!dirty) continue;
    dirty = false;
    topUp();
    const t0 = performance.now();
    const commonsLive = [...live.values()].filter((l) => l.rec.public_good);
    const preemptible = preemptibleOf(commonsLive.map((l) => get(l.rec.job.job_id)));
    const byJob = new Map(commonsLive.map((l) => [l.rec.job.job_id, l]));
    // Windows closed for longer than the grace take their slots back.
    const closures = new Set(windowClosures(preemptible, closed, now, GRACE_MS));
    for (const c of closures) stop(byJob.get(c.job_id)!, now, true, 'window closed');
    const views = providers.map((p) => {
      const b = use(p.view.worker_id);
      return { ...p.view, slots_free: fillableSlots(p.view.slots, p.view.slots - b.paid - b.commons) };
    });
    const round = planRound({
      now,
      paid: () => index.queue(get, 'paid'),
      commons: () => index.queue(get, 'commons'),
      workers: views,
      windows,
      preemptible: preemptible.filter((p) => !closures.has(p)),
      policy: POLICY,
      established: () => false,
      funds: funds(),
      rand: () => 1,
      anchored: false,
      shuffle: draw,
      budget: ROUND_BUDGET,
    });
    const byId = new Map(providers.map((p) => [p.view.worker_id, p]));
    for (const placement of round.placements) {
      const worker = byId.get(placement.worker_id)!;
      let start = now;
      for (const v of placement.preempts ?? []) {
        stop(byJob.get(v.job_id)!, now, false, `its slot went to ${placement.job_id}`);
        start = now + STOP_MS;
      }
      const rec = startExecution(get(placement.job_id), placement.worker_id, start, 1e12, {
        pay: placement.pay,
      });
      set(rec);
      const seconds = jobWork(rec.job);
      const arrival = arrivalOf.get(placement.job_id) ?? null;
      if (arrival !== null) out.delays.push((start - arrival) / 1000);
      live.set(placement.job_id, { rec, worker, start, end: start + seconds * 1000, arrival });
      const b = use(placement.worker_id);
      if (rec.public_good) b.commons++;
      else b.paid++;
    }
    out.rounds++;
    out.roundMs.push(performance.now() - t0);
    // A round that placed something changed capacity: the next tick plans again.
    if (round.placements.length > 0 || round.stopped) dirty = true;
  }
  return out;
}

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

const started = performance.now();
const arrivals = paidArrivals();
const cpu = cpus()[0]?.model ?? 'unknown';
console.log(
  `bench:commons — one simulated day: ${WORKERS.toLocaleString('en')} providers (${SLOTS.toLocaleString('en')} slots) in ${ZONES.length} time zones, ${arrivals.length.toLocaleString('en')} paid jobs (median ${PAID_MEDIAN_MIN} min, peak load ${PEAK_LOAD}× capacity), an endless public-goods backlog (median 15 min); rounds at most every ${TICK_MS / 1000} s; stop delay ${STOP_MS / 1000} s; grace ${GRACE_MS / 1000} s; ${cpu}, ${cpus().length} cores, node ${process.versions.node}`,
);
const without = simulate(false, arrivals);
const withCommons = simulate(true, arrivals);

const p = (r: DayResult, q: number) => quantile(r.delays, q);
const p99Increase = p(without, 0.99) > 0 ? (p(withCommons, 0.99) - p(without, 0.99)) / p(without, 0.99) : 0;
const utilisation =
  withCommons.inWindowIdleS > 0 ? withCommons.inWindowCommonsS / withCommons.inWindowIdleS : 0;
const lost =
  withCommons.commonsCpuS > 0
    ? (withCommons.lostToPaidS + withCommons.lostToWindowsS) / withCommons.commonsCpuS
    : 0;
const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
const s = (x: number) => `${x.toFixed(1)} s`;

const delays = new Table({
  head: ['paid queueing delay', 'p50', 'p95', 'p99', 'max'],
  style: { head: [], border: [] },
});
for (const [label, r] of [
  ['without the commons', without],
  ['with the commons', withCommons],
] as const)
  delays.push([label, s(p(r, 0.5)), s(p(r, 0.95)), s(p(r, 0.99)), s(quantile(r.delays, 1))]);
console.log(delays.toString());
const figures = new Table({ head: ['figure', 'value', 'target'], style: { head: [], border: [] } });
figures.push(
  ['p99 increase with the commons', pct(p99Increase), `≤ 5 %: ${p99Increase <= 0.05 ? 'met' : 'MISSED'}`],
  [
    'off-peak idle slot-hours used by public goods',
    `${pct(utilisation)} (${(withCommons.inWindowCommonsS / 3600).toFixed(0)} of ${(withCommons.inWindowIdleS / 3600).toFixed(0)} slot-h)`,
    `≥ 90 %: ${utilisation >= 0.9 ? 'met' : 'MISSED'}`,
  ],
  [
    'public-goods CPU lost to preemption',
    `${pct(lost)} (paid work ${(withCommons.lostToPaidS / 3600).toFixed(1)} h, closing windows ${(withCommons.lostToWindowsS / 3600).toFixed(1)} h, of ${(withCommons.commonsCpuS / 3600).toFixed(0)} h)`,
    '',
  ],
  [
    'preemptions',
    `${withCommons.preemptedByPaid} by paid work, ${withCommons.preemptedByWindows} by closing windows`,
    '',
  ],
  ['public-goods jobs completed', withCommons.commonsDone.toLocaleString('en'), ''],
  [
    'rounds (with the commons)',
    `${withCommons.rounds.toLocaleString('en')}; p50 ${quantile(withCommons.roundMs, 0.5).toFixed(2)} ms, p99 ${quantile(withCommons.roundMs, 0.99).toFixed(2)} ms`,
    '',
  ],
);
console.log(figures.toString());
const seconds = (performance.now() - started) / 1000;
writeFileSync(
  new URL('./results/commons.json', import.meta.url),
  `${JSON.stringify(
    {
      machine: { cpu, cores: cpus().length, node: process.versions.node },
      parameters: {
        workers: WORKERS,
        slots: SLOTS,
        zones: ZONES,
        windows: WINDOWS,
        peak_load: PEAK_LOAD,
        paid_jobs: arrivals.length,
        paid_median_min: PAID_MEDIAN_MIN,
        tick_s: TICK_MS / 1000,
        stop_s: STOP_MS / 1000,
        grace_s: GRACE_MS / 1000,
        seed: SEED,
        policy: POLICY,
      },
      paid_delay_s: {
        without: { p50: p(without, 0.5), p95: p(without, 0.95), p99: p(without, 0.99) },
        with: { p50: p(withCommons, 0.5), p95: p(withCommons, 0.95), p99: p(withCommons, 0.99) },
        p99_increase: p99Increase,
      },
      utilisation,
      lost_to_preemption: lost,
      preempted: { by_paid: withCommons.preemptedByPaid, by_windows: withCommons.preemptedByWindows },
      commons_completed: withCommons.commonsDone,
      rounds: withCommons.rounds,
      round_ms: { p50: quantile(withCommons.roundMs, 0.5), p99: quantile(withCommons.roundMs, 0.99) },
      seconds,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote bench/results/commons.json (${seconds.toFixed(0)} s)`);
