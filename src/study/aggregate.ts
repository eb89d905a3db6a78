import quantile from '@stdlib/stats-base-dists-t-quantile';
import { type EpochMetrics, type EpochResult, METRIC_NAMES } from '../models/result.ts';
import type { ParamValue } from '../models/study.ts';

/** The outcome of one epoch as a study sees it. */
export interface EpochRow {
  epoch_id: string;
  subset: number;
  run: number;
  params: Record<string, ParamValue>;
  metrics: EpochMetrics;
  digest: string;
}

/** An epoch's row: where it sits in its study, and what its result says. */
export function epochRow(
  epoch: Pick<EpochRow, 'epoch_id' | 'subset' | 'run' | 'params'>,
  result: Pick<EpochResult, 'metrics' | 'digest'>,
): EpochRow {
  return {
    epoch_id: epoch.epoch_id,
    subset: epoch.subset,
    run: epoch.run,
    params: epoch.params,
    metrics: result.metrics,
    digest: result.digest,
  };
}

/** Mean, sample standard deviation and Student-t 95 % confidence interval of one metric over the runs. */
export interface MetricSummary {
  n: number;
  mean: number | null;
  sd: number | null;
  ci95_low: number | null;
  ci95_high: number | null;
}

export interface PointSummary {
  subset: number;
  params: Record<string, ParamValue>;
  runs: number;
  metrics: Record<keyof EpochMetrics, MetricSummary>;
}

export function summarise(values: readonly number[]): MetricSummary {
  const n = values.length;
  if (n === 0) return { n, mean: null, sd: null, ci95_low: null, ci95_high: null };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n === 1) return { n, mean, sd: null, ci95_low: null, ci95_high: null };
  const sd = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  const half = quantile(0.975, n - 1) * (sd / Math.sqrt(n));
  return { n, mean, sd, ci95_low: mean - half, ci95_high: mean + half };
}

/** Per sweep point and metric, a summary over its runs (null metrics are left out). Sorted by subset. */
export function aggregate(rows: readonly EpochRow[]): PointSummary[] {
  const bySubset = new Map<number, EpochRow[]>();
  for (const row of rows) {
    const list = bySubset.get(row.subset) ?? [];
    list.push(row);
    bySubset.set(row.subset, list);
  }
  return [...bySubset.entries()]
    .sort(([a], [b]) => a - b)
    .map(([subset, list]) => {
      const metrics = {} as PointSummary['metrics'];
      for (const name of METRIC_NAMES) {
        const values = list.map((r) => r.metrics[name]).filter((v): v is number => typeof v === 'number');
        metrics[name] = summarise(values);
      }
      return { subset, params: list[0]!.params, runs: list.length, metrics };
    });
}
