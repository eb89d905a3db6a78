import { z } from 'zod';
import { Mechanism } from './scenario.ts';

const num = z.number();
/** null where a metric is undefined for the epoch (no P2P trade, no feeder, zero mean saving…). */
const maybe = z.number().nullable();

export const AgentResult = z.strictObject({
  id: z.number().int(),
  archetype: z.string(),
  /** Feeder (0-based) and node along it (1-based) when the scenario has a feeder. */
  feeder: z.number().int().nullable(),
  node: z.number().int().nullable(),
  load_kwh: num,
  generation_kwh: num,
  bill: num,
  baseline_bill: num,
  saving: num,
  p2p_bought_kwh: num,
  p2p_sold_kwh: num,
  grid_import_kwh: num,
  grid_export_kwh: num,
});
export type AgentResult = z.infer<typeof AgentResult>;

/** Community metrics of one epoch. Energies in kWh, powers in kW, money in tariff currency. */
export const EpochMetrics = z.strictObject({
  agents: z.number().int(),
  intervals: z.number().int(),
  load_kwh: num,
  generation_kwh: num,
  /** What the community pays in total, and would pay with no local market. */
  community_cost: num,
  baseline_cost: num,
  /** Total saving against the baseline plus the green premium agents value their P2P purchases at. */
  social_welfare: num,
  p2p_energy_kwh: num,
  /** Share of the locally possible trade (Σ min(supply, demand)) that the mechanism matched. */
  p2p_match_rate: maybe,
  price_mean: maybe,
  price_min: maybe,
  price_max: maybe,
  /** Energy settled with the grid at retail / feed-in prices. */
  grid_import_kwh: num,
  grid_export_kwh: num,
  /** 1 − settled grid import / load. */
  self_sufficiency: maybe,
  /** 1 − settled grid export / generation. */
  self_consumption: maybe,
  /** Physical community import through the transformer (net of all households). */
  peak_import_kw: num,
  peak_to_average: maybe,
  savings_mean: num,
  savings_min: num,
  savings_max: num,
  /** Gini coefficient of per-agent savings (0 = equal); null when the mean saving is not positive. */
  savings_gini: maybe,
  /** Share of agents paying more than in the baseline. */
  worse_off_share: num,
  voltage_min_pu: maybe,
  voltage_max_pu: maybe,
  voltage_violation_intervals: z.number().int().nullable(),
});
export type EpochMetrics = z.infer<typeof EpochMetrics>;
export const METRIC_NAMES = Object.keys(EpochMetrics.shape) as (keyof EpochMetrics)[];

/** Community-level per-interval series, one entry per interval. */
export const EpochSeries = z.strictObject({
  load_kwh: z.array(num),
  generation_kwh: z.array(num),
  net_import_kwh: z.array(num),
  p2p_kwh: z.array(num),
  price: z.array(maybe),
  retail_price: z.array(num),
  voltage_min_pu: z.array(maybe),
  voltage_max_pu: z.array(maybe),
});
export type EpochSeries = z.infer<typeof EpochSeries>;

export const EpochResult = z.strictObject({
  /** SHA-256 of the canonical JSON (RFC 8785) of the scenario that produced this result. */
  input_digest: z.string(),
  scenario: z.string(),
  seed: z.number().int(),
  mechanism: Mechanism,
  metrics: EpochMetrics,
  agents: z.array(AgentResult),
  series: EpochSeries.optional(),
  /** SHA-256 of the canonical JSON of this result without the digest field. */
  digest: z.string(),
});
export type EpochResult = z.infer<typeof EpochResult>;
