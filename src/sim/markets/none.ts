import { type ClearFn, resetClearing } from './types.ts';

/** Baseline: no local market, every household settles with the grid alone. */
export function createNone(): ClearFn {
  return (_book, out) => resetClearing(out);
}
