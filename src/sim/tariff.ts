import type { ImportTariff } from '../models/scenario.ts';

/** Retail import price for each interval of a day, taken at the interval's start. */
export function retailPrices(tariff: ImportTariff, intervalsPerDay: number): Float64Array {
  const out = new Float64Array(intervalsPerDay);
  if (tariff.type === 'flat') return out.fill(tariff.price);
  const minutesPer = 1440 / intervalsPerDay;
  for (let i = 0; i < intervalsPerDay; i++) {
    const minute = i * minutesPer;
    const period = tariff.periods.find((p) => {
      const from = Math.round(p.from_hour * 60);
      const to = Math.round(p.to_hour * 60);
      return from < to ? minute >= from && minute < to : minute >= from || minute < to;
    });
    // Schema validation guarantees the periods tile the day.
    out[i] = period!.price;
  }
  return out;
}
