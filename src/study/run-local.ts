import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { EpochResult } from '../models/result.ts';
import { epochRow } from './aggregate.ts';
import type { EpochSpec } from './expand.ts';
import type { StudyRow } from './outputs.ts';

export interface LocalRunOptions {
  /** Worker threads (default: one per core). */
  threads?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Runs a study's epochs on this machine over a pool of worker threads. Epochs with the same content address run
 * once and their result is shared, since an epoch is a pure function of its scenario.
 */
export async function runEpochsLocal(
  epochs: readonly EpochSpec[],
  options: LocalRunOptions = {},
): Promise<StudyRow[]> {
  const threads = Math.max(1, options.threads ?? availableParallelism());
  const pool = new Piscina({
    filename: new URL('./epoch-worker.ts', import.meta.url).href,
    minThreads: threads,
    maxThreads: threads,
  });
  try {
    const unique = new Map<string, Promise<EpochResult>>();
    let done = 0;
    const total = epochs.length;
    options.onProgress?.(0, total);
    const rows = await Promise.all(
      epochs.map(async (e) => {
        let result = unique.get(e.epoch_id);
        if (!result) {
          result = pool.run(e.scenario) as Promise<EpochResult>;
          unique.set(e.epoch_id, result);
        }
        const r = await result;
        options.onProgress?.(++done, total);
        return { ...epochRow(e, r), ...(r.series ? { series: r.series } : {}) };
      }),
    );
    return rows;
  } finally {
    await pool.destroy();
  }
}
