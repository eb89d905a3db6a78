import type { ExecStatus, ExecUsage } from '../../models/execution.ts';
import type { JobInput, ResourceLimits } from '../../models/job.ts';

/** One attempt of one job on this machine. */
export interface ExecRequest {
  job_id: string;
  /** Docker image ID; the process executor runs the same runner from this checkout instead. */
  image: string;
  input: JobInput;
  limits: ResourceLimits;
  /** Aborting stops the attempt (cancel or preemption); the outcome is then `cancelled`. */
  signal?: AbortSignal;
}

export interface ExecOutcome {
  status: ExecStatus;
  /** Human-readable reason for anything but `ok` (e.g. "exceeded 64 MiB memory limit", "timed out after 5 s"). */
  reason: string | null;
  exit_code: number | null;
  /** The runner's output file (a JobOutput as JSON) when status is ok. */
  output: string | null;
  usage: ExecUsage;
  /** Last lines of the job's stdout/stderr, kept for the result. */
  stdout_tail: string;
  stderr_tail: string;
}

/** Runs jobs in isolation. Implementations: docker (dockerode, sandboxed containers) and process (child processes). */
export interface Executor {
  readonly kind: 'docker' | 'process';
  run(request: ExecRequest): Promise<ExecOutcome>;
  /** Image IDs available locally (advertised so the scheduler can prefer warm workers). */
  cachedImages(): Promise<string[]>;
  close(): Promise<void>;
}

/** Bytes of stdout/stderr kept per stream. */
export const TAIL_BYTES = 4096;

export function tail(text: string, bytes = TAIL_BYTES): string {
  return text.length <= bytes ? text : text.slice(text.length - bytes);
}
