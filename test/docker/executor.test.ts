// Real engine, real images, real containers. The images are built once (unchanged sources hit Docker's cache).
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResourceLimits } from '../../src/models/job.ts';
import {
  createDockerExecutor,
  demuxLogs,
  dockerAvailable,
  sandboxContainerOptions,
} from '../../src/worker/executors/docker.ts';
import type { Executor } from '../../src/worker/executors/types.ts';
import { type BuiltImages, buildImages } from '../../src/worker/images.ts';
import { bigJob, expectedOutput, invalidJob, limits, slowJob, smallJob } from '../fixtures/jobs.ts';

const docker = new Dockerode();
/** Job ids of this file's runs, so the clean-up check ignores other suites' containers. */
const PREFIX = `docker-test-${process.pid}-`;
const reachable = await dockerAvailable(docker);
const skip = !reachable && process.env.PLURIGRID_SKIP_DOCKER === '1';
if (skip) {
  console.warn('docker tests skipped: the Docker engine is unreachable and PLURIGRID_SKIP_DOCKER=1 is set');
}

/** Runs a probe command in a container from `image` with exactly the job sandbox; returns its stdout. */
async function probe(image: string, script: string, lim: ResourceLimits): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'plurigrid-probe-'));
  const dirs = { input: join(dir, 'input'), output: join(dir, 'output') };
  mkdirSync(dirs.input, { mode: 0o755 });
  mkdirSync(dirs.output);
  chmodSync(dirs.output, 0o777); // as the executor does: uid 1000 writes here
  const container = await docker.createContainer(
    sandboxContainerOptions(image, lim, dirs, { Entrypoint: ['node', '-e', script], Cmd: [] }),
  );
  try {
    await container.start();
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    const logs = demuxLogs((await container.logs({ stdout: true, stderr: true, follow: false })) as Buffer);
    if (StatusCode !== 0) throw new Error(`probe exited ${StatusCode}: ${logs.stderr}`);
    return logs.stdout;
  } finally {
    await container.remove({ force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

// Everything the sandbox should (not) allow, observed from inside as uid 1000.
const PROBE = `
const fs = require('node:fs');
const attempt = (f) => { try { f(); return 'ok'; } catch (e) { return e.code; } };
const status = fs.readFileSync('/proc/self/status', 'utf8');
const field = (name) => new RegExp(name + ':\\\\s*(\\\\S+)').exec(status)[1];
const cg = (p) => attempt(() => fs.readFileSync(p, 'utf8')) === 'ok' ? fs.readFileSync(p, 'utf8').trim() : null;
console.log(JSON.stringify({
  uid: process.getuid(),
  gid: process.getgid(),
  rootWrite: attempt(() => fs.writeFileSync('/probe', 'x')),
  appWrite: attempt(() => fs.writeFileSync('/app/probe', 'x')),
  inputWrite: attempt(() => fs.writeFileSync('/input/probe', 'x')),
  outputWrite: attempt(() => fs.writeFileSync('/output/probe', 'x')),
  tmpWrite: attempt(() => fs.writeFileSync('/tmp/probe', 'x')),
  interfaces: fs.readFileSync('/proc/net/dev', 'utf8').split('\\n').slice(2)
    .map((l) => l.split(':')[0].trim()).filter(Boolean),
  capEff: field('CapEff'),
  noNewPrivs: field('NoNewPrivs'),
  memoryLimit: cg('/sys/fs/cgroup/memory/memory.limit_in_bytes') ?? cg('/sys/fs/cgroup/memory.max'),
  pidsLimit: cg('/sys/fs/cgroup/pids/pids.max') ?? cg('/sys/fs/cgroup/pids.max'),
  // cgroup v1: quota and period files; v2: "quota period" in cpu.max.
  cpus: (() => {
    const v1 = cg('/sys/fs/cgroup/cpu/cpu.cfs_quota_us');
    const [q, p] = v1 ? [v1, cg('/sys/fs/cgroup/cpu/cpu.cfs_period_us')] : (cg('/sys/fs/cgroup/cpu.max') ?? '').split(' ');
    return Number(q) / Number(p);
  })(),
}));
`;

// No engine is a failure, counted as one, unless skipping was asked for: CI always has an engine.
if (!reachable && !skip) {
  describe('docker executor (real engine)', () => {
    it('needs a reachable Docker engine', () => {
      throw new Error(
        'the Docker engine is unreachable (socket /var/run/docker.sock or DOCKER_HOST). Start it as root with ' +
          '`dockerd --bridge=none --iptables=false --ip-masq=false` (npm test and npm run images do this when ' +
          'run as root), or set PLURIGRID_SKIP_DOCKER=1 to skip these tests.',
      );
    });
  });
}

(reachable ? describe : describe.skip)('docker executor (real engine)', () => {
  let images: BuiltImages;
  let executor: Executor;

  beforeAll(async () => {
    images = await buildImages();
    executor = createDockerExecutor({ docker });
  }, 300_000);

  afterAll(async () => {
    await executor?.close();
  });

  const run = (input: typeof smallJob, lim: Partial<ResourceLimits> = {}, signal?: AbortSignal) =>
    executor.run({
      job_id: `${PREFIX}${input.job_id}`,
      image: images.gridEpoch,
      input,
      limits: limits(lim),
      signal,
    });

  it('builds both images and pins them by ID', async () => {
    expect(images.gridEpoch).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(images.worker).toMatch(/^sha256:[0-9a-f]{64}$/);
    const cached = await executor.cachedImages();
    expect(cached).toContain(images.gridEpoch);
    expect(cached).toContain(images.worker);
  });

  it('produces exactly the bytes runEpoch gives in-process', async () => {
    const r = await run(smallJob);
    expect(r.status, `${r.reason}\n${r.stderr_tail}`).toBe('ok');
    expect(r.exit_code).toBe(0);
    expect(r.output).toBe(expectedOutput(smallJob));
    expect(r.stderr_tail).toContain('epoch 3/3');
    expect(r.usage.wall_ms).toBeGreaterThan(0);
  });

  it('sandboxes the job: uid 1000, read-only root, no network or capabilities, writable /tmp and /output, cgroup limits', async () => {
    const lim = limits({ memory_mb: 256, pids: 32, cpus: 0.5 });
    const seen = JSON.parse(await probe(images.gridEpoch, PROBE, lim));
    expect(seen).toMatchObject({
      uid: 1000,
      gid: 1000,
      rootWrite: 'EROFS',
      appWrite: 'EROFS',
      inputWrite: 'EROFS',
      outputWrite: 'ok',
      tmpWrite: 'ok',
      interfaces: ['lo'],
      capEff: '0000000000000000',
      noNewPrivs: '1',
    });
    expect(Number(seen.memoryLimit)).toBe(256 * 1024 * 1024);
    expect(seen.pidsLimit).toBe('32');
    expect(seen.cpus).toBe(0.5);
  });

  it('reports a job over its memory limit as oom', async () => {
    const r = await run(bigJob, { memory_mb: 32 });
    expect(r.status, `${r.reason}\n${r.stderr_tail}`).toBe('oom');
    expect(r.reason).toBe('exceeded 32 MiB memory limit');
    expect(r.output).toBeNull();
  });

  it('kills a job that runs past its wall-clock limit', async () => {
    const r = await run(slowJob, { timeout_s: 1 });
    expect(r.status).toBe('timeout');
    expect(r.reason).toBe('timed out after 1 s');
    expect(r.usage.wall_ms).toBeGreaterThanOrEqual(1000);
    expect(r.usage.wall_ms).toBeLessThan(10_000);
  });

  it('stops a job when its signal aborts', async () => {
    const abort = new AbortController();
    setTimeout(() => abort.abort('preempted by paid work'), 1000);
    const r = await run(slowJob, {}, abort.signal);
    expect(r.status).toBe('cancelled');
    expect(r.reason).toBe('cancelled: preempted by paid work');
    expect(r.usage.wall_ms).toBeLessThan(10_000);
  });

  it('fails invalid input with the runner’s path-named message', async () => {
    const r = await run(invalidJob);
    expect(r.status).toBe('failed');
    expect(r.exit_code).toBe(2);
    expect(r.stderr_tail).toContain('epochs[0].scenario.seed: expected number, got "abc"');
    expect(r.reason).toContain('exited with code 2');
  });

  it('leaves no job containers behind', async () => {
    const jobs = await docker.listContainers({ all: true, filters: { label: ['org.plurigrid.job'] } });
    expect(jobs.filter((c) => c.Labels['org.plurigrid.job']?.startsWith(PREFIX))).toEqual([]);
  });

  it('says so when the image is missing', async () => {
    const r = await executor.run({
      job_id: `${PREFIX}missing`,
      image: 'sha256:0000000000000000000000000000000000000000000000000000000000000000',
      input: smallJob,
      limits: limits(),
    });
    expect(r.status).toBe('failed');
    expect(r.reason).toMatch(/not present locally/);
  });
});
