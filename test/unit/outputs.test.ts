import { describe, expect, it } from 'vitest';
import { Outputs } from '../../src/coordinator/outputs.ts';

const output = (id: string) => ({ job_id: id, results: [] });
const unused = {} as never;

describe('the output cache', () => {
  it('is bounded by bytes, keeps the most recently used, and never holds one huge output', () => {
    const cache = new Outputs(unused, 1000);
    for (let i = 0; i < 100; i++) cache.remember(`j${i}`, output(`j${i}`), 100);
    expect(cache.cachedBytes()).toBeLessThanOrEqual(1000);
    expect(cache.cachedBytes()).toBe(1000);
    cache.remember('huge', output('huge'), 600); // over a quarter of the budget: not kept
    expect(cache.cachedBytes()).toBe(1000);
    cache.remember('j99', output('j99'), 200); // replaced, not counted twice
    expect(cache.cachedBytes()).toBeLessThanOrEqual(1000);
  });
});
