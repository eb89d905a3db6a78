/**
 * A standard residential daily shape (relative demand per hour, local time): a low night, a morning peak around
 * 07–08 and a larger evening peak around 18–20, as in published standard load profiles for households.
 */
const HOURLY_SHAPE = [
  0.55, 0.45, 0.4, 0.38, 0.38, 0.42, 0.6, 0.9, 1.0, 0.85, 0.75, 0.72, 0.75, 0.72, 0.68, 0.7, 0.85, 1.1, 1.35,
  1.45, 1.35, 1.15, 0.95, 0.72,
];

/** The daily shape sampled at interval midpoints (linear between hourly values), normalised to sum to 1. */
export function dailyShape(intervalsPerDay: number): Float64Array {
  const shape = new Float64Array(intervalsPerDay);
  const dt = 24 / intervalsPerDay;
  let sum = 0;
  for (let i = 0; i < intervalsPerDay; i++) {
    // Hourly values sit at the middle of their hour; interpolate cyclically.
    const h = (i + 0.5) * dt - 0.5;
    const lo = Math.floor(h);
    const frac = h - lo;
    const a = HOURLY_SHAPE[(lo + 24) % 24]!;
    const b = HOURLY_SHAPE[(lo + 25) % 24]!;
    shape[i] = a + (b - a) * frac;
    sum += shape[i];
  }
  for (let i = 0; i < intervalsPerDay; i++) shape[i] /= sum;
  return shape;
}
