import { z } from 'zod';

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

export const Study = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z0-9][\w.-]*$/, 'expected letters, digits, ".", "_" or "-"')
      .max(100),
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
    const points = study.sweep.reduce((p, a) => p * a.values.length, 1);
    if (points * study.runs > 1_000_000) {
      ctx.addIssue({
        code: 'custom',
        path: ['runs'],
        message: `the study expands to ${points * study.runs} epochs; the limit is 1,000,000`,
      });
    }
  });
export type Study = z.infer<typeof Study>;

export const ParamValue = label;
export type ParamValue = z.infer<typeof ParamValue>;
