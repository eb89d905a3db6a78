import { z } from 'zod';

/** A worker's identity is its ed25519 public key (an nkey), so ids are unforgeable and subject-safe. */
export const WorkerId = z
  .string()
  .regex(/^U[A-Z2-7]{55}$/, 'expected a worker public key (nkey, starts with U)');

/**
 * Hours of the provider's day, on its own clock (`tz`), when it offers idle capacity to public-goods work: from
 * `from_hour` up to `to_hour`, across midnight when `to_hour` is the smaller (22–6).
 */
export const OffPeakWindow = z.strictObject({
  from_hour: z.number().min(0).max(24),
  to_hour: z.number().min(0).max(24),
});
export type OffPeakWindow = z.infer<typeof OffPeakWindow>;

/** Heartbeat and advert in one: capacity, prices and what runs there now. Sent every heartbeat interval. */
export const WorkerAd = z.strictObject({
  worker_id: WorkerId,
  name: z.string().min(1).max(100),
  executor: z.enum(['docker', 'process']),
  slots: z.number().int().min(0),
  slots_free: z.number().int().min(0),
  cpus: z.number().min(0),
  memory_mb: z.number().int().min(0),
  gpus: z.number().int().min(0),
  labels: z.record(z.string(), z.string()),
  /** Image IDs cached locally (scheduling prefers warm workers). */
  images: z.array(z.string()),
  /** Asking price in SIM per CPU-second. */
  price_per_cpu_s: z.number().min(0),
  offpeak: z.array(OffPeakWindow),
  /** The IANA time zone its off-peak windows are in (e.g. `Europe/Berlin`; daylight saving follows from it). */
  tz: z.string().min(1).max(64).default('UTC'),
  /** Asking price in SIM per CPU-second inside its off-peak windows (null: its usual price). */
  offpeak_price_per_cpu_s: z.number().min(0).nullable().default(null),
  /** `<job_id>#<attempt>` of every attempt running here. */
  running: z.array(z.string()),
  /**
   * Attempts whose results the RESULTS stream has acknowledged lately: no longer running, and not lost either (the
   * coordinator may not have read the result yet, say while a stream changes leader).
   */
  reported: z.array(z.string()).default([]),
  draining: z.boolean(),
  /** Sender's clock (ms since epoch) and heartbeat interval, for loss detection. */
  at: z.number(),
  interval_ms: z.number().int().min(1),
  version: z.string(),
});
export type WorkerAd = z.infer<typeof WorkerAd>;
