import type { Archetype, Scenario } from '../models/scenario.ts';
import { lognormalFactor, type Rng } from './rng.ts';

/** Static description of one household, drawn once per epoch. */
export interface Household {
  id: number;
  archetype: Archetype;
  dailyLoadKwh: number;
  /** Shift of the household's daily shape, in intervals (people get up at different times). */
  shiftIntervals: number;
  /** 0-based feeder and 1-based node along it (both 0 without a feeder). */
  feeder: number;
  node: number;
}

/** Largest-remainder apportionment of `size` households over archetype shares; ties go to the earlier archetype. */
export function apportion(shares: readonly number[], size: number): number[] {
  const total = shares.reduce((a, b) => a + b, 0);
  const exact = shares.map((s) => (s / total) * size);
  const counts = exact.map(Math.floor);
  let left = size - counts.reduce((a, b) => a + b, 0);
  const order = exact.map((e, i) => ({ i, r: e - Math.floor(e) })).sort((a, b) => b.r - a.r || a.i - b.i);
  for (const { i } of order) {
    if (left === 0) break;
    counts[i]!++;
    left--;
  }
  return counts;
}

/** Draws the community: archetype counts by share, shuffled so archetypes mix along the feeder. */
export function drawHouseholds(scenario: Scenario, intervalsPerDay: number, rng: Rng): Household[] {
  const { archetypes, size } = scenario.community;
  const counts = apportion(
    archetypes.map((a) => a.share),
    size,
  );
  const kinds: number[] = [];
  counts.forEach((c, a) => {
    for (let j = 0; j < c; j++) kinds.push(a);
  });
  for (let i = kinds.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [kinds[i], kinds[j]] = [kinds[j]!, kinds[i]!];
  }
  const perHour = intervalsPerDay / 24;
  const maxShift = Math.round(2 * perHour);
  const nodes = scenario.feeder?.nodes ?? 0;
  const feeders = scenario.feeder?.count ?? 1;
  return kinds.map((a, id) => {
    const archetype = archetypes[a]!;
    const shift = Math.round(rng.normal() * perHour);
    // Round-robin over feeders, then evenly along the feeder.
    const feeder = id % feeders;
    const onFeeder = Math.ceil((size - feeder) / feeders);
    const position = Math.floor(id / feeders);
    return {
      id,
      archetype,
      dailyLoadKwh: archetype.daily_load_kwh * lognormalFactor(rng, archetype.load_spread),
      shiftIntervals: Math.max(-maxShift, Math.min(maxShift, shift)),
      feeder: nodes > 0 ? feeder : 0,
      node: nodes > 0 ? 1 + Math.floor((position * nodes) / onFeeder) : 0,
    };
  });
}
