import { z } from 'zod';

/** How one attempt of a job ended on a worker. */
export const ExecStatus = z.enum(['ok', 'failed', 'timeout', 'oom', 'cancelled']);
export type ExecStatus = z.infer<typeof ExecStatus>;

/** Resource usage and timings of one attempt. */
export const ExecUsage = z.strictObject({
  wall_ms: z.number().min(0),
  /** CPU time of the job's processes, when the executor can measure it. */
  cpu_ms: z.number().min(0).nullable(),
  max_memory_mb: z.number().min(0).nullable(),
});
export type ExecUsage = z.infer<typeof ExecUsage>;
