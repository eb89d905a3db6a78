import type { EpochSpec } from '../study/expand.ts';

export interface PackOptions {
  /** Work per job, so container start-up (~0.5 s) is amortised. */
  targetSeconds: number;
  /** Cap on the serialised epochs of one job (assignments travel as one NATS message). */
  maxBytes: number;
  /** Measured engine speed, seconds per prosumer-interval (bench:sim: ~1.6e-7 on one core). */
  secondsPerProsumerInterval: number;
}

export const DEFAULT_PACK: PackOptions = {
  targetSeconds: 5,
  maxBytes: 256 * 1024,
  secondsPerProsumerInterval: 2e-7,
};

export function estimateSeconds(e: EpochSpec, o: PackOptions): number {
  const s = e.scenario;
  return s.community.size * (1440 / s.time.interval_minutes) * s.time.days * o.secondsPerProsumerInterval;
}

/** Packs epochs, in order, into batches of about targetSeconds of work and at most maxBytes each. */
export function packEpochs(epochs: readonly EpochSpec[], o: PackOptions = DEFAULT_PACK): EpochSpec[][] {
  const batches: EpochSpec[][] = [];
  let batch: EpochSpec[] = [];
  let seconds = 0;
  let bytes = 0;
  for (const e of epochs) {
    const size = JSON.stringify(e).length;
    if (batch.length > 0 && (seconds >= o.targetSeconds || bytes + size > o.maxBytes)) {
      batches.push(batch);
      batch = [];
      seconds = 0;
      bytes = 0;
    }
    batch.push(e);
    seconds += estimateSeconds(e, o);
    bytes += size;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}
