import { z } from 'zod';
import { VALUE_SHOWN } from './errors.ts';
import { isPrototypeKey, sweepPathProblem } from './paths.ts';

/**
 * Epochs one study may expand to: the coordinator refuses larger submits before building anything, and the schema
 * holds local runs to the same limit.
 */
export const MAX_EPOCHS_PER_STUDY = 100_000;

const STUDY_NAME = /^[A-Za-z0-9][\w.-]*$/;
const STUDY_NAME_MAX = 100;

const label = z.union([z.string(), z.number(), z.boolean()]);

/**
 * One axis of a sweep. Plain form: `name` is a scenario path ("market.mechanism") and each of `values` is set
 * there in turn. Zipped form: `set` maps several scenario paths to lists as long as `values`, which then only
 * label the points (a radCAD-style zip, e.g. "pv_penetration": ["low", "mid", "high"]).
 * Axes combine as a cartesian product.
 */
export const SweepAxis = z
  .strictObject({
    name: z.string().min(1),
    values: z.array(label).min(1),
    set: z.record(z.string().min(1), z.array(z.unknown()).min(1)).optional(),
  })
  .superRefine((axis, ctx) => {
    for (const p of axisProblems(axis)) ctx.addIssue({ code: 'custom', ...p, params: VALUE_SHOWN });
    for (const [path, list] of Object.entries(axis.set ?? {})) {
      if (list.length !== axis.values.length) {
        ctx.addIssue({
          code: 'custom',
          path: ['set', path],
          message: `expected ${axis.values.length} values (one per entry of values), got ${list.length}`,
        });
      }
    }
  });
export type SweepAxis = z.infer<typeof SweepAxis>;

/**
 * What an axis may not set, each with its path inside the axis: a plain axis's name and a zipped axis's paths must
 * be scenario paths other than the seed (see sweepPathProblem); a zipped axis's name is only a label, but a label
 * that is a prototype key would still become a key of every point's params.
 */
export function axisProblems(
  axis: Pick<SweepAxis, 'name' | 'set'>,
): { path: (string | number)[]; message: string }[] {
  if (!axis.set) {
    const problem = sweepPathProblem(axis.name);
    return problem ? [{ path: ['name'], message: problem }] : [];
  }
  const problems = Object.keys(axis.set).flatMap((path) => {
    const problem = sweepPathProblem(path);
    return problem ? [{ path: ['set', path], message: problem }] : [];
  });
  if (isPrototypeKey(axis.name))
    problems.unshift({ path: ['name'], message: `${JSON.stringify(axis.name)} cannot name an axis` });
  return problems;
}

export const Study = z
  .strictObject({
    name: z.string().regex(STUDY_NAME, 'expected letters, digits, ".", "_" or "-"').max(STUDY_NAME_MAX),
    description: z.string().optional(),
    /** The base scenario: a path relative to the study file, or the scenario itself. */
    scenario: z.union([z.string().min(1), z.record(z.string(), z.unknown())]),
    sweep: z.array(SweepAxis).default([]),
    /** Monte Carlo runs per sweep point; run r uses the same seed at every point (common random numbers). */
    runs: z.number().int().min(1).max(10_000),
    /** Master seed the run seeds derive from. */
    seed: z.number().int().min(0).max(0xffff_ffff).default(0),
  })
  .superRefine((study, ctx) => {
    const seen = new Set<string>();
    study.sweep.forEach((axis, i) => {
      if (seen.has(axis.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['sweep', i, 'name'],
          message: `duplicate axis name "${axis.name}"`,
        });
      }
      seen.add(axis.name);
    });
    const tooBig = studySizeProblem(study);
    if (tooBig)
      ctx.addIssue({ code: 'custom', path: [tooBig.path], message: tooBig.message, params: VALUE_SHOWN });
  });
export type Study = z.infer<typeof Study>;

/** What sizing needs of a study: how many values each axis has, and the runs. */
export interface StudyShape {
  runs: number;
  sweep: readonly { values: { length: number } }[];
}

/**
 * Product of counts (each ≥ 1), exact while it is a safe integer and Infinity beyond, so that a vast sweep never
 * turns into an inexact count.
 */
function product(counts: readonly number[]): number {
  let p = 1;
  for (const n of counts) {
    p *= n;
    if (p > Number.MAX_SAFE_INTEGER) return Number.POSITIVE_INFINITY;
  }
  return p;
}

/**
 * Epochs a study expands to — the product of its axes' lengths × runs — from the lengths alone, so an oversized
 * study is refused without building a single sweep point. Infinity when past 2^53.
 */
export function studySize(study: StudyShape): number {
  return product([...study.sweep.map((a) => a.values.length), study.runs]);
}

const count = (n: number) =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US')
    : `more than ${Number.MAX_SAFE_INTEGER.toLocaleString('en-US')}`;

/**
 * Why a study is too large to run, and the study key to blame (`runs` only when the runs alone exceed the limit),
 * or undefined when it fits: `the sweep has 11 points × 10,000 runs = 110,000 epochs; the limit is 100,000`.
 */
export function studySizeProblem(
  study: StudyShape,
  limit = MAX_EPOCHS_PER_STUDY,
): { path: 'runs' | 'sweep'; message: string } | undefined {
  if (study.runs > limit)
    return {
      path: 'runs',
      message: `${count(study.runs)} runs exceed the limit of ${count(limit)} epochs per study`,
    };
  const epochs = studySize(study);
  if (epochs <= limit) return undefined;
  const lengths = study.sweep.map((a) => a.values.length);
  const points = product(lengths);
  const sweep =
    lengths.length === 1
      ? `${count(points)} points`
      : lengths.length <= 6
        ? `${lengths.map(count).join(' × ')} = ${count(points)} points`
        : `${count(points)} points over ${lengths.length} axes`;
  const runs = `${count(study.runs)} ${study.runs === 1 ? 'run' : 'runs'}`;
  return {
    path: 'sweep',
    message: `the sweep has ${sweep} × ${runs} = ${count(epochs)} epochs; the limit is ${count(limit)}`,
  };
}

/**
 * A valid study name from any scenario name, for a single-scenario submit: accents dropped, runs of other
 * characters turned into "-", leading punctuation removed, cut to the limit ("my scenario" → "my-scenario",
 * "über/x" → "uber-x"); "scenario" when nothing is left.
 */
export function studyNameFrom(name: unknown): string {
  const derived = (typeof name === 'string' ? name : '')
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .replace(/[^\w.-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, STUDY_NAME_MAX);
  return STUDY_NAME.test(derived) ? derived : 'scenario';
}

export const ParamValue = label;
export type ParamValue = z.infer<typeof ParamValue>;
