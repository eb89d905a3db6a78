import { type ImportTariff, touPeriodContains } from '../models/scenario.ts';

/** Retail import price for each interval of a day, taken at the interval's start. */
export function retailPrices(tariff: ImportTariff, intervalsPerDay: number): Float64Array {
  const out = new Float64Array(intervalsPerDay);
  if (tariff.type === 'flat') return out.fill(tariff.price);
  const minutesPer = 1440 / intervalsPerDay;
  for (let i = 0; i < intervalsPerDay; i++) {
    const minute = i * minutesPer;
    const period = tariff.periods.find((p) => touPeriodContains(p, minute));
    // Schema validation guarantees the periods tile the day.
    out[i] = period!.price;
  }
  return out;
}
