import type { Archetype } from '../models/scenario.ts';

type Flex = NonNullable<Archetype['flex']>;

/**
 * Day-ahead schedule of a flexible load (EV, heat-pump buffer…): the household knows its own PV and base load for
 * the day, and fills its window first where its own surplus is largest, then where retail is cheapest, then earliest.
 * Adds the scheduled energy (kWh per interval) to `load` in place. `load`, `gen` and `retail` cover one day.
 */
export function addFlexLoad(
  load: Float64Array,
  gen: Float64Array,
  retail: Float64Array,
  flex: Flex,
  dtHours: number,
): void {
  if (flex.energy_kwh <= 0) return;
  const perHour = 1 / dtHours;
  const first = Math.ceil(flex.earliest_hour * perHour - 1e-9);
  const end = Math.floor(flex.deadline_hour * perHour + 1e-9);
  const window: number[] = [];
  for (let k = first; k < end && k < load.length; k++) window.push(k);
  const surplus = (k: number) => gen[k] - load[k];
  window.sort((a, b) => surplus(b) - surplus(a) || retail[a] - retail[b] || a - b);
  const cap = flex.power_kw * dtHours;
  let left = flex.energy_kwh;
  for (const k of window) {
    if (left <= 1e-12) break;
    const e = Math.min(cap, left);
    load[k] += e;
    left -= e;
  }
}
