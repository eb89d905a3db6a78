import type { Archetype, BatteryStrategy } from '../models/scenario.ts';

type BatterySpec = NonNullable<Archetype['battery']>;

/** Per-interval limits of one home battery, with the round-trip loss split evenly between charge and discharge. */
export interface BatteryLimits {
  capacityKwh: number;
  /** Max energy through the inverter per interval (kWh). */
  stepKwh: number;
  etaCharge: number;
  etaDischarge: number;
}

export function batteryLimits(spec: BatterySpec, dtHours: number): BatteryLimits {
  const eta = Math.sqrt(spec.round_trip_efficiency);
  return {
    capacityKwh: spec.capacity_kwh,
    stepKwh: spec.power_kw * dtHours,
    etaCharge: eta,
    etaDischarge: eta,
  };
}

/** What the price-responsive strategy knows about the current interval. */
export interface PriceSignal {
  /** Retail is at or above the day's median: worth discharging. */
  dear: boolean;
  /** Retail is at the day's minimum and a full cycle pays for its losses: worth charging from the grid. */
  cheap: boolean;
  /** Own PV surplus still expected today (kWh): room left for it when charging from the grid. */
  surplusAhead: number;
}

/**
 * One interval of battery dispatch behind the meter. `net` is load − generation (kWh, > 0 needs energy);
 * returns the net after the battery acts, and writes the new state of charge into soc[i].
 * self-consumption: store every surplus, cover every deficit.
 * price-responsive: store every surplus, cover deficits only when retail is dear, top up from the grid when it
 * is cheap (leaving room for the PV surplus still to come).
 */
export function stepBattery(
  net: number,
  soc: Float64Array,
  i: number,
  b: BatteryLimits,
  strategy: BatteryStrategy,
  signal: PriceSignal | undefined,
): number {
  const s = soc[i];
  if (net < 0) {
    const charge = Math.min(-net, b.stepKwh, (b.capacityKwh - s) / b.etaCharge);
    soc[i] = s + charge * b.etaCharge;
    return net + charge;
  }
  if (strategy === 'self-consumption' || signal!.dear) {
    const discharge = Math.min(net, b.stepKwh, s * b.etaDischarge);
    soc[i] = s - discharge / b.etaDischarge;
    return net - discharge;
  }
  if (signal!.cheap) {
    const target = Math.max(0, b.capacityKwh - signal!.surplusAhead * b.etaCharge);
    const charge = Math.min(b.stepKwh, Math.max(0, (target - s) / b.etaCharge));
    soc[i] = s + charge * b.etaCharge;
    return net + charge;
  }
  return net;
}
