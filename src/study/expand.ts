import { digestOf } from '../models/digest.ts';
import { describeIssues, formatPath, friendlyError, InputError } from '../models/errors.ts';
import type { EpochTask } from '../models/job.ts';
import { depthProblem } from '../models/json.ts';
import { parsePath, setAtPath } from '../models/paths.ts';
import { Scenario } from '../models/scenario.ts';
import { axisProblems, type ParamValue, type Study } from '../models/study.ts';
import { deriveSeed } from '../sim/rng.ts';

/** One point of the sweep: its index (cadCAD's "subset") and the value of every axis. */
export interface SweepPoint {
  subset: number;
  params: Record<string, ParamValue>;
  /** Scenario path → value to set, with the study path it came from for error messages. */
  overrides: { path: string; value: unknown; from: string }[];
}

/**
 * One epoch of a study: a fully specified scenario and where it sits in the sweep — the shape a job carries (its
 * epoch_id is the content address: the first 16 hex digits of the SHA-256 of the canonical scenario).
 */
export type EpochSpec = EpochTask;

/** Cartesian product of the axes, first axis slowest. */
export function sweepPoints(study: Pick<Study, 'sweep'>): SweepPoint[] {
  let points: SweepPoint[] = [{ subset: 0, params: {}, overrides: [] }];
  study.sweep.forEach((axis, a) => {
    const next: SweepPoint[] = [];
    for (const point of points) {
      axis.values.forEach((v, j) => {
        const overrides = axis.set
          ? Object.entries(axis.set).map(([path, list]) => ({
              path,
              value: list[j],
              from: `sweep[${a}].set[${JSON.stringify(path)}][${j}]`,
            }))
          : [{ path: axis.name, value: v, from: `sweep[${a}].values[${j}]` }];
        next.push({
          subset: 0,
          params: { ...point.params, [axis.name]: v },
          overrides: [...point.overrides, ...overrides],
        });
      });
    }
    points = next;
  });
  return points.map((p, subset) => ({ ...p, subset }));
}

/** Seeds of the Monte Carlo runs, the same at every sweep point so that points differ only by their parameters. */
export function runSeeds(masterSeed: number, runs: number): number[] {
  return Array.from({ length: runs }, (_, r) => deriveSeed(masterSeed, 1000 + r));
}

/**
 * What must hold before any point is built, whether or not the study went through its schema: every axis sets a
 * scenario path other than the seed (so nothing reaches a prototype), and neither the base scenario nor a swept
 * value nests deeper than structuredClone and the error messages can follow without a stack overflow.
 */
function preconditions(study: Study, baseScenario: unknown): string[] {
  const problems = study.sweep.flatMap((axis, a) =>
    axisProblems(axis).map((p) => `${formatPath(['sweep', a, ...p.path])}: ${p.message}`),
  );
  if (baseScenario === null || typeof baseScenario !== 'object' || Array.isArray(baseScenario))
    problems.push('scenario: expected a scenario object');
  for (const problem of [
    depthProblem(baseScenario, undefined, 'scenario'),
    depthProblem(study.sweep, undefined, 'sweep'),
  ])
    if (problem) problems.push(problem);
  return problems;
}

/**
 * Expands a study over its base scenario (raw JSON) into epochs, validating every sweep point. All problems are
 * collected and thrown together as one InputError naming each path.
 */
export function expandStudy(study: Study, baseScenario: unknown): EpochSpec[] {
  const refused = preconditions(study, baseScenario);
  if (refused.length > 0) throw new InputError(`invalid study "${study.name}"`, refused);
  const problems: string[] = [];
  const seeds = runSeeds(study.seed, study.runs);
  const epochs: EpochSpec[] = [];
  for (const point of sweepPoints(study)) {
    const draft = structuredClone(baseScenario) as Record<string, unknown>;
    let ok = true;
    for (const o of point.overrides) {
      const keys = parsePath(o.path);
      const err = keys ? setAtPath(draft, keys, o.value) : `"${o.path}" is not a scenario path`;
      if (err) {
        problems.push(`${o.from}: ${err}`);
        ok = false;
      }
    }
    if (!ok) continue;
    draft.seed = seeds[0];
    const parsed = Scenario.safeParse(draft, { error: friendlyError });
    if (!parsed.success) {
      const where = Object.entries(point.params)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ');
      for (const line of describeIssues(parsed.error, draft, 'scenario')) {
        problems.push(where ? `${line} (at sweep point ${point.subset}: ${where})` : line);
      }
      continue;
    }
    for (let r = 0; r < study.runs; r++) {
      const scenario: Scenario = { ...parsed.data, seed: seeds[r]! };
      epochs.push({
        epoch_id: digestOf(scenario).slice(0, 16),
        subset: point.subset,
        run: r + 1,
        params: point.params,
        scenario,
      });
    }
  }
  if (problems.length > 0) throw new InputError(`invalid study "${study.name}"`, problems);
  return epochs;
}
