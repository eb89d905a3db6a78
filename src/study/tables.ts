import { stringify } from 'csv-stringify/sync';
import type { EpochSeries } from '../models/result.ts';
import { METRIC_NAMES } from '../models/result.ts';
import type { ParamValue } from '../models/study.ts';
import type { EpochRow, PointSummary } from './aggregate.ts';

export type Cell = string | number | boolean | null;
export interface Table {
  columns: string[];
  rows: Record<string, Cell>[];
}

/**
 * The cadCAD-style long table: one row per epoch, keyed by simulation, subset (sweep point), run and timestep
 * (the epoch's last interval, where its metrics are final), then the sweep parameters, then every metric.
 */
export function longTable(rows: readonly EpochRow[], paramNames: readonly string[]): Table {
  const sorted = [...rows].sort((a, b) => a.subset - b.subset || a.run - b.run);
  return {
    columns: [
      'simulation',
      'subset',
      'run',
      'timestep',
      'epoch_id',
      ...paramNames,
      ...METRIC_NAMES,
      'digest',
    ],
    rows: sorted.map((r) => ({
      simulation: 0,
      subset: r.subset,
      run: r.run,
      timestep: r.metrics.intervals,
      epoch_id: r.epoch_id,
      ...r.params,
      ...r.metrics,
      digest: r.digest,
    })),
  };
}

/** Per-interval community series, one row per (subset, run, timestep), for epochs that asked for series. */
export function seriesTable(
  rows: readonly (EpochRow & { series?: EpochSeries })[],
  paramNames: readonly string[],
): Table | undefined {
  const withSeries = rows.filter((r) => r.series).sort((a, b) => a.subset - b.subset || a.run - b.run);
  if (withSeries.length === 0) return undefined;
  const names = Object.keys(withSeries[0]!.series!) as (keyof EpochSeries)[];
  const out: Record<string, Cell>[] = [];
  for (const r of withSeries) {
    const s = r.series!;
    for (let t = 0; t < s.load_kwh.length; t++) {
      const row: Record<string, Cell> = {
        simulation: 0,
        subset: r.subset,
        run: r.run,
        timestep: t + 1,
        ...r.params,
      };
      for (const name of names) row[name] = s[name][t] ?? null;
      out.push(row);
    }
  }
  return { columns: ['simulation', 'subset', 'run', 'timestep', ...paramNames, ...names], rows: out };
}

/** Aggregates in tidy form: one row per (sweep point, metric). */
export function aggregateTable(points: readonly PointSummary[], paramNames: readonly string[]): Table {
  const rows: Record<string, Cell>[] = [];
  for (const p of points) {
    for (const metric of METRIC_NAMES) {
      rows.push({ subset: p.subset, ...p.params, metric, ...p.metrics[metric] });
    }
  }
  return {
    columns: ['subset', ...paramNames, 'metric', 'n', 'mean', 'sd', 'ci95_low', 'ci95_high'],
    rows,
  };
}

export function toCsv(table: Table): string {
  return stringify(
    table.rows.map((r) => table.columns.map((c) => r[c] ?? '')),
    { header: true, columns: table.columns, cast: { boolean: (b) => String(b) } },
  );
}

export function toJsonl(table: Table): string {
  return table.rows
    .map((r) => JSON.stringify(Object.fromEntries(table.columns.map((c) => [c, r[c] ?? null]))))
    .join('\n')
    .concat('\n');
}

export function paramNamesOf(rows: readonly { params: Record<string, ParamValue> }[]): string[] {
  return rows.length > 0 ? Object.keys(rows[0]!.params) : [];
}
