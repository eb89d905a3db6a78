import Table from 'cli-table3';
import type { EpochMetrics } from '../models/result.ts';
import type { PointSummary } from '../study/aggregate.ts';

/** Compact table borders: no rule between rows. */
const COMPACT = { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' };

export function formatNumber(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined) return '–';
  if (Math.abs(x) < 1e-9) return '0';
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(2);
  return x.toFixed(a >= 100 ? 1 : digits);
}

/** Two columns: metric, value. */
export function metricsTable(metrics: EpochMetrics): string {
  const t = new Table({ head: ['metric', 'value'], style: { head: [], border: [] }, chars: COMPACT });
  for (const [k, v] of Object.entries(metrics)) t.push([k, formatNumber(v)]);
  return t.toString();
}

/** Columns the comparison table shows: key metrics a reader compares mechanisms on. */
export const COMPARISON_METRICS: { metric: keyof EpochMetrics; head: string }[] = [
  { metric: 'savings_mean', head: 'saving/hh' },
  { metric: 'social_welfare', head: 'welfare' },
  { metric: 'p2p_energy_kwh', head: 'p2p kWh' },
  { metric: 'p2p_match_rate', head: 'matched' },
  { metric: 'price_mean', head: 'price' },
  { metric: 'self_sufficiency', head: 'self-suff' },
  { metric: 'savings_gini', head: 'gini' },
  { metric: 'worse_off_share', head: 'worse off' },
  { metric: 'peak_import_kw', head: 'peak kW' },
];

/** One row per sweep point: its parameters, then the mean over runs of the key metrics. */
export function comparisonTable(points: readonly PointSummary[], paramNames: readonly string[]): string {
  const t = new Table({
    head: [...paramNames, ...COMPARISON_METRICS.map((m) => m.head)],
    style: { head: [], border: [] },
    chars: COMPACT,
  });
  for (const p of points) {
    t.push([
      ...paramNames.map((n) => String(p.params[n])),
      ...COMPARISON_METRICS.map(({ metric }) => formatNumber(p.metrics[metric].mean)),
    ]);
  }
  return t.toString();
}
