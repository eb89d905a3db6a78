import { z } from 'zod';

/** Settlement mechanisms the grid epoch can run. `none` is the baseline every saving is measured against. */
export const MECHANISMS = [
  'none',
  'uniform-price',
  'continuous-double-auction',
  'sdr',
  'mid-market-rate',
  'bill-sharing',
] as const;
export const Mechanism = z.enum(MECHANISMS);
export type Mechanism = z.infer<typeof Mechanism>;

/** Currency per kWh. The unit of currency is whatever the tariff is quoted in. */
const price = z.number().finite().min(0, 'expected a price ≥ 0');
const hour = z.number().finite().min(0).max(24);
const fraction = z.number().finite().min(0).max(1);
const positive = z.number().finite().gt(0);

export const TouPeriod = z.strictObject({
  from_hour: hour,
  to_hour: hour,
  price,
});

export const ImportTariff = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('flat'), price }),
  z.strictObject({
    type: z.literal('tou'),
    /** Periods cover the day [0, 24) without gaps or overlaps; a period may wrap midnight (from 22 to 6). */
    periods: z.array(TouPeriod).min(1),
  }),
]);
export type ImportTariff = z.infer<typeof ImportTariff>;

export const Tariff = z.strictObject({
  import: ImportTariff,
  /** Feed-in tariff: what the grid pays for exported energy. */
  feed_in: price,
});

export const Preferences = z.strictObject({
  /**
   * How far the agent shades its limit price away from its true value in auctions: 0 bids truthfully
   * (buyers at retail + premium, sellers at the feed-in tariff), 1 bids at the far end of the spread.
   */
  price_sensitivity: fraction.default(0.3),
  /** Extra currency per kWh the agent is willing to pay for local, green energy bought from peers. */
  green_premium: price.default(0),
});

export const Battery = z.strictObject({
  capacity_kwh: positive,
  power_kw: positive,
  round_trip_efficiency: z.number().finite().gt(0).max(1).default(0.9),
  initial_soc: fraction.default(0.5),
});

export const FlexLoad = z
  .strictObject({
    /** Energy the appliance (EV, heat pump buffer, washing) must receive each day. */
    energy_kwh: z.number().finite().min(0),
    power_kw: positive,
    earliest_hour: hour,
    deadline_hour: hour,
  })
  .superRefine((f, ctx) => {
    if (f.deadline_hour <= f.earliest_hour) {
      ctx.addIssue({
        code: 'custom',
        path: ['deadline_hour'],
        message: 'expected deadline_hour > earliest_hour',
      });
    } else if (f.energy_kwh > f.power_kw * (f.deadline_hour - f.earliest_hour) + 1e-9) {
      ctx.addIssue({
        code: 'custom',
        path: ['energy_kwh'],
        message: `cannot deliver ${f.energy_kwh} kWh at ${f.power_kw} kW between ${f.earliest_hour}h and ${f.deadline_hour}h`,
      });
    }
  });

export const Archetype = z.strictObject({
  name: z.string().min(1),
  /** Relative weight: households are split across archetypes in proportion to their shares. */
  share: z.number().finite().min(0),
  daily_load_kwh: positive,
  /** Log-normal spread of household size around daily_load_kwh. */
  load_spread: z.number().finite().min(0).max(2).default(0.25),
  pv_kwp: z.number().finite().min(0).default(0),
  battery: Battery.optional(),
  flex: FlexLoad.optional(),
  preferences: Preferences.prefault({}),
});
export type Archetype = z.infer<typeof Archetype>;

export const Community = z
  .strictObject({
    size: z.number().int().min(1).max(100_000),
    archetypes: z.array(Archetype).min(1),
  })
  .superRefine((c, ctx) => {
    if (c.archetypes.every((a) => a.share === 0)) {
      ctx.addIssue({
        code: 'custom',
        path: ['archetypes'],
        message: 'expected at least one archetype with share > 0',
      });
    }
  });

export const Location = z.strictObject({
  latitude: z.number().finite().min(-90).max(90),
  day_of_year: z.number().int().min(1).max(366),
});

export const TimeGrid = z.strictObject({
  interval_minutes: z
    .number()
    .int()
    .refine((m) => m > 0 && 1440 % m === 0, 'expected a divisor of 1440 (e.g. 5, 15, 30, 60)')
    .default(15),
  days: z.number().int().min(1).max(366).default(1),
});

export const Weather = z.strictObject({
  /** Mean clear-sky index (1 = cloudless). */
  clearness_mean: fraction.default(0.75),
  /** Stationary standard deviation of the clear-sky index. */
  clearness_sd: z.number().finite().min(0).max(1).default(0.15),
  /** Lag-one autocorrelation of the clear-sky index between intervals. */
  clearness_ar: z.number().finite().min(0).lt(1).default(0.9),
  /** PV system performance ratio (inverter, temperature, soiling losses). */
  performance_ratio: z.number().finite().gt(0).max(1).default(0.85),
});

export const Market = z.strictObject({
  mechanism: Mechanism,
  /** k of the k-double auction: price = k·bid + (1−k)·ask at the margin. */
  k: fraction.default(0.5),
});

export const BatteryStrategy = z.enum(['self-consumption', 'price-responsive']);
export type BatteryStrategy = z.infer<typeof BatteryStrategy>;

export const Feeder = z.strictObject({
  /** Identical radial feeders leaving the transformer; households are dealt round-robin among them. */
  count: z.number().int().min(1).max(1000).default(1),
  /** Nodes along each feeder after the transformer; a feeder's households are spread evenly along it. */
  nodes: z.number().int().min(1).max(1000),
  segment_km: positive,
  r_ohm_per_km: z.number().finite().min(0),
  x_ohm_per_km: z.number().finite().min(0),
  /** Line-to-line nominal voltage (three-phase). */
  nominal_voltage_v: positive.default(400),
  /** Power factor of household consumption (PV inverters run at unity). */
  power_factor: z.number().finite().gt(0).max(1).default(0.95),
});

export const Output = z.strictObject({
  /** Include community-level per-interval series in the result. */
  series: z.boolean().default(false),
});

export const Scenario = z
  .strictObject({
    name: z.string().min(1).default('scenario'),
    seed: z.number().int().min(0).max(0xffff_ffff),
    location: Location,
    time: TimeGrid.prefault({}),
    weather: Weather.prefault({}),
    tariff: Tariff,
    community: Community,
    market: Market,
    battery_strategy: BatteryStrategy.default('self-consumption'),
    feeder: Feeder.optional(),
    output: Output.prefault({}),
  })
  .superRefine((s, ctx) => {
    const imp = s.tariff.import;
    if (imp.type === 'tou') {
      const problem = touCoverageProblem(imp.periods);
      if (problem) ctx.addIssue({ code: 'custom', path: ['tariff', 'import', 'periods'], message: problem });
    }
    const minImport = imp.type === 'flat' ? imp.price : Math.min(...imp.periods.map((p) => p.price));
    if (s.tariff.feed_in > minImport) {
      ctx.addIssue({
        code: 'custom',
        path: ['tariff', 'feed_in'],
        message: `expected feed-in ≤ the lowest import price (${minImport}), got ${s.tariff.feed_in}`,
      });
    }
  });
export type Scenario = z.infer<typeof Scenario>;
export type ScenarioInput = z.input<typeof Scenario>;

/**
 * Whether a TOU period holds the given minute of the day. Periods are [from, to) and wrap midnight when
 * to ≤ from, so 22→6 is the night and 0→24 the whole day.
 */
export function touPeriodContains(p: { from_hour: number; to_hour: number }, minute: number): boolean {
  const from = Math.round(p.from_hour * 60) % 1440;
  const to = Math.round(p.to_hour * 60) % 1440;
  if (from === to) return p.from_hour !== p.to_hour; // 0→24 covers the day, 5→5 nothing
  return from < to ? minute >= from && minute < to : minute >= from || minute < to;
}

/** Returns why TOU periods fail to tile the day exactly once, or undefined when they do (checked per minute). */
function touCoverageProblem(periods: readonly { from_hour: number; to_hour: number }[]): string | undefined {
  for (const p of periods)
    if (p.from_hour === p.to_hour) return `period ${p.from_hour}–${p.to_hour} is empty`;
  for (let m = 0; m < 1440; m++) {
    const covering = periods.filter((p) => touPeriodContains(p, m)).length;
    if (covering === 0) return `periods leave ${(m / 60).toFixed(2)}h uncovered`;
    if (covering > 1) return `periods overlap at ${(m / 60).toFixed(2)}h`;
  }
  return undefined;
}
