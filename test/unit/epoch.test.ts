import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, digestOf } from '../../src/models/digest.ts';
import { MECHANISMS, Scenario } from '../../src/models/scenario.ts';
import { type IntervalTrace, runEpoch } from '../../src/sim/epoch.ts';
import { baseScenario, parseScenario, scenarioArb } from './arbitraries.ts';

const example = (name: string) =>
  Scenario.parse(JSON.parse(readFileSync(new URL(`../../examples/${name}.json`, import.meta.url), 'utf8')));

/** Copies of every interval's per-agent arrays (the engine reuses its buffers). */
function record(scenario: Scenario) {
  const trace: IntervalTrace[] = [];
  const result = runEpoch(scenario, {
    onInterval: (t) =>
      trace.push({
        ...t,
        load: t.load.slice(),
        generation: t.generation.slice(),
        net: t.net.slice(),
        traded: t.traded.slice(),
        paid: t.paid.slice(),
        gridImport: t.gridImport.slice(),
        gridExport: t.gridExport.slice(),
      }),
  });
  return { result, trace };
}

const sum = (a: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return s;
};

describe('determinism', () => {
  it.each(['suburb-summer', 'village-winter-tou', 'sunbelt-cda'])('%s gives the same bytes twice', (name) => {
    const s = example(name);
    const a = runEpoch(s);
    const b = runEpoch(structuredClone(s));
    expect(canonicalJson(a)).toBe(canonicalJson(b));
    expect(a.digest).toMatch(/^[0-9a-f]{64}$/);
  });

  it('a different seed gives a different digest', () => {
    const s = example('suburb-summer');
    expect(runEpoch({ ...s, seed: s.seed + 1 }).digest).not.toBe(runEpoch(s).digest);
  });

  it('the digest covers the result: changing a metric changes it', () => {
    const s = example('suburb-summer');
    const r = runEpoch(s);
    const { digest, ...body } = r;
    expect(digestOf(body)).toBe(digest);
    expect(
      digestOf({ ...body, metrics: { ...body.metrics, p2p_energy_kwh: body.metrics.p2p_energy_kwh + 1 } }),
    ).not.toBe(digest);
  });

  it('every mechanism settles the same households on the same dispatch', () => {
    const s = example('suburb-summer');
    const baselines = MECHANISMS.map(
      (mechanism) => runEpoch({ ...s, market: { ...s.market, mechanism } }).metrics.baseline_cost,
    );
    expect(new Set(baselines).size).toBe(1);
  });
});

describe('baseline', () => {
  it('equals the textbook bill Σ λ_ret·max(L−G,0) − λ_FiT·max(G−L,0) without storage', () => {
    const s = parseScenario(
      baseScenario({
        time: { interval_minutes: 15, days: 2 },
        tariff: {
          import: {
            type: 'tou',
            periods: [
              { from_hour: 0, to_hour: 7, price: 0.15 },
              { from_hour: 7, to_hour: 24, price: 0.35 },
            ],
          },
          feed_in: 0.07,
        },
      }),
    );
    const { result, trace } = record(s);
    const textbook = new Array<number>(result.agents.length).fill(0);
    for (const t of trace) {
      for (let i = 0; i < textbook.length; i++) {
        const l = t.load[i]!;
        const g = t.generation[i]!;
        textbook[i]! += t.retail * Math.max(l - g, 0) - t.feedIn * Math.max(g - l, 0);
      }
    }
    result.agents.forEach((a, i) => {
      expect(a.baseline_bill).toBeCloseTo(textbook[i]!, 5);
    });
    expect(trace.some((t) => t.retail === 0.15) && trace.some((t) => t.retail === 0.35)).toBe(true);
  });

  it('under `none` every bill is the baseline bill and nothing trades', () => {
    const s = { ...example('suburb-summer'), market: { mechanism: 'none' as const, k: 0.5 } };
    const r = runEpoch(s);
    for (const a of r.agents) expect(a.bill).toBe(a.baseline_bill);
    expect(r.metrics.p2p_energy_kwh).toBe(0);
    expect(r.metrics.community_cost).toBe(r.metrics.baseline_cost);
  });
});

describe('invariants over random scenarios', () => {
  it('energy balances in every interval, money is conserved, batteries stay within bounds', () => {
    fc.assert(
      fc.property(scenarioArb, (s) => {
        const { result, trace } = record(s);
        const n = result.agents.length;
        const eps = 1e-9;
        let gridMoney = 0;
        const socs = result.agents.map((a) => {
          const b = s.community.archetypes.find((x) => x.name === a.archetype)!.battery;
          return b
            ? { b, soc: b.initial_soc * b.capacity_kwh, eta: Math.sqrt(b.round_trip_efficiency) }
            : undefined;
        });
        for (const t of trace) {
          // Energy: each agent's position is covered by peers and the grid; peers' trades cancel out.
          for (let i = 0; i < n; i++) {
            const x = t.net[i]!;
            const q = t.traded[i]!;
            expect(Math.max(x, 0)).toBeCloseTo(Math.max(q, 0) + t.gridImport[i]!, 9);
            expect(Math.max(-x, 0)).toBeCloseTo(Math.max(-q, 0) + t.gridExport[i]!, 9);
            expect(t.gridImport[i]! >= 0 && t.gridExport[i]! >= 0).toBe(true);
            if (x > 0) expect(q).toBeGreaterThanOrEqual(-eps);
            if (x < 0) expect(q).toBeLessThanOrEqual(eps);
            if (x === 0) expect(q).toBe(0);
            // The battery is the only thing between the profiles and the meter.
            const battery = socs[i];
            const intoBattery = x - (t.load[i]! - t.generation[i]!);
            if (!battery) expect(Math.abs(intoBattery)).toBeLessThan(eps);
            else {
              battery.soc += intoBattery > 0 ? intoBattery * battery.eta : intoBattery / battery.eta;
              expect(battery.soc).toBeGreaterThanOrEqual(-1e-9);
              expect(battery.soc).toBeLessThanOrEqual(battery.b.capacity_kwh + 1e-9);
              expect(Math.abs(intoBattery)).toBeLessThanOrEqual(battery.b.power_kw * t.dtHours + 1e-9);
            }
          }
          expect(Math.abs(sum(t.traded))).toBeLessThan(1e-9);
          expect(sum(t.net)).toBeCloseTo(sum(t.gridImport) - sum(t.gridExport), 9);
          // Money: what buyers pay peers is what sellers receive.
          expect(Math.abs(sum(t.paid))).toBeLessThan(1e-9);
          gridMoney += t.retail * sum(t.gridImport) - t.feedIn * sum(t.gridExport);
        }
        // The community as a whole pays exactly what it owes the grid.
        const m = result.metrics;
        expect(m.community_cost).toBeCloseTo(gridMoney, 4);
        expect(sum(result.agents.map((a) => a.saving))).toBeCloseTo(m.baseline_cost - m.community_cost, 4);
        expect(m.intervals).toBe(trace.length);
        if (m.p2p_match_rate !== null) expect(m.p2p_match_rate).toBeLessThanOrEqual(1 + 1e-6);
        expect(m.worse_off_share).toBeGreaterThanOrEqual(0);
        expect(m.worse_off_share).toBeLessThanOrEqual(1);
        if (s.market.mechanism === 'none') expect(m.p2p_energy_kwh).toBe(0);
        if (s.feeder) expect(m.voltage_violation_intervals).not.toBeNull();
        else expect(m.voltage_min_pu).toBeNull();
      }),
      { numRuns: 60 },
    );
  });

  it('without green premiums, no household loses under auctions, SDR or mid-market rate', () => {
    fc.assert(
      fc.property(
        scenarioArb,
        fc.constantFrom('uniform-price', 'continuous-double-auction', 'sdr', 'mid-market-rate' as const),
        (s0, mechanism) => {
          const s: Scenario = {
            ...s0,
            market: { ...s0.market, mechanism },
            community: {
              ...s0.community,
              archetypes: s0.community.archetypes.map((a) => ({
                ...a,
                preferences: { ...a.preferences, green_premium: 0 },
              })),
            },
          };
          const r = runEpoch(s);
          for (const a of r.agents) expect(a.saving).toBeGreaterThanOrEqual(-1e-5);
          expect(r.metrics.worse_off_share).toBe(0);
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('physics', () => {
  it('PV is zero at night and peaks around solar noon', () => {
    const s = parseScenario(baseScenario({ weather: { clearness_sd: 0 }, output: { series: true } }));
    const gen = runEpoch(s).series!.generation_kwh;
    expect(gen[0]).toBe(0);
    expect(gen[23]).toBe(0);
    const peak = gen.indexOf(Math.max(...gen));
    expect(peak).toBeGreaterThanOrEqual(10);
    expect(peak).toBeLessThanOrEqual(13);
  });

  it('a weaker feeder cable means a wider voltage band', () => {
    const feeder = { nodes: 10, segment_km: 0.05, r_ohm_per_km: 0.2, x_ohm_per_km: 0.08 };
    const s = (r: number) => parseScenario(baseScenario({ feeder: { ...feeder, r_ohm_per_km: r } }));
    const strong = runEpoch(s(0.2)).metrics;
    const weak = runEpoch(s(0.6)).metrics;
    expect(weak.voltage_min_pu!).toBeLessThan(strong.voltage_min_pu!);
    expect(weak.voltage_max_pu!).toBeGreaterThan(strong.voltage_max_pu!);
    expect(strong.voltage_min_pu!).toBeLessThan(1);
  });

  it('price-responsive batteries import less at the peak price than self-consumption ones', () => {
    const s = (strategy: 'self-consumption' | 'price-responsive') => ({
      ...example('village-winter-tou'),
      battery_strategy: strategy,
    });
    const costSelf = runEpoch(s('self-consumption')).metrics.baseline_cost;
    const costPrice = runEpoch(s('price-responsive')).metrics.baseline_cost;
    expect(costPrice).toBeLessThan(costSelf);
  });
});
