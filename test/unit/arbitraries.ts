import fc from 'fast-check';
import { MECHANISMS, Scenario, type ScenarioInput } from '../../src/models/scenario.ts';

/** A small, valid scenario input: the shape every test can start from. */
export function baseScenario(overrides: Partial<ScenarioInput> = {}): ScenarioInput {
  return {
    name: 'test',
    seed: 1,
    location: { latitude: 45, day_of_year: 172 },
    time: { interval_minutes: 60, days: 1 },
    tariff: { import: { type: 'flat', price: 0.3 }, feed_in: 0.05 },
    community: {
      size: 12,
      archetypes: [
        { name: 'consumer', share: 1, daily_load_kwh: 10 },
        { name: 'pv', share: 1, daily_load_kwh: 10, pv_kwp: 6 },
      ],
    },
    market: { mechanism: 'uniform-price' },
    ...overrides,
  };
}

export const parseScenario = (input: ScenarioInput): Scenario => Scenario.parse(input);

const price = fc.double({ min: 0.1, max: 0.6, noNaN: true });

const archetype = fc.record({
  share: fc.double({ min: 0.1, max: 3, noNaN: true }),
  daily_load_kwh: fc.double({ min: 1, max: 30, noNaN: true }),
  pv_kwp: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 15, noNaN: true })),
  battery: fc.option(
    fc.record({
      capacity_kwh: fc.double({ min: 1, max: 20, noNaN: true }),
      power_kw: fc.double({ min: 0.5, max: 10, noNaN: true }),
      round_trip_efficiency: fc.double({ min: 0.6, max: 1, noNaN: true }),
      initial_soc: fc.double({ min: 0, max: 1, noNaN: true }),
    }),
    { nil: undefined },
  ),
  flex: fc.option(
    fc.record({
      energy_kwh: fc.double({ min: 0, max: 10, noNaN: true }),
      power_kw: fc.constant(7),
      earliest_hour: fc.integer({ min: 0, max: 12 }),
      deadline_hour: fc.integer({ min: 14, max: 24 }),
    }),
    { nil: undefined },
  ),
  preferences: fc.record({
    price_sensitivity: fc.double({ min: 0, max: 1, noNaN: true }),
    green_premium: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 0.1, noNaN: true })),
  }),
});

/** Random valid scenarios covering every mechanism, both battery strategies, flat and TOU tariffs, feeders. */
export const scenarioArb: fc.Arbitrary<Scenario> = fc
  .record({
    seed: fc.integer({ min: 0, max: 0xffff_ffff }),
    latitude: fc.double({ min: -60, max: 60, noNaN: true }),
    day: fc.integer({ min: 1, max: 365 }),
    interval: fc.constantFrom(15, 30, 60),
    days: fc.integer({ min: 1, max: 2 }),
    flat: fc.boolean(),
    p1: price,
    p2: price,
    p3: price,
    feedInShare: fc.double({ min: 0, max: 1, noNaN: true }),
    size: fc.integer({ min: 1, max: 30 }),
    archetypes: fc.array(archetype, { minLength: 1, maxLength: 4 }),
    mechanism: fc.constantFrom(...MECHANISMS),
    k: fc.double({ min: 0, max: 1, noNaN: true }),
    strategy: fc.constantFrom('self-consumption' as const, 'price-responsive' as const),
    feeder: fc.option(
      fc.record({
        count: fc.integer({ min: 1, max: 3 }),
        nodes: fc.integer({ min: 1, max: 10 }),
        segment_km: fc.double({ min: 0.01, max: 0.1, noNaN: true }),
        r_ohm_per_km: fc.double({ min: 0, max: 1, noNaN: true }),
        x_ohm_per_km: fc.double({ min: 0, max: 0.3, noNaN: true }),
      }),
      { nil: undefined },
    ),
  })
  .map((r) => {
    const minPrice = r.flat ? r.p1 : Math.min(r.p1, r.p2, r.p3);
    const input: ScenarioInput = {
      name: 'random',
      seed: r.seed,
      location: { latitude: r.latitude, day_of_year: r.day },
      time: { interval_minutes: r.interval, days: r.days },
      tariff: {
        import: r.flat
          ? { type: 'flat', price: r.p1 }
          : {
              type: 'tou',
              periods: [
                { from_hour: 22, to_hour: 7, price: r.p1 },
                { from_hour: 7, to_hour: 17, price: r.p2 },
                { from_hour: 17, to_hour: 22, price: r.p3 },
              ],
            },
        feed_in: minPrice * r.feedInShare,
      },
      community: {
        size: r.size,
        archetypes: r.archetypes.map((a, i) => ({ name: `a${i}`, ...a })),
      },
      market: { mechanism: r.mechanism, k: r.k },
      battery_strategy: r.strategy,
      ...(r.feeder ? { feeder: r.feeder } : {}),
    };
    return Scenario.parse(input);
  });
