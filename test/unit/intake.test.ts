import { describe, expect, it } from 'vitest';
import { buildSubmission } from '../../src/coordinator/intake.ts';
import { DEFAULT_RETRY } from '../../src/coordinator/job-state.ts';
import type { SubmitRequest } from '../../src/models/api.ts';
import { InputError } from '../../src/models/errors.ts';
import type { Study } from '../../src/models/study.ts';
import { baseScenario } from './arbitraries.ts';

const ctx = { studyId: 's1', image: 'sha256:img', now: 0, retry: DEFAULT_RETRY };

/** The InputError's issues, failing the test on any other outcome (a ZodError or RangeError would be `internal`). */
function refused(req: SubmitRequest): string[] {
  try {
    buildSubmission(req, ctx);
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return [...(e as InputError).issues];
  }
  throw new Error('expected the request to be refused');
}

const study = (extra: Partial<Study>): Study => ({
  name: 'big',
  scenario: baseScenario() as Study['scenario'],
  sweep: [],
  runs: 1,
  seed: 0,
  ...extra,
});

describe('buildSubmission', () => {
  it('refuses an oversized study from the axes’ lengths alone, before building any sweep point', () => {
    const values = Array.from({ length: 400 }, (_, i) => i);
    // Building points walks the values; sizing must only read their lengths.
    Object.defineProperty(values, 'forEach', {
      value: () => {
        throw new Error('sweep points were built');
      },
    });
    const req = {
      study: study({
        sweep: [
          { name: 'community.size', values },
          { name: 'market.k', values },
        ],
      }),
    };
    expect(refused(req)).toEqual([
      'study.sweep: the sweep has 400 × 400 = 160,000 points × 1 run = 160,000 epochs; the limit is 100,000',
    ]);
  });

  it('names runs × points, not runs, when the sweep makes the study too large', () => {
    const req = {
      study: study({
        runs: 10_000,
        sweep: [{ name: 'community.size', values: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] }],
      }),
    };
    expect(refused(req)).toEqual([
      'study.sweep: the sweep has 11 points × 10,000 runs = 110,000 epochs; the limit is 100,000',
    ]);
  });

  it('derives a valid study name from any scenario name', () => {
    const name = (n: unknown) =>
      buildSubmission({ scenario: baseScenario({ name: n as string }) }, ctx).study.name;
    expect(name('my scenario')).toBe('my-scenario');
    expect(name('über/x')).toBe('uber-x');
    expect(name('x'.repeat(300))).toBe('x'.repeat(100));
    expect(buildSubmission({ scenario: { ...baseScenario(), name: undefined } }, ctx).study.name).toBe(
      'scenario',
    );
  });

  it('refuses bad single scenarios with InputErrors naming the path', () => {
    expect(refused({ scenario: baseScenario({ name: '' }) })).toEqual([
      expect.stringMatching(/^scenario\.name: expected at least 1 character/),
    ]);
    expect(refused({ scenario: { ...baseScenario(), seed: -1 } })).toEqual([
      'scenario.seed: expected a number ≥ 0, got -1',
    ]);
    expect(refused({ scenario: baseScenario(), limits: { cpus: 1e-12 } })).toEqual([
      'limits.cpus: expected a number ≥ 0.01, got 1e-12',
    ]);
    expect(refused({} as SubmitRequest)).toEqual([expect.stringMatching(/^scenario: /)]);
  });

  it('refuses a scenario nested too deep instead of overflowing the stack', () => {
    const scenario: Record<string, unknown> = baseScenario();
    let deep: unknown = [];
    for (let i = 0; i < 20_000; i++) deep = [deep];
    scenario.extra = deep;
    expect(refused({ scenario })).toEqual([
      expect.stringMatching(/^scenario\.extra(\[0\])+: nested deeper than 64 levels$/),
    ]);
  });
});
