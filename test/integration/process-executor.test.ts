import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../src/models/digest.ts';
import { JobOutput } from '../../src/models/job.ts';
import { createProcessExecutor } from '../../src/worker/executors/process.ts';
import {
  bigJob,
  expectedOutput,
  invalidJob,
  limits,
  processRequest,
  slowJob,
  smallJob,
} from '../fixtures/jobs.ts';

const executor = createProcessExecutor();
const request = processRequest;

describe('process executor', () => {
  it('runs the epoch runner and returns exactly the bytes runEpoch gives in-process', async () => {
    const r = await executor.run(request(smallJob));
    expect(r.status, r.stderr_tail).toBe('ok');
    expect(r.reason).toBeNull();
    expect(r.exit_code).toBe(0);
    expect(r.output).toBe(expectedOutput(smallJob));
    const output = JobOutput.parse(JSON.parse(r.output!));
    expect(output.results.map((x) => x.epoch_id)).toEqual(smallJob.epochs.map((e) => e.epoch_id));
    expect(r.stderr_tail).toContain('epoch 3/3');
    expect(r.usage.wall_ms).toBeGreaterThan(0);
    expect(r.usage.cpu_ms).toBeGreaterThan(0);
    expect(r.usage.max_memory_mb).toBeGreaterThan(10);
  });

  it('kills a job that runs past its wall-clock limit', async () => {
    const r = await executor.run(request(slowJob, { limits: limits({ timeout_s: 1 }) }));
    expect(r.status).toBe('timeout');
    expect(r.reason).toBe('timed out after 1 s');
    expect(r.output).toBeNull();
    expect(r.usage.wall_ms).toBeGreaterThanOrEqual(1000);
    expect(r.usage.wall_ms).toBeLessThan(5000);
  });

  it('reports a V8 heap out of memory as oom', async () => {
    const r = await executor.run(request(bigJob, { limits: limits({ memory_mb: 64 }) }));
    expect(r.status).toBe('oom');
    expect(r.reason).toMatch(/exceeded 64 MiB memory limit/);
    expect(r.output).toBeNull();
  });

  it('stops a runaway JS allocation as oom within the limit', async () => {
    // A runner stand-in that grows the JS heap as fast as it can: whichever of the heap limit and the RSS
    // watchdog fires first, the outcome is oom, and promptly.
    const dir = mkdtempSync(join(tmpdir(), 'plurigrid-alloc-'));
    const runnerPath = join(dir, 'alloc.mjs');
    writeFileSync(
      runnerPath,
      'const keep = [];\nfor (;;) keep.push({ n: keep.length, s: String(keep.length) });\n',
    );
    try {
      const r = await createProcessExecutor({ runnerPath }).run(
        request(smallJob, { limits: limits({ memory_mb: 64 }) }),
      );
      expect(r.status).toBe('oom');
      expect(r.reason).toMatch(/^exceeded 64 MiB memory limit/);
      expect(r.usage.wall_ms).toBeLessThan(2000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stops a job when its signal aborts', async () => {
    const abort = new AbortController();
    setTimeout(() => abort.abort('preempted by paid work'), 300);
    const r = await executor.run(request(slowJob, { signal: abort.signal }));
    expect(r.status).toBe('cancelled');
    expect(r.reason).toBe('cancelled: preempted by paid work');
    expect(r.usage.wall_ms).toBeLessThan(5000);
  });

  it('fails invalid input with the runner’s path-named message', async () => {
    const r = await executor.run(request(invalidJob));
    expect(r.status).toBe('failed');
    expect(r.exit_code).toBe(2);
    expect(r.stderr_tail).toContain('epochs[0].scenario.seed: expected number, got "abc"');
    expect(r.reason).toContain('exited with code 2');
  });

  it('runs as a container entrypoint: stdin /dev/null and no lifeline to watch', () => {
    const dir = mkdtempSync(join(tmpdir(), 'plurigrid-entry-'));
    const runner = fileURLToPath(new URL('../../src/worker/epoch-runner.ts', import.meta.url));
    const input = join(dir, 'job.json');
    const output = join(dir, 'results.json');
    writeFileSync(input, canonicalJson(smallJob));
    try {
      const r = spawnSync(process.execPath, [runner, '--input', input, '--output', output], {
        stdio: ['ignore', 'pipe', 'pipe'], // stdin is /dev/null, as in a container
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
        timeout: 30_000,
      });
      expect(r.status, r.stderr.toString()).toBe(0);
      // Its progress lines and nothing else: no lifeline watcher, which would fail on /dev/null with a warning.
      expect(r.stderr.toString().trim().split('\n')).toHaveLength(smallJob.epochs.length);
      expect(readFileSync(output, 'utf8')).toBe(expectedOutput(smallJob));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('advertises no images', async () => {
    expect(await executor.cachedImages()).toEqual([]);
  });
});
