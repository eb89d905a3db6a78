import type { EpochSeries } from '../models/result.ts';
import type { Study } from '../models/study.ts';
import { aggregate, type EpochRow, type PointSummary } from './aggregate.ts';
import { renderReport } from './report.ts';
import { aggregateTable, longTable, paramNamesOf, seriesTable, toCsv, toJsonl } from './tables.ts';

export type StudyRow = EpochRow & { series?: EpochSeries };

export interface StudyOutputs {
  points: PointSummary[];
  paramNames: string[];
  /** File name → content, ready to be written together. */
  files: Record<string, string>;
}

/** Everything a finished study produces: long table (CSV + JSONL), aggregates (CSV + JSON), series, report. */
export async function buildOutputs(
  study: Study,
  rows: readonly StudyRow[],
  generatedAt: string,
): Promise<StudyOutputs> {
  const paramNames = paramNamesOf(rows);
  const points = aggregate(rows);
  const long = longTable(rows, paramNames);
  const files: Record<string, string> = {
    'results.csv': toCsv(long),
    'results.jsonl': toJsonl(long),
    'aggregates.csv': toCsv(aggregateTable(points, paramNames)),
    'aggregates.json': `${JSON.stringify({ study: study.name, runs: study.runs, points }, null, 2)}\n`,
  };
  const series = seriesTable(rows, paramNames);
  if (series) files['timeseries.csv'] = toCsv(series);
  files['report.html'] = await renderReport({
    study: study.name,
    ...(study.description ? { description: study.description } : {}),
    epochs: rows.length,
    runs: study.runs,
    paramNames,
    points,
    generatedAt,
  });
  return { points, paramNames, files };
}
