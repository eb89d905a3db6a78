// Runs the epoch runner as a plain child process: no sandbox, for development, tests and machines without Docker.
// The memory limit is enforced twice: on the V8 heap (--max-old-space-size) and, because the engine keeps its bulk
// data in typed arrays outside that heap, on the child's resident set, sampled from /proc while it runs.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { canonicalJson } from '../../models/digest.ts';
import type { ExecStatus } from '../../models/execution.ts';
import type { ResourceLimits } from '../../models/job.ts';
import { LIFELINE_ENV } from '../epoch-runner.ts';
import { type ExecOutcome, type ExecRequest, type Executor, TAIL_BYTES, tail } from './types.ts';

export interface ProcessExecutorOptions {
  /** Node binary; default the one running now (the project's pinned Node 24). */
  nodePath?: string;
  /** Runner program; default src/worker/epoch-runner.ts from this checkout (run by Node's type stripping). */
  runnerPath?: string;
  /** Parent of the per-job temp dirs; default the OS temp dir. */
  tmpDir?: string;
}

/** Memory a bare Node process holds outside the JS heap (code, ICU data, libuv), measured at ~40 MiB RSS. */
const NODE_BASELINE_MB = 32;

/**
 * Old-generation heap for a job's memory limit: the limit minus Node's own baseline, so a job that fits under
 * Docker's whole-container limit roughly fits here too. Never below 8 MiB, V8's practical minimum.
 */
export function heapLimitMb(limits: Pick<ResourceLimits, 'memory_mb'>): number {
  return Math.max(8, limits.memory_mb - NODE_BASELINE_MB);
}

/** What V8 prints when a heap limit is hit (then it aborts); Docker jobs can end this way too. */
export function isHeapOutOfMemory(stderr: string): boolean {
  return /JavaScript heap out of memory|Fatal process out of memory/.test(stderr);
}

/** Keeps the end of a stream without holding all of it (a job may print without bound). */
export class TailBuffer {
  private text = '';
  private readonly keep: number;
  constructor(keep = 16 * TAIL_BYTES) {
    this.keep = keep;
  }
  push(chunk: Buffer | string): void {
    this.text += chunk.toString();
    if (this.text.length > 2 * this.keep) this.text = this.text.slice(this.text.length - this.keep);
  }
  toString(): string {
    return this.text;
  }
}

/** Last non-empty line, for a one-line reason. */
export function lastLine(text: string): string {
  const lines = text.trimEnd().split('\n');
  return (lines.at(-1) ?? '').trim();
}

/** How often the child's resident set is sampled against the memory limit. */
const RSS_SAMPLE_MS = 50;

/** Resident set of a live process in MiB from /proc (Linux); null where there is no /proc or it has exited. */
export async function residentMb(pid: number): Promise<number | null> {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

const DEFAULT_RUNNER = fileURLToPath(new URL('../epoch-runner.ts', import.meta.url));

// Loaded into the child with --import: records the child's own CPU time and peak RSS as it exits normally. The
// parent cannot read a child's rusage from Node, and /proc/<pid> is gone by the time 'exit' fires.
const usageProbe = (file: string) =>
  `import { writeFileSync } from 'node:fs';\nprocess.on('exit', () => {\n  try { writeFileSync(${JSON.stringify(file)}, JSON.stringify(process.resourceUsage())); } catch {}\n});\n`;

async function readUsage(file: string): Promise<{ cpu_ms: number; max_memory_mb: number } | null> {
  try {
    const u = JSON.parse(await readFile(file, 'utf8')) as NodeJS.ResourceUsage;
    return {
      cpu_ms: Math.round((u.userCPUTime + u.systemCPUTime) / 1000),
      max_memory_mb: Math.round((u.maxRSS / 1024) * 10) / 10,
    };
  } catch {
    return null;
  }
}

export function createProcessExecutor(options: ProcessExecutorOptions = {}): Executor {
  const nodePath = options.nodePath ?? process.execPath;
  const runnerPath = options.runnerPath ?? DEFAULT_RUNNER;
  const active = new Set<AbortController>();

  async function run(request: ExecRequest): Promise<ExecOutcome> {
    const { limits } = request;
    const own = new AbortController();
    const signal = request.signal ? AbortSignal.any([request.signal, own.signal]) : own.signal;
    if (signal.aborted) return cancelledBeforeStart(signal);
    const dir = await mkdtemp(join(options.tmpDir ?? tmpdir(), 'plurigrid-job-'));
    active.add(own);
    try {
      const input = join(dir, 'job.json');
      const output = join(dir, 'results.json');
      const usageFile = join(dir, 'usage.json');
      const probe = join(dir, 'usage-probe.mjs');
      await writeFile(input, canonicalJson(request.input));
      await writeFile(probe, usageProbe(usageFile));

      const started = performance.now();
      const child = spawn(
        nodePath,
        [
          `--max-old-space-size=${heapLimitMb(limits)}`,
          `--import=${pathToFileURL(probe).href}`,
          runnerPath,
          '--input',
          input,
          '--output',
          output,
        ],
        {
          cwd: dir,
          // A clean environment: nothing from ours (NODE_OPTIONS, test loaders, secrets) leaks into the job.
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TZ: 'UTC', [LIFELINE_ENV]: 'stdin' },
          // stdin is the runner's lifeline: never written, it ends only when this process dies (even by SIGKILL),
          // and then the runner kills itself rather than run on outside our time and memory limits.
          stdio: ['pipe', 'pipe', 'pipe'],
        },
      );
      const stdout = new TailBuffer();
      const stderr = new TailBuffer();
      child.stdout.on('data', (c: Buffer) => stdout.push(c));
      child.stderr.on('data', (c: Buffer) => stderr.push(c));

      let stoppedFor: 'timeout' | 'cancelled' | 'oom' | null = null;
      let peakRssMb = 0;
      const stop = (why: 'timeout' | 'cancelled' | 'oom') => {
        if (stoppedFor || child.exitCode !== null) return;
        stoppedFor = why;
        child.kill('SIGKILL');
      };
      const timer = setTimeout(() => stop('timeout'), limits.timeout_s * 1000);
      const sampler = setInterval(async () => {
        const rss = child.pid === undefined ? null : await residentMb(child.pid);
        if (rss === null) return;
        peakRssMb = Math.max(peakRssMb, rss);
        if (rss > limits.memory_mb) stop('oom');
      }, RSS_SAMPLE_MS);
      const onAbort = () => stop('cancelled');
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort(); // aborted while the input was being written

      const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>(
        (resolve) => {
          child.once('error', (error) => resolve({ code: null, signal: null, error }));
          child.once('close', (code, sig) => resolve({ code, signal: sig }));
        },
      );
      clearTimeout(timer);
      clearInterval(sampler);
      signal.removeEventListener('abort', onAbort);
      const wall_ms = Math.round(performance.now() - started);
      const usage = await readUsage(usageFile);
      const err = stderr.toString();
      const base = {
        exit_code: exit.code,
        usage: { wall_ms, cpu_ms: usage?.cpu_ms ?? null, max_memory_mb: usage?.max_memory_mb ?? null },
        stdout_tail: tail(stdout.toString()),
        stderr_tail: tail(err),
      };
      const end = (status: ExecStatus, reason: string | null, out: string | null = null): ExecOutcome => ({
        status,
        reason,
        output: out,
        ...base,
      });

      if (exit.error) return end('failed', `cannot start ${nodePath}: ${exit.error.message}`);
      if (stoppedFor === 'timeout') return end('timeout', `timed out after ${limits.timeout_s} s`);
      if (stoppedFor === 'cancelled') return end('cancelled', abortReason(signal));
      if (stoppedFor === 'oom') {
        return end(
          'oom',
          `exceeded ${limits.memory_mb} MiB memory limit (resident ${Math.round(peakRssMb)} MiB)`,
        );
      }
      if (isHeapOutOfMemory(err)) {
        return end(
          'oom',
          `exceeded ${limits.memory_mb} MiB memory limit (JS heap ${heapLimitMb(limits)} MiB)`,
        );
      }
      if (exit.code === 0) {
        try {
          return end('ok', null, await readFile(output, 'utf8'));
        } catch {
          return end('failed', 'runner exited 0 but wrote no results file');
        }
      }
      const how = exit.code === null ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
      const detail = lastLine(err);
      return end('failed', `runner ${how}${detail ? `: ${detail}` : ''}`);
    } finally {
      active.delete(own);
      await rm(dir, { recursive: true, force: true });
    }
  }

  return {
    kind: 'process',
    run,
    cachedImages: async () => [],
    close: async () => {
      for (const c of active) c.abort(new Error('executor closed'));
    },
  };
}

function cancelledBeforeStart(signal: AbortSignal): ExecOutcome {
  return {
    status: 'cancelled',
    reason: abortReason(signal),
    exit_code: null,
    output: null,
    usage: { wall_ms: 0, cpu_ms: null, max_memory_mb: null },
    stdout_tail: '',
    stderr_tail: '',
  };
}

/** "cancelled: preempted by paid work" when the aborter gave a reason, else "cancelled". */
export function abortReason(signal: AbortSignal): string {
  const r: unknown = signal.reason;
  const text = r instanceof Error ? r.message : typeof r === 'string' ? r : '';
  // AbortController.abort() without a reason gives a DOMException "This operation was aborted".
  return text && !(r instanceof DOMException && r.name === 'AbortError') ? `cancelled: ${text}` : 'cancelled';
}
