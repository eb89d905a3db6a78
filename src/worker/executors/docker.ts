// Runs each job in a sandboxed container of its pinned image: no network, read-only root, no capabilities, non-root
// user, hard memory/CPU/pids limits and a wall-clock timeout. The image's ENTRYPOINT is the epoch runner; it reads
// /input/job.json (mounted read-only) and writes /output/results.json (a host temp dir).
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { canonicalJson } from '../../models/digest.ts';
import type { ExecStatus } from '../../models/execution.ts';
import type { ResourceLimits } from '../../models/job.ts';
import { abortReason, isHeapOutOfMemory, lastLine } from './process.ts';
import { type ExecOutcome, type ExecRequest, type Executor, tail } from './types.ts';

/** The unprivileged user every job runs as (the `node` user of the base images). */
export const SANDBOX_USER = '1000:1000';
const MiB = 1024 * 1024;
/** Log lines fetched after exit; the tails keep TAIL_BYTES of them. */
const LOG_LINES = 200;

export interface SandboxDirs {
  /** Host dir holding job.json, mounted read-only at /input. */
  input: string;
  /** Host dir the runner writes results.json to, mounted at /output. */
  output: string;
}

/** The HostConfig of every job container. Pure, so tests probe exactly what jobs get. */
export function sandboxHostConfig(limits: ResourceLimits, dirs: SandboxDirs): Dockerode.HostConfig {
  const memory = limits.memory_mb * MiB;
  return {
    NetworkMode: 'none',
    ReadonlyRootfs: true,
    Tmpfs: { '/tmp': 'rw,noexec,nosuid,size=64m' },
    CapDrop: ['ALL'],
    SecurityOpt: ['no-new-privileges'],
    // MemorySwap equal to Memory: no swap, so exceeding the limit is an OOM kill rather than a slow crawl.
    Memory: memory,
    MemorySwap: memory,
    NanoCpus: Math.round(limits.cpus * 1e9),
    PidsLimit: limits.pids,
    Binds: [`${dirs.input}:/input:ro`, `${dirs.output}:/output:rw`],
    // A job that prints without bound must not fill the host's disk.
    LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '1' } },
    // No AutoRemove: it races with the inspect that reads OOMKilled; run() removes the container itself.
    AutoRemove: false,
  };
}

/** Create options of a job container; `overrides` lets tests swap the command while keeping the sandbox. */
export function sandboxContainerOptions(
  image: string,
  limits: ResourceLimits,
  dirs: SandboxDirs,
  overrides: Partial<Dockerode.ContainerCreateOptions> = {},
): Dockerode.ContainerCreateOptions {
  return {
    Image: image,
    User: SANDBOX_USER,
    NetworkDisabled: true,
    Tty: false,
    AttachStdin: false,
    OpenStdin: false,
    Labels: { 'org.plurigrid.role': 'job' },
    HostConfig: sandboxHostConfig(limits, dirs),
    ...overrides,
  };
}

/** Splits Docker's multiplexed log stream (8-byte frame headers: stream type, size) into stdout and stderr. */
export function demuxLogs(buf: Buffer): { stdout: string; stderr: string } {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let i = 0;
  while (i + 8 <= buf.length) {
    const size = buf.readUInt32BE(i + 4);
    const chunk = buf.subarray(i + 8, i + 8 + size);
    (buf[i] === 2 ? err : out).push(chunk);
    i += 8 + size;
  }
  return { stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
}

/** True when the Docker engine answers within `timeoutMs`. */
export async function dockerAvailable(docker = new Dockerode(), timeoutMs = 2000): Promise<boolean> {
  // dockerode 5 takes an abortSignal here; @types/dockerode 4 does not declare it yet.
  const ping = docker.ping.bind(docker) as unknown as (opts: {
    abortSignal: AbortSignal;
  }) => Promise<unknown>;
  try {
    await ping({ abortSignal: AbortSignal.timeout(timeoutMs) });
    return true;
  } catch {
    return false;
  }
}

export interface DockerExecutorOptions {
  docker?: Dockerode;
  /** Parent of the per-job temp dirs (must be visible to the engine, i.e. on this host); default the OS temp dir. */
  tmpDir?: string;
}

export function createDockerExecutor(options: DockerExecutorOptions = {}): Executor {
  const docker = options.docker ?? new Dockerode();
  const active = new Set<AbortController>();

  async function run(request: ExecRequest): Promise<ExecOutcome> {
    const { limits } = request;
    const own = new AbortController();
    const signal = request.signal ? AbortSignal.any([request.signal, own.signal]) : own.signal;
    if (signal.aborted) return outcome('cancelled', abortReason(signal));
    const dir = await mkdtemp(join(options.tmpDir ?? tmpdir(), 'plurigrid-job-'));
    active.add(own);
    let container: Dockerode.Container | undefined;
    try {
      const dirs = { input: join(dir, 'input'), output: join(dir, 'output') };
      await mkdir(dirs.input);
      await mkdir(dirs.output);
      await writeFile(join(dirs.input, 'job.json'), canonicalJson(request.input));
      // The job runs as uid 1000, whoever we are: it must read the input and write the output. The parent temp
      // dir stays 0700, so no other host user can reach these.
      await chmod(join(dirs.input, 'job.json'), 0o644);
      await chmod(dirs.input, 0o755);
      await chmod(dirs.output, 0o777);

      container = await docker.createContainer({
        ...sandboxContainerOptions(request.image, limits, dirs),
        Labels: { 'org.plurigrid.role': 'job', 'org.plurigrid.job': request.job_id },
      });
      if (signal.aborted) return outcome('cancelled', abortReason(signal));

      // Timeout and cancel kill the container; wait() then returns and the cause decides the status.
      let stoppedFor: 'timeout' | 'cancelled' | null = null;
      const stop = (why: 'timeout' | 'cancelled') => {
        if (stoppedFor) return;
        stoppedFor = why;
        container?.kill({ signal: 'SIGKILL' }).catch(() => {
          // Already exited: nothing to stop.
        });
      };
      const started = performance.now();
      await container.start();
      const timer = setTimeout(() => stop('timeout'), limits.timeout_s * 1000);
      const onAbort = () => stop('cancelled');
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort(); // aborted while the container was starting
      let wall_ms: number;
      try {
        await container.wait();
        wall_ms = Math.round(performance.now() - started);
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
      }

      const state = (await container.inspect()).State;
      const logs = demuxLogs(
        (await container.logs({ stdout: true, stderr: true, follow: false, tail: LOG_LINES })) as Buffer,
      );
      const exit_code = state.ExitCode;
      const end = (status: ExecStatus, reason: string | null, output: string | null = null) =>
        outcome(status, reason, { exit_code, output, wall_ms, ...logs });

      // 137 = killed by SIGKILL; any other code means the job finished on its own before our kill landed.
      const killedByUs = stoppedFor !== null && exit_code === 137;
      if (killedByUs && stoppedFor === 'timeout')
        return end('timeout', `timed out after ${limits.timeout_s} s`);
      if (killedByUs && stoppedFor === 'cancelled') return end('cancelled', abortReason(signal));
      if (state.OOMKilled || isHeapOutOfMemory(logs.stderr)) {
        return end('oom', `exceeded ${limits.memory_mb} MiB memory limit`);
      }
      if (exit_code === 0) {
        try {
          return end('ok', null, await readFile(join(dirs.output, 'results.json'), 'utf8'));
        } catch {
          return end('failed', 'runner exited 0 but wrote no /output/results.json');
        }
      }
      const detail = lastLine(logs.stderr);
      // Above 128 the runner died of a signal (e.g. 139: SIGSEGV, 134: SIGABRT), which says more than the number.
      const killer = exit_code > 128 ? signalName(exit_code - 128) : undefined;
      const how = killer ? `was killed by ${killer} (exit ${exit_code})` : `exited with code ${exit_code}`;
      return end('failed', `runner ${how}${detail ? `: ${detail}` : ''}`);
    } catch (e) {
      return outcome('failed', `docker: ${describeDockerError(e, request.image)}`);
    } finally {
      active.delete(own);
      await container?.remove({ force: true, v: true }).catch(() => {
        // Already gone (e.g. the engine restarted); nothing left to clean.
      });
      await rm(dir, { recursive: true, force: true });
    }
  }

  return {
    kind: 'docker',
    run,
    cachedImages: async () => (await docker.listImages()).map((image) => image.Id),
    close: async () => {
      for (const c of active) c.abort(new Error('executor closed'));
    },
  };
}

function outcome(
  status: ExecStatus,
  reason: string | null,
  r: {
    exit_code?: number | null;
    output?: string | null;
    wall_ms?: number;
    stdout?: string;
    stderr?: string;
  } = {},
): ExecOutcome {
  return {
    status,
    reason,
    exit_code: r.exit_code ?? null,
    output: r.output ?? null,
    // CPU and peak memory would need the container's cgroup, which is gone once it exits; a stats sample taken
    // before exit would undercount, so they are reported as unknown rather than guessed.
    usage: { wall_ms: r.wall_ms ?? 0, cpu_ms: null, max_memory_mb: null },
    stdout_tail: tail(r.stdout ?? ''),
    stderr_tail: tail(r.stderr ?? ''),
  };
}

function signalName(n: number): string | undefined {
  return Object.entries(constants.signals).find(([, v]) => v === n)?.[0];
}

/** Engine errors in terms a provider can act on (the common ones: no image, no engine). */
function describeDockerError(e: unknown, image: string): string {
  const err = e as { statusCode?: number; code?: string; message?: string; json?: { message?: string } };
  if (err.statusCode === 404) return `image ${image} is not present locally (run "npm run images")`;
  if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'EACCES') {
    return `cannot reach the Docker engine (${err.code}); is dockerd running and the socket readable?`;
  }
  return err.json?.message ?? err.message ?? String(e);
}
