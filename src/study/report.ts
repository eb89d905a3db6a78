import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { EpochMetrics } from '../models/result.ts';
import type { PointSummary } from './aggregate.ts';

/** Metrics the report charts, with a title and unit each; shown when at least one point has data. */
export const REPORT_METRICS: { metric: keyof EpochMetrics; title: string }[] = [
  { metric: 'savings_mean', title: 'Mean saving per household vs. no market (currency)' },
  { metric: 'social_welfare', title: 'Social welfare (savings + green value)' },
  { metric: 'p2p_energy_kwh', title: 'Energy traded peer-to-peer (kWh)' },
  { metric: 'price_mean', title: 'Mean local clearing price (currency/kWh)' },
  { metric: 'self_sufficiency', title: 'Self-sufficiency (settled)' },
  { metric: 'savings_gini', title: 'Gini of savings (0 = equal)' },
  { metric: 'worse_off_share', title: 'Share of households worse off' },
  { metric: 'peak_import_kw', title: 'Peak import at the transformer (kW)' },
  { metric: 'voltage_violation_intervals', title: 'Intervals outside ±5 % voltage' },
];

export interface ReportInput {
  study: string;
  description?: string;
  epochs: number;
  runs: number;
  paramNames: string[];
  points: PointSummary[];
  /** ISO time the results were produced; not part of any digest. */
  generatedAt: string;
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function fmt(x: number | null, digits = 3): string {
  if (x === null) return '–';
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return x.toExponential(2);
  return x.toFixed(a >= 100 ? 1 : digits);
}

/** A grouped bar chart with 95 % CI error bars of one metric across the sweep (first axis on x, second colour). */
function chartSpec(
  input: ReportInput,
  metric: keyof EpochMetrics,
  title: string,
): vl.TopLevelSpec | undefined {
  const [xName, colorName] = input.paramNames;
  const values = input.points
    .filter((p) => p.metrics[metric].mean !== null)
    .map((p) => ({
      x: xName ? String(p.params[xName]) : 'all',
      color: colorName ? String(p.params[colorName]) : 'all',
      mean: p.metrics[metric].mean,
      lo: p.metrics[metric].ci95_low ?? p.metrics[metric].mean,
      hi: p.metrics[metric].ci95_high ?? p.metrics[metric].mean,
    }));
  if (values.length === 0) return undefined;
  const xOrder = [...new Set(values.map((v) => v.x))];
  const colorOrder = [...new Set(values.map((v) => v.color))];
  const encoding = {
    x: {
      field: 'x',
      type: 'nominal',
      title: xName ?? '',
      sort: xOrder,
      axis: { labelAngle: -30, labelLimit: 240 },
    },
    ...(colorName ? { xOffset: { field: 'color', type: 'nominal', sort: colorOrder } } : {}),
  } as const;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, fontSize: 13 },
    width: 420,
    height: 220,
    data: { values },
    encoding,
    layer: [
      {
        mark: { type: 'bar' },
        encoding: {
          y: { field: 'mean', type: 'quantitative', title: metric },
          color: colorName
            ? { field: 'color', type: 'nominal', title: colorName, sort: colorOrder }
            : { value: '#4c78a8' },
        },
      },
      {
        mark: { type: 'errorbar', ticks: true },
        encoding: { y: { field: 'lo', type: 'quantitative', title: metric }, y2: { field: 'hi' } },
      },
    ],
  } as vl.TopLevelSpec;
}

async function renderSvg(spec: vl.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** A self-contained HTML report: charts as inline SVG, the aggregate table, no scripts or external assets. */
export async function renderReport(input: ReportInput): Promise<string> {
  const charts: string[] = [];
  for (const { metric, title } of REPORT_METRICS) {
    const spec = chartSpec(input, metric, title);
    if (spec) charts.push(`<figure>${await renderSvg(spec)}</figure>`);
  }
  const shown = REPORT_METRICS.filter(({ metric }) =>
    input.points.some((p) => p.metrics[metric].mean !== null),
  );
  const head = [...input.paramNames, 'runs', ...shown.map((m) => m.metric)];
  const rows = input.points.map((p) => {
    const cells = [
      ...input.paramNames.map((n) => escapeHtml(String(p.params[n]))),
      String(p.runs),
      ...shown.map(({ metric }) => {
        const s = p.metrics[metric];
        const half = s.ci95_high !== null && s.mean !== null ? s.ci95_high - s.mean : null;
        return half === null ? fmt(s.mean) : `${fmt(s.mean)} <small>± ${fmt(half)}</small>`;
      }),
    ];
    return `<tr>${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
  });
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>${escapeHtml(input.study)} — Plurigrid study report</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}.meta{color:#666;margin-top:0}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1rem}
figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:.5rem;overflow:auto}
table{border-collapse:collapse;font-size:.85rem;margin-top:1rem;width:100%}
th,td{border-bottom:1px solid #e3e3e3;padding:.3rem .5rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}small{color:#888}.wrap{overflow-x:auto}
</style></head><body>
<h1>${escapeHtml(input.study)}</h1>
<p class="meta">${input.epochs} epochs · ${input.points.length} sweep points × ${input.runs} runs · generated ${escapeHtml(input.generatedAt)}</p>
${input.description ? `<p>${escapeHtml(input.description)}</p>` : ''}
<h2>Mechanisms compared</h2>
<div class="charts">${charts.join('\n')}</div>
<h2>Aggregates (mean ± 95 % CI half-width)</h2>
<div class="wrap"><table><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead>
<tbody>${rows.join('\n')}</tbody></table></div>
<p class="meta">Savings are against the no-market baseline on the same households, weather and dispatch. Every run uses
the same seed at every sweep point (common random numbers), so differences between points are due to the parameters.</p>
</body></html>
`;
}
