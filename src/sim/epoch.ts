import { digestOf } from '../models/digest.ts';
import type { AgentResult, EpochMetrics, EpochResult, EpochSeries } from '../models/result.ts';
import type { Scenario } from '../models/scenario.ts';
import { type BatteryLimits, batteryLimits, type PriceSignal, stepBattery } from './battery.ts';
import { drawHouseholds } from './community.ts';
import { FeederModel } from './feeder.ts';
import { addFlexLoad } from './flex.ts';
import { dailyShape } from './load.ts';
import { type Clearing, createMarket, type IntervalBook } from './markets/index.ts';
import { createRng, lognormalFactor, Stream } from './rng.ts';
import { Clearness, pvPerKwp } from './solar.ts';
import { gini, round6, round6OrNull } from './stats.ts';
import { retailPrices } from './tariff.ts';

/** Log-space spread of a household's demand from one interval to the next around its daily shape. */
const INTERVAL_NOISE = 0.3;
/** Voltage band (per unit) outside which an interval counts as a violation (EN 50160 uses ±10 %; ±5 % is planning). */
const V_LOW = 0.95;
const V_HIGH = 1.05;

/** Everything about one interval, for tests and tools that check invariants; arrays are reused, copy to keep. */
export interface IntervalTrace {
  readonly t: number;
  readonly dtHours: number;
  readonly retail: number;
  readonly feedIn: number;
  /** Per agent, kWh in the interval: consumption (with flexible load), PV generation, net after the battery. */
  readonly load: Float64Array;
  readonly generation: Float64Array;
  readonly net: Float64Array;
  /** Per agent: P2P energy (+ bought) and money (+ paid), and what settled with the grid. */
  readonly traded: Float64Array;
  readonly paid: Float64Array;
  readonly gridImport: Float64Array;
  readonly gridExport: Float64Array;
}

export interface EpochOptions {
  /** Called after every interval is settled. */
  onInterval?: (trace: IntervalTrace) => void;
}

/**
 * Runs one grid epoch: draws the community, synthesises PV and load profiles, dispatches batteries and flexible
 * load, clears the local market every interval, settles with the grid and the feeder, and reports metrics
 * against the no-market baseline. Pure and deterministic: the scenario (with its seed) fixes every byte.
 */
export function runEpoch(scenario: Scenario, options: EpochOptions = {}): EpochResult {
  const { time, tariff, weather, location, market: marketSpec, seed } = scenario;
  const perDay = 1440 / time.interval_minutes;
  const dt = time.interval_minutes / 60;
  const intervals = perDay * time.days;

  const households = drawHouseholds(scenario, perDay, createRng(seed, Stream.households));
  const n = households.length;
  const retail = retailPrices(tariff.import, perDay);
  const feedIn = tariff.feed_in;
  const shape = dailyShape(perDay);
  const clearness = new Clearness(
    { mean: weather.clearness_mean, sd: weather.clearness_sd, ar: weather.clearness_ar },
    createRng(seed, Stream.weather),
  );
  const loadRng = createRng(seed, Stream.load);
  const clear = createMarket(marketSpec.mechanism, {
    n,
    k: marketSpec.k,
    rng: createRng(seed, Stream.market),
  });
  const feeder = scenario.feeder ? new FeederModel(scenario.feeder) : undefined;

  // Static per-agent parameters.
  const kwp = new Float64Array(n);
  const premium = new Float64Array(n);
  const sensitivity = new Float64Array(n);
  const batteries: (BatteryLimits | undefined)[] = new Array(n);
  const arbitrage = new Uint8Array(n);
  const soc = new Float64Array(n);
  const sortedRetail = [...retail].sort((a, b) => a - b);
  const minRetail = sortedRetail[0]!;
  const maxRetail = sortedRetail[perDay - 1]!;
  const medianRetail = sortedRetail[Math.floor(perDay / 2)]!;
  for (const h of households) {
    const a = h.archetype;
    kwp[h.id] = a.pv_kwp;
    premium[h.id] = a.preferences.green_premium;
    sensitivity[h.id] = a.preferences.price_sensitivity;
    if (a.battery) {
      batteries[h.id] = batteryLimits(a.battery, dt);
      soc[h.id] = a.battery.initial_soc * a.battery.capacity_kwh;
      arbitrage[h.id] = minRetail < a.battery.round_trip_efficiency * maxRetail ? 1 : 0;
    }
  }

  // Day buffers (agent-major) and interval buffers.
  const load = new Float64Array(n * perDay);
  const gen = new Float64Array(n * perDay);
  const pv = new Float64Array(perDay);
  const surplusAhead = new Float64Array(n);
  const book = {
    n,
    net: new Float64Array(n),
    bid: new Float64Array(n),
    ask: new Float64Array(n),
    retail: 0,
    feedIn,
  } satisfies IntervalBook;
  const clearing: Clearing = { traded: new Float64Array(n), paid: new Float64Array(n), volume: 0, value: 0 };
  const loadNow = new Float64Array(n);
  const genNow = new Float64Array(n);
  const gridImport = new Float64Array(n);
  const gridExport = new Float64Array(n);
  const signal: PriceSignal = { dear: true, cheap: false, surplusAhead: 0 };

  // Accumulators.
  const agentLoad = new Float64Array(n);
  const agentGen = new Float64Array(n);
  const bill = new Float64Array(n);
  const baselineBill = new Float64Array(n);
  const bought = new Float64Array(n);
  const sold = new Float64Array(n);
  const imported = new Float64Array(n);
  const exported = new Float64Array(n);
  let matchable = 0;
  let peakImport = 0;
  let physicalImport = 0;
  let priceSum = 0;
  let priceCount = 0;
  let priceMin = Number.POSITIVE_INFINITY;
  let priceMax = Number.NEGATIVE_INFINITY;
  let vMin = Number.POSITIVE_INFINITY;
  let vMax = Number.NEGATIVE_INFINITY;
  let violations = 0;
  const series: EpochSeries | undefined = scenario.output.series
    ? {
        load_kwh: [],
        generation_kwh: [],
        net_import_kwh: [],
        p2p_kwh: [],
        price: [],
        retail_price: [],
        voltage_min_pu: [],
        voltage_max_pu: [],
      }
    : undefined;

  for (let day = 0; day < time.days; day++) {
    const dayOfYear = ((location.day_of_year - 1 + day) % 365) + 1;
    pvPerKwp(pv, location.latitude, dayOfYear, weather.performance_ratio, clearness);
    for (const h of households) {
      const base = h.id * perDay;
      for (let k = 0; k < perDay; k++) {
        const s = shape[(k - h.shiftIntervals + perDay) % perDay]!;
        load[base + k] = h.dailyLoadKwh * s * lognormalFactor(loadRng, INTERVAL_NOISE);
        gen[base + k] = kwp[h.id]! * pv[k]!;
      }
      const flex = h.archetype.flex;
      if (flex) {
        addFlexLoad(load.subarray(base, base + perDay), gen.subarray(base, base + perDay), retail, flex, dt);
      }
      if (batteries[h.id]) {
        let ahead = 0;
        for (let k = 0; k < perDay; k++) ahead += Math.max(gen[base + k]! - load[base + k]!, 0);
        surplusAhead[h.id] = ahead;
      }
    }

    for (let k = 0; k < perDay; k++) {
      const t = day * perDay + k;
      const price = retail[k]!;
      const spread = price - feedIn;
      book.retail = price;
      signal.dear = price >= medianRetail;
      const atMinimum = price <= minRetail;
      let demand = 0;
      let supply = 0;
      for (let i = 0; i < n; i++) {
        const l = load[i * perDay + k]!;
        const g = gen[i * perDay + k]!;
        let x = l - g;
        const battery = batteries[i];
        if (battery) {
          surplusAhead[i] = Math.max(0, surplusAhead[i]! - Math.max(g - l, 0));
          signal.cheap = atMinimum && arbitrage[i] === 1;
          signal.surplusAhead = surplusAhead[i]!;
          x = stepBattery(x, soc, i, battery, scenario.battery_strategy, signal);
        }
        loadNow[i] = l;
        genNow[i] = g;
        agentLoad[i]! += l;
        agentGen[i]! += g;
        book.net[i] = x;
        // Buyers' value is retail plus their green premium, sellers' the feed-in tariff; each shades its limit
        // toward the other side of the spread by its price sensitivity.
        book.bid[i] = price + premium[i]! - sensitivity[i]! * spread;
        book.ask[i] = feedIn + sensitivity[i]! * spread;
        if (x > 0) {
          demand += x;
          baselineBill[i]! += price * x;
        } else {
          supply -= x;
          baselineBill[i]! += feedIn * x;
        }
      }

      clear(book, clearing);

      for (let i = 0; i < n; i++) {
        const x = book.net[i]!;
        const q = clearing.traded[i]!;
        let gi = 0;
        let ge = 0;
        if (x > 0) {
          gi = Math.max(0, x - q);
          bought[i]! += q;
        } else if (x < 0) {
          ge = Math.max(0, -x + q);
          sold[i]! -= q;
        }
        gridImport[i] = gi;
        gridExport[i] = ge;
        imported[i]! += gi;
        exported[i]! += ge;
        bill[i]! += clearing.paid[i]! + price * gi - feedIn * ge;
      }

      matchable += Math.min(supply, demand);
      const netImport = demand - supply;
      if (netImport > 0) physicalImport += netImport;
      if (netImport / dt > peakImport) peakImport = netImport / dt;
      let intervalPrice: number | null = null;
      if (clearing.volume > 1e-12) {
        intervalPrice = clearing.value / clearing.volume;
        priceSum += intervalPrice;
        priceCount++;
        if (intervalPrice < priceMin) priceMin = intervalPrice;
        if (intervalPrice > priceMax) priceMax = intervalPrice;
      }
      if (feeder) {
        feeder.reset();
        for (const h of households) {
          feeder.add(h.feeder, h.node, book.net[h.id]! / dt, (loadNow[h.id]! / dt) * feeder.tanPhi);
        }
        feeder.solve();
        if (feeder.vMin < vMin) vMin = feeder.vMin;
        if (feeder.vMax > vMax) vMax = feeder.vMax;
        if (feeder.vMin < V_LOW || feeder.vMax > V_HIGH) violations++;
      }
      if (series) {
        let l = 0;
        let g = 0;
        for (let i = 0; i < n; i++) {
          l += loadNow[i]!;
          g += genNow[i]!;
        }
        series.load_kwh.push(round6(l));
        series.generation_kwh.push(round6(g));
        series.net_import_kwh.push(round6(netImport));
        series.p2p_kwh.push(round6(clearing.volume));
        series.price.push(round6OrNull(intervalPrice));
        series.retail_price.push(round6(price));
        series.voltage_min_pu.push(feeder ? round6(feeder.vMin) : null);
        series.voltage_max_pu.push(feeder ? round6(feeder.vMax) : null);
      }
      options.onInterval?.({
        t,
        dtHours: dt,
        retail: price,
        feedIn,
        load: loadNow,
        generation: genNow,
        net: book.net,
        traded: clearing.traded,
        paid: clearing.paid,
        gridImport,
        gridExport,
      });
    }
  }

  const agents: AgentResult[] = households.map((h) => {
    const i = h.id;
    return {
      id: i,
      archetype: h.archetype.name,
      feeder: feeder ? h.feeder : null,
      node: feeder ? h.node : null,
      load_kwh: round6(agentLoad[i]!),
      generation_kwh: round6(agentGen[i]!),
      bill: round6(bill[i]!),
      baseline_bill: round6(baselineBill[i]!),
      saving: round6(baselineBill[i]! - bill[i]!),
      p2p_bought_kwh: round6(bought[i]!),
      p2p_sold_kwh: round6(sold[i]!),
      grid_import_kwh: round6(imported[i]!),
      grid_export_kwh: round6(exported[i]!),
    };
  });

  const sum = (a: Float64Array) => a.reduce((x, y) => x + y, 0);
  const totalLoad = sum(agentLoad);
  const totalGen = sum(agentGen);
  const totalImport = sum(imported);
  const totalExport = sum(exported);
  const savings = Array.from(baselineBill, (b, i) => b - bill[i]!);
  let greenValue = 0;
  for (let i = 0; i < n; i++) greenValue += premium[i]! * bought[i]!;
  const meanImportKw = physicalImport / (intervals * dt);
  const p2p = sum(bought);

  const metrics: EpochMetrics = {
    agents: n,
    intervals,
    load_kwh: round6(totalLoad),
    generation_kwh: round6(totalGen),
    community_cost: round6(sum(bill)),
    baseline_cost: round6(sum(baselineBill)),
    social_welfare: round6(sum(baselineBill) - sum(bill) + greenValue),
    p2p_energy_kwh: round6(p2p),
    p2p_match_rate: matchable > 1e-12 ? round6(p2p / matchable) : null,
    price_mean: priceCount > 0 ? round6(priceSum / priceCount) : null,
    price_min: priceCount > 0 ? round6(priceMin) : null,
    price_max: priceCount > 0 ? round6(priceMax) : null,
    grid_import_kwh: round6(totalImport),
    grid_export_kwh: round6(totalExport),
    self_sufficiency: totalLoad > 0 ? round6(1 - totalImport / totalLoad) : null,
    self_consumption: totalGen > 0 ? round6(1 - totalExport / totalGen) : null,
    peak_import_kw: round6(peakImport),
    peak_to_average: meanImportKw > 1e-12 ? round6(peakImport / meanImportKw) : null,
    savings_mean: round6(savings.reduce((a, b) => a + b, 0) / n),
    savings_min: round6(savings.reduce((a, b) => Math.min(a, b))),
    savings_max: round6(savings.reduce((a, b) => Math.max(a, b))),
    savings_gini: round6OrNull(gini(savings)),
    worse_off_share: round6(savings.filter((s) => s < -1e-9).length / n),
    voltage_min_pu: feeder ? round6(vMin) : null,
    voltage_max_pu: feeder ? round6(vMax) : null,
    voltage_violation_intervals: feeder ? violations : null,
  };

  const body = {
    input_digest: digestOf(scenario),
    scenario: scenario.name,
    seed,
    mechanism: marketSpec.mechanism,
    metrics,
    agents,
    ...(series ? { series } : {}),
  };
  return { ...body, digest: digestOf(body) };
}
