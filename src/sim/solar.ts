import type { Rng } from './rng.ts';

const DEG = Math.PI / 180;

/** Solar declination (Cooper, 1969), radians. */
export function declination(dayOfYear: number): number {
  return 23.45 * DEG * Math.sin((2 * Math.PI * (284 + dayOfYear)) / 365);
}

/** Cosine of the solar zenith angle at a local solar time (hours). */
export function cosZenith(latitudeDeg: number, dayOfYear: number, solarHour: number): number {
  const phi = latitudeDeg * DEG;
  const delta = declination(dayOfYear);
  const omega = 15 * DEG * (solarHour - 12);
  return Math.sin(phi) * Math.sin(delta) + Math.cos(phi) * Math.cos(delta) * Math.cos(omega);
}

/** Haurwitz (1945) clear-sky global horizontal irradiance, W/m². */
export function haurwitzGhi(cosZ: number): number {
  return cosZ > 0 ? 1098 * cosZ * Math.exp(-0.059 / cosZ) : 0;
}

export interface ClearnessProcess {
  mean: number;
  sd: number;
  ar: number;
}

/**
 * The clear-sky index as an AR(1) process, stationary with the given mean and sd; the state carries over
 * from one day to the next so multi-day horizons see persistent weather.
 */
export class Clearness {
  private x: number;
  private readonly innovation: number;
  private readonly p: ClearnessProcess;
  private readonly rng: Rng;

  constructor(p: ClearnessProcess, rng: Rng) {
    this.p = p;
    this.rng = rng;
    this.innovation = p.sd * Math.sqrt(1 - p.ar * p.ar);
    this.x = p.mean + p.sd * rng.normal();
  }

  next(): number {
    const { mean, ar } = this.p;
    this.x = mean + ar * (this.x - mean) + this.innovation * this.rng.normal();
    return Math.min(1.1, Math.max(0.05, this.x));
  }
}

/**
 * PV energy per kWp (kWh) in each interval of one day, on a horizontal plane at local solar time,
 * evaluated at interval midpoints. Writes into `out` (length = intervals per day).
 */
export function pvPerKwp(
  out: Float64Array,
  latitude: number,
  dayOfYear: number,
  performanceRatio: number,
  clearness: Clearness,
): void {
  const k = out.length;
  const dtHours = 24 / k;
  for (let i = 0; i < k; i++) {
    const ghi = haurwitzGhi(cosZenith(latitude, dayOfYear, (i + 0.5) * dtHours));
    const index = clearness.next();
    out[i] = ghi > 0 ? (ghi / 1000) * performanceRatio * index * dtHours : 0;
  }
}
