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
