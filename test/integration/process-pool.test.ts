import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createWarmProcessExecutor } from '../../src/worker/executors/process-pool.ts';
import {
  bigJob,
  expectedOutput,
  invalidJob,
  limits,
  processRequest,
  slowJob,
  smallJob,
} from '../fixtures/jobs.ts';

const executor = createWarmProcessExecutor({ prewarm: 1, maxRunners: 2 });
afterAll(() => executor.close());
const request = processRequest;

describe('warm process executor', () => {
  it('returns exactly the bytes runEpoch gives in-process, and a warm runner answers the next job fast', async () => {
    const first = await executor.run(request(smallJob));
    expect(first.status, first.stderr_tail).toBe('ok');
    expect(first.output).toBe(expectedOutput(smallJob));
    expect(first.usage.cpu_ms).toBeGreaterThan(0);
    const again = await executor.run(request(smallJob));
    expect(again.output).toBe(first.output);
    // No Node start-up (~100 ms and more) on the second run.
    expect(again.usage.wall_ms).toBeLessThan(first.usage.wall_ms + 50);
  });

  it('kills a job past its wall-clock limit, and the next job gets a fresh runner', async () => {
    const r = await executor.run(request(slowJob, { limits: limits({ timeout_s: 1 }) }));
    expect(r.status).toBe('timeout');
    expect(r.reason).toBe('timed out after 1 s');
    expect(r.usage.wall_ms).toBeLessThan(5000);
    const next = await executor.run(request(smallJob));
    expect(next.output).toBe(expectedOutput(smallJob));
  });

  it('reports a job over its memory limit as oom', async () => {
    const r = await executor.run(request(bigJob, { limits: limits({ memory_mb: 64 }) }));
    expect(r.status).toBe('oom');
    expect(r.reason).toMatch(/exceeded 64 MiB memory limit/);
  });

  it('stops a job when its signal aborts', async () => {
    const abort = new AbortController();
    setTimeout(() => abort.abort('preempted by paid work'), 300);
    const r = await executor.run(request(slowJob, { signal: abort.signal }));
    expect(r.status).toBe('cancelled');
    expect(r.reason).toBe('cancelled: preempted by paid work');
  });

  it('fails invalid input with the path-named message and keeps the runner', async () => {
    const r = await executor.run(request(invalidJob));
    expect(r.status).toBe('failed');
    expect(r.exit_code).toBe(2);
    expect(r.reason).toContain('epochs[0].scenario.seed: expected number, got "abc"');
    expect((await executor.run(request(smallJob))).status).toBe('ok');
  });

  it('queues jobs beyond maxRunners and runs them all', async () => {
    const started = performance.now();
    const runs = await Promise.all([1, 2, 3].map(() => executor.run(request(smallJob))));
    expect(runs.every((r) => r.status === 'ok')).toBe(true);
    expect(performance.now() - started).toBeLessThan(10_000);
  });
});

/** Process stat fields after the command name: [0] state, [1] ppid, [11] utime, [12] stime (clock ticks). */
function stat(pid: number): string[] | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** Children of `pid`, from /proc (this kernel has no /proc/<pid>/task/<tid>/children). */
function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((p) => stat(p)?.[1] === String(pid));
}

/** Running, not a zombie waiting to be reaped. */
function alive(pid: number): boolean {
  const s = stat(pid);
  return s !== null && s[0] !== 'Z';
}

const cpuMs = (pid: number) => {
  const s = stat(pid);
  return s ? (Number(s[11]) + Number(s[12])) * 10 : 0;
};

async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('runners and their worker', () => {
  it('every runner, warm or one-shot, dies within seconds of its worker being SIGKILLed mid-job', async () => {
    // A worker in miniature: a separate process with both process executors, each running the slow job.
    const dir = mkdtempSync(join(tmpdir(), 'plurigrid-lifeline-'));
    const src = (path: string) => JSON.stringify(fileURLToPath(new URL(path, import.meta.url)));
    const script = join(dir, 'worker.mjs');
    writeFileSync(
      script,
      `import { createWarmProcessExecutor } from ${src('../../src/worker/executors/process-pool.ts')};
import { createProcessExecutor } from ${src('../../src/worker/executors/process.ts')};
import { processRequest, slowJob } from ${src('../fixtures/jobs.ts')};
const warm = createWarmProcessExecutor();
const once = createProcessExecutor();
for (const executor of [warm, once]) void executor.run(processRequest(slowJob));
setInterval(() => {}, 1000);
`,
    );
    let worker: ChildProcess | undefined;
    let runners: number[] = [];
    try {
      worker = spawn(process.execPath, [script], { stdio: 'ignore' });
      const pid = worker.pid!;
      // Both runners busy in the job itself (past Node's start-up): the case where a runner cannot react to
      // anything on its own event loop.
      await until(
        () => {
          runners = childrenOf(pid);
          return runners.length === 2 && runners.every((r) => cpuMs(r) >= 600);
        },
        30_000,
        'two busy runners',
      );
      const exited = new Promise((r) => worker!.once('exit', r));
      worker.kill('SIGKILL');
      await exited;
      const killedAt = Date.now();
      await until(() => !runners.some(alive), 5_000, 'the runners to exit').catch(() => {});
      expect(runners.filter(alive), 'runners alive 5 s after their worker was killed').toEqual([]);
      // Within moments (they outlived it by up to 17 s before); the margin is for a loaded machine.
      expect(Date.now() - killedAt).toBeLessThan(4_000);
    } finally {
      worker?.kill('SIGKILL');
      for (const r of runners) if (alive(r)) process.kill(r, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
