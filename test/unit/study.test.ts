import { describe, expect, it } from 'vitest';
import { InputError, parseInput } from '../../src/models/errors.ts';
import { parsePath, setAtPath } from '../../src/models/paths.ts';
import { METRIC_NAMES } from '../../src/models/result.ts';
import { MAX_EPOCHS_PER_STUDY, Study, studySize, studySizeProblem } from '../../src/models/study.ts';
import { runEpoch } from '../../src/sim/epoch.ts';
import { aggregate, type EpochRow, summarise } from '../../src/study/aggregate.ts';
import { expandStudy, runSeeds, sweepPoints } from '../../src/study/expand.ts';
import { renderReport } from '../../src/study/report.ts';
import { aggregateTable, longTable, toCsv, toJsonl } from '../../src/study/tables.ts';
import { baseScenario } from './arbitraries.ts';

/** The study schema's issues for `extra` over a valid study, as the CLI prints them. */
function studyIssues(extra: Record<string, unknown>): string[] {
  try {
    parseInput(Study, { name: 'x', scenario: 'a.json', runs: 1, ...extra }, 'invalid study');
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return [...(e as InputError).issues];
  }
  throw new Error('expected the study to be rejected');
}

const study = (extra: Partial<Study> = {}) =>
  Study.parse({
    name: 'unit',
    scenario: 'unused.json',
    runs: 3,
    seed: 9,
    sweep: [
      { name: 'market.mechanism', values: ['none', 'sdr'] },
      {
        name: 'pv',
        values: ['low', 'mid', 'high'],
        set: { 'community.archetypes[0].share': [3, 2, 1], 'community.archetypes[1].share': [1, 2, 3] },
      },
    ],
    ...extra,
  });

describe('paths', () => {
  it('parses dotted and indexed paths', () => {
    expect(parsePath('community.archetypes[1].pv_kwp')).toEqual(['community', 'archetypes', 1, 'pv_kwp']);
    expect(parsePath('market.mechanism')).toEqual(['market', 'mechanism']);
    for (const bad of ['', '.a', 'a.', 'a..b', '[0]', 'a[x]', 'a b']) expect(parsePath(bad)).toBeUndefined();
  });

  it('sets values, creating objects but not list entries', () => {
    const v: Record<string, unknown> = { a: [{ b: 1 }] };
    expect(setAtPath(v, ['a', 0, 'b'], 2)).toBeUndefined();
    expect(setAtPath(v, ['c', 'd'], 3)).toBeUndefined();
    expect(v).toEqual({ a: [{ b: 2 }], c: { d: 3 } });
    expect(setAtPath(v, ['a', 5, 'b'], 1)).toMatch(/a\[5\] does not exist/);
  });

  it('never reaches a prototype', () => {
    for (const bad of [
      '__proto__.polluted',
      'constructor.prototype.polluted',
      'a.__proto__',
      'a[0].prototype',
    ])
      expect(parsePath(bad)).toBeUndefined();
    const v: Record<string, unknown> = {};
    expect(setAtPath(v, ['__proto__', 'polluted'], 1)).toMatch(/"__proto__" is never a scenario key/);
    expect(setAtPath(v, ['constructor', 'prototype', 'polluted'], 1)).toMatch(/never a scenario key/);
    // Inherited members are not walked into: `toString` is created as the object's own member.
    expect(setAtPath(v, ['toString', 'x'], 1)).toBeUndefined();
    expect(v).toEqual({ toString: { x: 1 } });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype.toString).not.toHaveProperty('x');
  });
});

describe('expansion', () => {
  it('is the cartesian product of axes, zipped within an axis, first axis slowest', () => {
    const points = sweepPoints(study());
    expect(points).toHaveLength(6);
    expect(points.map((p) => p.params)).toEqual([
      { 'market.mechanism': 'none', pv: 'low' },
      { 'market.mechanism': 'none', pv: 'mid' },
      { 'market.mechanism': 'none', pv: 'high' },
      { 'market.mechanism': 'sdr', pv: 'low' },
      { 'market.mechanism': 'sdr', pv: 'mid' },
      { 'market.mechanism': 'sdr', pv: 'high' },
    ]);
    expect(points[4]!.overrides.map((o) => [o.path, o.value])).toEqual([
      ['market.mechanism', 'sdr'],
      ['community.archetypes[0].share', 2],
      ['community.archetypes[1].share', 2],
    ]);
  });

  it('gives stable, distinct epoch ids and shares run seeds across sweep points', () => {
    const a = expandStudy(study(), baseScenario());
    const b = expandStudy(study(), baseScenario());
    expect(a).toHaveLength(18);
    expect(a.map((e) => e.epoch_id)).toEqual(b.map((e) => e.epoch_id));
    expect(new Set(a.map((e) => e.epoch_id)).size).toBe(18);
    const seeds = runSeeds(9, 3);
    for (const e of a) expect(e.scenario.seed).toBe(seeds[e.run - 1]);
    expect(new Set(seeds).size).toBe(3);
    expect(a.find((e) => e.subset === 5)!.scenario.community.archetypes[1]!.share).toBe(3);
    expect(a.find((e) => e.subset === 3)!.scenario.market.mechanism).toBe('sdr');
    // A different master seed moves every run.
    expect(expandStudy(study({ seed: 10 }), baseScenario())[0]!.epoch_id).not.toBe(a[0]!.epoch_id);
  });

  it('names the sweep entry and scenario path of every bad point', () => {
    const bad = study({
      sweep: [
        { name: 'community.archetypes[1].pv_kwp', values: [1, -2, 3] },
        { name: 'community.archetypes[7].share', values: [1] },
      ],
    });
    try {
      expandStudy(bad, baseScenario());
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(InputError);
      const issues = (e as InputError).issues;
      expect(
        issues.every((i) => i.startsWith('sweep[1].values[0]: community.archetypes[7] does not exist')),
      ).toBe(true);
    }
    const negative = study({ sweep: [{ name: 'community.archetypes[1].pv_kwp', values: [1, -2, 3] }] });
    expect(() => expandStudy(negative, baseScenario())).toThrow(
      /scenario\.community\.archetypes\[1\]\.pv_kwp: expected a number ≥ 0, got -2 \(at sweep point 1: community\.archetypes\[1\]\.pv_kwp=-2\)/,
    );
  });

  it('rejects zipped lists of the wrong length at parse time', () => {
    const r = Study.safeParse({
      name: 'x',
      scenario: 'a.json',
      runs: 1,
      sweep: [{ name: 'pv', values: [1, 2], set: { 'community.size': [1, 2, 3] } }],
    });
    expect(r.success).toBe(false);
    expect(r.error!.issues[0]!.path).toEqual(['sweep', 0, 'set', 'community.size']);
  });
});

describe('sweep paths', () => {
  it('refuses paths into prototypes, naming the axis, and leaves Object.prototype clean', () => {
    const axes = [
      { name: '__proto__.polluted', values: [1, 2] },
      { name: 'pv', values: ['a'], set: { 'constructor.prototype.polluted': [1] } },
    ];
    expect(studyIssues({ sweep: axes })).toEqual([
      'sweep[0].name: "__proto__.polluted" is not a scenario path ("__proto__" is never a scenario key)',
      'sweep[1].set["constructor.prototype.polluted"]: "constructor.prototype.polluted" is not a scenario path ("constructor" is never a scenario key)',
    ]);
    // expandStudy is safe on its own too (a study that skipped the schema).
    const unchecked = { name: 'x', scenario: 'a.json', runs: 1, seed: 0, sweep: axes } as Study;
    expect(() => expandStudy(unchecked, baseScenario())).toThrow(
      /sweep\[0\]\.name: "__proto__\.polluted" is not/,
    );
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
  });

  it('refuses an axis that sets the seed: runs get their seeds from the study', () => {
    const [plain, zipped] = [
      studyIssues({ sweep: [{ name: 'seed', values: [1, 2, 3] }] }),
      studyIssues({ sweep: [{ name: 's', values: [1, 2], set: { seed: [1, 2] } }] }),
    ];
    expect(plain).toEqual([
      expect.stringMatching(/^sweep\[0\]\.name: "seed" cannot be swept: .*"seed" and "runs"/),
    ]);
    expect(zipped).toEqual([expect.stringMatching(/^sweep\[0\]\.set\.seed: "seed" cannot be swept/)]);
    const unchecked = {
      name: 'x',
      scenario: 'a.json',
      runs: 1,
      seed: 0,
      sweep: [{ name: 'seed', values: [1, 2, 3] }],
    };
    expect(() => expandStudy(unchecked as Study, baseScenario())).toThrow(/"seed" cannot be swept/);
  });

  it('refuses a base scenario nested too deep instead of overflowing the stack', () => {
    let deep: unknown = {};
    for (let i = 0; i < 20_000; i++) deep = { a: deep };
    expect(() => expandStudy(study(), { ...baseScenario(), deep })).toThrow(
      /scenario\.deep(\.a)+: nested deeper than 64 levels/,
    );
  });
});

describe('study size', () => {
  const axes = (...lengths: number[]) =>
    lengths.map((n, i) => ({
      name: `community.archetypes[${i}].share`,
      values: Array.from({ length: n }, () => 1),
    }));
  // Sizing reads only the lengths, so vast axes need not exist.
  const sized = (...lengths: number[]) =>
    lengths.map((n, i) => ({ name: `a${i}`, values: { length: n } as unknown as number[] }));

  it('is the product of the axes’ lengths and runs; the schema enforces the coordinator’s limit', () => {
    expect(MAX_EPOCHS_PER_STUDY).toBe(100_000);
    expect(studySize({ runs: 3, sweep: axes(2, 5) })).toBe(30);
    expect(studySize({ runs: 7, sweep: [] })).toBe(7);
    expect(studySizeProblem({ runs: 10_000, sweep: axes(10) })).toBeUndefined();
    expect(studyIssues({ runs: 10_000, sweep: axes(11) })).toEqual([
      'sweep: the sweep has 11 points × 10,000 runs = 110,000 epochs; the limit is 100,000',
    ]);
  });

  it('names runs only when they alone exceed the limit', () => {
    expect(studySizeProblem({ runs: 500, sweep: axes(2) }, 100)).toEqual({
      path: 'runs',
      message: '500 runs exceed the limit of 100 epochs per study',
    });
    expect(studySizeProblem({ runs: 60, sweep: axes(2) }, 100)?.path).toBe('sweep');
  });

  it('never overflows into Infinity or an inexact count', () => {
    const vast = sized(...Array.from({ length: 400 }, () => 10));
    expect(studySize({ runs: 1, sweep: vast })).toBe(Number.POSITIVE_INFINITY);
    expect(studySize({ runs: 3, sweep: sized(2 ** 26, 2 ** 26) })).toBe(Number.POSITIVE_INFINITY);
    const problem = studySizeProblem({ runs: 2, sweep: vast })!;
    expect(problem.message).toBe(
      'the sweep has more than 9,007,199,254,740,991 points over 400 axes × 2 runs = more than 9,007,199,254,740,991 epochs; the limit is 100,000',
    );
  });
});

describe('aggregation', () => {
  it('computes mean, sample sd and the Student-t 95 % interval', () => {
    const s = summarise([1, 2, 3]);
    expect(s.mean).toBe(2);
    expect(s.sd).toBe(1);
    // t(0.975, 2) = 4.302653; half-width = 4.302653 / √3 = 2.484138
    expect(s.ci95_low!).toBeCloseTo(2 - 2.484138, 5);
    expect(s.ci95_high!).toBeCloseTo(2 + 2.484138, 5);
    expect(summarise([5])).toEqual({ n: 1, mean: 5, sd: null, ci95_low: null, ci95_high: null });
    expect(summarise([]).mean).toBeNull();
  });

  it('groups by sweep point and skips null metrics', () => {
    const epochs = expandStudy(study({ runs: 2 }), baseScenario());
    const rows: EpochRow[] = epochs.map((e) => {
      const r = runEpoch(e.scenario);
      return { ...e, metrics: r.metrics, digest: r.digest };
    });
    const points = aggregate(rows);
    expect(points.map((p) => p.subset)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(points.every((p) => p.runs === 2)).toBe(true);
    const none = points[0]!;
    expect(none.metrics.price_mean).toEqual({ n: 0, mean: null, sd: null, ci95_low: null, ci95_high: null });
    const sdr = points[3]!;
    const costs = rows.filter((r) => r.subset === 3).map((r) => r.metrics.community_cost);
    expect(sdr.metrics.community_cost.mean).toBeCloseTo((costs[0]! + costs[1]!) / 2, 9);

    const long = longTable(rows, ['market.mechanism', 'pv']);
    expect(long.columns.slice(0, 7)).toEqual([
      'simulation',
      'subset',
      'run',
      'timestep',
      'epoch_id',
      'market.mechanism',
      'pv',
    ]);
    expect(long.rows).toHaveLength(12);
    const csv = toCsv(long).trimEnd().split('\n');
    expect(csv).toHaveLength(13);
    expect(csv[0]!.split(',')).toHaveLength(long.columns.length);
    const jsonl = toJsonl(long).trimEnd().split('\n');
    expect(JSON.parse(jsonl[11]!)).toMatchObject({ subset: 5, run: 2, pv: 'high', timestep: 24 });
    expect(aggregateTable(points, ['market.mechanism', 'pv']).rows).toHaveLength(6 * METRIC_NAMES.length);
  });

  it('renders a self-contained report with an SVG chart per metric that has data', async () => {
    const epochs = expandStudy(study({ runs: 2 }), baseScenario());
    const rows = epochs.map((e) => {
      const r = runEpoch(e.scenario);
      return { ...e, metrics: r.metrics, digest: r.digest };
    });
    const html = await renderReport({
      study: 'unit <test>',
      epochs: rows.length,
      runs: 2,
      paramNames: ['market.mechanism', 'pv'],
      points: aggregate(rows),
      generatedAt: 'now',
    });
    expect(html).toContain('unit &lt;test&gt;');
    // No feeder in this scenario, so the voltage chart has no data and is left out.
    expect(html.match(/<svg/g)).toHaveLength(8);
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/);
  });
});
