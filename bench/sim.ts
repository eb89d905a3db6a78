// Grid-epoch throughput on one core: prosumer-intervals per second for every mechanism, at 100 and 1,000
// prosumers over 96 intervals (one day at 15 minutes). Each measured epoch has a fresh seed, so households, weather
// and load differ every time, and includes everything runEpoch does: profiles, dispatch, market, feeder, metrics
// and the canonical-JSON digest. Prints a table and writes bench/results/sim.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import Table from 'cli-table3';
import { MECHANISMS, Scenario } from '../src/models/scenario.ts';
import { runEpoch } from '../src/sim/epoch.ts';

const TARGET = 5_000_000; // prosumer-intervals/s for uniform-price at 100 prosumers
const seconds = Number(process.env.BENCH_SECONDS ?? 3);
const base = Scenario.parse(
  JSON.parse(readFileSync(new URL('../examples/suburb-summer.json', import.meta.url), 'utf8')),
);

interface Row {
  mechanism: string;
  prosumers: number;
  intervals: number;
  epochs: number;
  ms_per_epoch: number;
  prosumer_intervals_per_s: number;
}

function measure(mechanism: (typeof MECHANISMS)[number], prosumers: number): Row {
  const scenario: Scenario = {
    ...base,
    community: { ...base.community, size: prosumers },
    feeder: base.feeder ? { ...base.feeder, count: Math.max(1, Math.round(prosumers / 50)) } : undefined,
    time: { interval_minutes: 15, days: 1 },
    market: { ...base.market, mechanism },
  };
  let seed = 1;
  const warmUntil = performance.now() + 300;
  while (performance.now() < warmUntil) runEpoch({ ...scenario, seed: seed++ });
  let epochs = 0;
  const start = performance.now();
  const stop = start + seconds * 1000;
  let now = start;
  while (now < stop) {
    runEpoch({ ...scenario, seed: seed++ });
    epochs++;
    now = performance.now();
  }
  const elapsed = (now - start) / 1000;
  const intervals = 96;
  return {
    mechanism,
    prosumers,
    intervals,
    epochs,
    ms_per_epoch: (elapsed * 1000) / epochs,
    prosumer_intervals_per_s: (epochs * prosumers * intervals) / elapsed,
  };
}

const rows: Row[] = [];
for (const prosumers of [100, 1000]) for (const m of MECHANISMS) rows.push(measure(m, prosumers));

const table = new Table({ head: ['mechanism', 'prosumers', 'epochs', 'ms/epoch', 'prosumer-intervals/s'] });
for (const r of rows) {
  table.push([
    r.mechanism,
    r.prosumers,
    r.epochs,
    r.ms_per_epoch.toFixed(3),
    `${(r.prosumer_intervals_per_s / 1e6).toFixed(2)} M`,
  ]);
}
console.log(table.toString());
const headline = rows.find((r) => r.mechanism === 'uniform-price' && r.prosumers === 100)!;
const ok = headline.prosumer_intervals_per_s >= TARGET;
console.log(
  `uniform-price @ 100 prosumers: ${(headline.prosumer_intervals_per_s / 1e6).toFixed(2)} M prosumer-intervals/s ` +
    `(target ≥ ${TARGET / 1e6} M: ${ok ? 'met' : 'NOT met'})`,
);
const out = new URL('./results/sim.json', import.meta.url);
writeFileSync(
  out,
  `${JSON.stringify(
    {
      benchmark: 'sim',
      at: new Date().toISOString(),
      node: process.versions.node,
      cpu: cpus()[0]?.model ?? 'unknown',
      seconds_per_case: seconds,
      scenario: 'examples/suburb-summer.json (1 day at 15 min, feeders of ~50 households)',
      target: { mechanism: 'uniform-price', prosumers: 100, prosumer_intervals_per_s: TARGET, met: ok },
      rows,
    },
    null,
    2,
  )}\n`,
);
console.log(`wrote ${out.pathname.split('/').slice(-3).join('/')}`);
