import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_USAGE } from '../../src/cli/errors.ts';
import { follow } from '../../src/cli/submit.ts';
import { ApiClient } from '../../src/coordinator/client.ts';
import type { StudyStatus } from '../../src/models/api.ts';
import { EpochResult } from '../../src/models/result.ts';
import { MECHANISMS } from '../../src/models/scenario.ts';
import { cliPath as cli, root, runCli } from '../fixtures/cli.ts';

/** Async, so a test can keep a cluster's event loop running while the CLI talks to it. */
function plurigridAsync(...args: string[]) {
  return plurigridEnv({}, ...args);
}

/** {@link plurigridAsync} with extra environment variables. */
function plurigridEnv(env: Record<string, string>, ...args: string[]) {
  return runCli(args, env);
}

function plurigrid(...args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const tmp = () => mkdtempSync(join(tmpdir(), 'plurigrid-cli-'));

function smallStudy(dir: string, sweep: unknown[]): string {
  const path = join(dir, 'study.json');
  writeFileSync(
    path,
    JSON.stringify({
      name: 'small',
      scenario: join(root, 'examples', 'suburb-summer.json'),
      runs: 2,
      seed: 3,
      sweep,
    }),
  );
  return path;
}

describe('plurigrid sim run', () => {
  it('prints a result with its digest, identical on a second run', () => {
    const a = plurigrid('sim', 'run', 'examples/suburb-summer.json', '--json');
    const b = plurigrid('sim', 'run', 'examples/suburb-summer.json', '--json');
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
    const result = EpochResult.parse(JSON.parse(a.stdout));
    expect(result.digest).toMatch(/^[0-9a-f]{64}$/);
    expect(result.agents).toHaveLength(100);
    const other = plurigrid('sim', 'run', 'examples/suburb-summer.json', '--json', '--seed', '43');
    expect(JSON.parse(other.stdout).digest).not.toBe(result.digest);
  });

  it('prints a metrics table by default', () => {
    const r = plurigrid('sim', 'run', 'examples/village-winter-tou.json', '--mechanism', 'mid-market-rate');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/village-winter-tou · mid-market-rate · seed 7/);
    expect(r.stdout).toMatch(/self_sufficiency/);
  });

  it('exits 2 naming every bad path of a broken scenario, without a stack trace', () => {
    const r = plurigrid('sim', 'run', 'test/fixtures/broken-scenario.json');
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('community.archetypes[1].pv_kwp: expected a number ≥ 0, got -3');
    expect(r.stderr).toContain('market.mechanism: expected one of');
    expect(r.stderr).toContain('colour: unknown key');
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });

  it('exits 2 for a missing file, bad JSON, a bad flag and an unknown command', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'bad.json'), '{"seed": 1,');
    expect(plurigrid('sim', 'run', join(dir, 'missing.json')).stderr).toMatch(/no such file/);
    const badJson = plurigrid('sim', 'run', join(dir, 'bad.json'));
    expect(badJson.code).toBe(2);
    expect(badJson.stderr).toMatch(/not valid JSON/);
    expect(plurigrid('sim', 'run', 'examples/suburb-summer.json', '--seed', 'x').code).toBe(2);
    expect(plurigrid('sim', 'frobnicate').code).toBe(2);
  });
});

describe('plurigrid sim study', () => {
  it('writes the long table, aggregates and report', () => {
    const dir = tmp();
    const study = smallStudy(dir, [{ name: 'market.mechanism', values: ['none', 'sdr', 'uniform-price'] }]);
    const out = join(dir, 'out');
    const r = plurigrid('sim', 'study', study, '--out', out, '--threads', '2');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/small: 6 epochs/);
    expect(readdirSync(out).sort()).toEqual([
      'aggregates.csv',
      'aggregates.json',
      'report.html',
      'results.csv',
      'results.jsonl',
    ]);
    const csv = readFileSync(join(out, 'results.csv'), 'utf8').trimEnd().split('\n');
    expect(csv[0]).toMatch(/^simulation,subset,run,timestep,epoch_id,market\.mechanism,agents,/);
    expect(csv).toHaveLength(7);
    expect(readFileSync(join(out, 'report.html'), 'utf8')).toContain('<svg');
  });

  it('rejects a bad sweep with exit 2 and leaves the output directory untouched', () => {
    const dir = tmp();
    const study = smallStudy(dir, [{ name: 'community.archetypes[1].pv_kwp', values: [2, -1] }]);
    const out = join(dir, 'out');
    const r = plurigrid('sim', 'study', study, '--out', out);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/scenario\.community\.archetypes\[1\]\.pv_kwp: expected a number ≥ 0, got -1/);
    expect(existsSync(out)).toBe(false);
  });

  it('names the path of a bad study field', () => {
    const dir = tmp();
    const path = join(dir, 'study.json');
    writeFileSync(
      path,
      JSON.stringify({ name: 'x', scenario: 'a.json', runs: 0, sweep: [{ name: 'a', values: [] }] }),
    );
    const r = plurigrid('sim', 'study', path, '--out', join(dir, 'out'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('runs: expected a number ≥ 1, got 0');
    expect(r.stderr).toContain('sweep[0].values: expected at least 1 entry');
  });
});

describe('plurigrid demo', () => {
  it('runs the mechanism comparison through coordinator and workers and prints every mechanism', () => {
    const out = join(tmp(), 'demo');
    const r = plurigrid('demo', '--out', out);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/starting 2 (docker|process) workers/);
    expect(r.stdout).toMatch(/mechanism-comparison: done · epochs 180\/180 done/);
    for (const m of MECHANISMS) expect(r.stdout).toContain(m);
    expect(existsSync(join(out, 'report.html'))).toBe(true);
  });
});

describe('plurigrid submit, status, workers, results against a running coordinator', () => {
  it('follows a study to the comparison and writes the same outputs as sim study', async () => {
    const { Cluster } = await import('./cluster.ts');
    const cluster = await new Cluster().start();
    try {
      await cluster.startCoordinator();
      await cluster.startWorker('a');
      await cluster.startWorker('b');
      await cluster.waitForWorkers(2);
      const dir = tmp();
      const study = smallStudy(dir, [{ name: 'market.mechanism', values: ['none', 'sdr'] }]);
      const nats = ['--nats', cluster.nats.url, '--creds', await cluster.credsFile('client')];
      const sub = await plurigridAsync('submit', study, '--follow', '--out', join(dir, 'out'), ...nats);
      expect(sub.code, sub.stderr).toBe(0);
      const id = /submitted (\S+) \(small\): 4 epochs/.exec(sub.stdout)![1]!;
      expect(sub.stdout).toMatch(/done · epochs 4\/4 done/);
      expect(readdirSync(join(dir, 'out')).sort()).toEqual([
        'aggregates.csv',
        'aggregates.json',
        'report.html',
        'results.csv',
        'results.jsonl',
      ]);
      const status = await plurigridAsync('status', ...nats);
      expect(status.stdout).toContain(id);
      const workers = await plurigridAsync('workers', ...nats);
      expect(workers.stdout).toMatch(/a .*process .*\n.*b .*process|b .*process .*\n.*a .*process/s);
      const again = await plurigridAsync('results', id, '--out', join(dir, 'again'), ...nats);
      expect(again.code).toBe(0);
      const strip = (s: string) => s.split('\n').map((l) => l.split(',').slice(0, -1).join(','));
      expect(strip(readFileSync(join(dir, 'again', 'results.csv'), 'utf8'))).toEqual(
        strip(readFileSync(join(dir, 'out', 'results.csv'), 'utf8')),
      );
      const missing = await plurigridAsync('status', 'nope', ...nats);
      expect(missing.code).toBe(EXIT_NOT_FOUND);
      expect(missing.stderr).toMatch(/no study nope/);
      const broken = await plurigridAsync('submit', 'test/fixtures/broken-scenario.json', ...nats);
      expect(broken.code).toBe(2);
      expect(broken.stderr).toContain('community.archetypes[1].pv_kwp');
    } finally {
      await cluster.stop();
    }
  }, 90_000);

  it('follows a study on its events, without polling its status every 250 ms', async () => {
    const { Cluster, heavyScenario } = await import('./cluster.ts');
    const cluster = await Cluster.up({ a: [] });
    const status = vi.spyOn(ApiClient.prototype, 'status');
    try {
      // Seconds of work in one job: few transitions over a long time.
      const reply = await cluster.submit({
        study: {
          name: 'slow',
          scenario: heavyScenario(3000, 14),
          runs: 4,
          seed: 1,
          sweep: [{ name: 'market.mechanism', values: ['none'] }],
        },
        target_job_seconds: 3600,
      });
      const seen: StudyStatus[] = [];
      const started = performance.now();
      const final = await follow(cluster.nc, cluster.api, reply.study_id, cluster.owner, (s) => seen.push(s));
      const elapsed = performance.now() - started;
      expect(final.state).toBe('done');
      expect(final.epochs.done).toBe(4);
      expect(seen.at(-1)).toEqual(final);
      // Polling every 250 ms asks about elapsed/250 times (the study takes seconds: a dozen or more); following the
      // events, once per batch of job transitions (a few for its one job), the first and the last, and a safety poll
      // every 5 s. No speed is assumed: on a machine fast enough to finish in a second the bound stays at 6.
      expect(status.mock.calls.length).toBeLessThanOrEqual(Math.max(6, elapsed / 500));
    } finally {
      status.mockRestore();
      await cluster.stop();
    }
  }, 90_000);

  it('says how to start a coordinator when there is none, exiting with the unavailable code', () => {
    const r = plurigrid('status', '--data-dir', tmp());
    expect(r.code).toBe(EXIT_UNAVAILABLE);
    expect(r.stderr).toMatch(/start a coordinator first/);
  });
});

describe('exit codes and the environment', () => {
  it('exits with the unavailable code when a NATS server answers but no coordinator does', async () => {
    const { Cluster } = await import('./cluster.ts');
    const cluster = await new Cluster().start();
    try {
      // Without credentials the server itself refuses: it runs with authentication.
      const anonymous = await plurigridAsync('status', 'x', '--nats', cluster.nats.url, '--data-dir', tmp());
      expect(anonymous.code, anonymous.stderr).toBe(EXIT_UNAVAILABLE);
      expect(anonymous.stderr).toMatch(/refused these credentials/);
      const creds = await cluster.credsFile('client');
      const r = await plurigridAsync('status', 'x', '--nats', cluster.nats.url, '--creds', creds);
      expect(r.code, r.stderr).toBe(EXIT_UNAVAILABLE);
      expect(r.stderr).toMatch(/no coordinator is answering/);
      // The same server and credentials named by PLURIGRID_NATS_URL and PLURIGRID_CREDS, which --help lists.
      const env = await plurigridEnv(
        { PLURIGRID_NATS_URL: cluster.nats.url, PLURIGRID_CREDS: creds },
        'status',
        'x',
        '--data-dir',
        tmp(),
      );
      expect(env.code, env.stderr).toBe(EXIT_UNAVAILABLE);
      expect(env.stderr).toMatch(/no coordinator is answering/);
    } finally {
      await cluster.stop();
    }
    const help = plurigrid('worker', '--help').stdout.replace(/\s+/g, ' ');
    for (const v of ['PLURIGRID_NATS_URL', 'PLURIGRID_DATA_DIR', 'PLURIGRID_LOG'])
      expect(help).toContain(`env: ${v}`);
  }, 30_000);

  it('exits with the unavailable code when nothing listens at the NATS URL', async () => {
    const port = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const r = await plurigridAsync('workers', '--nats', `nats://127.0.0.1:${port}`);
    expect(r.code, r.stderr).toBe(EXIT_UNAVAILABLE);
    expect(r.stderr).toMatch(/cannot reach the NATS server/);
  }, 30_000);

  it('exits 2 for a --nats that is not a URL and a log level from the environment that is not one', () => {
    const nats = plurigrid('status', '--nats', 'http://127.0.0.1:4222');
    expect(nats.code).toBe(EXIT_USAGE);
    expect(nats.stderr).toMatch(/"http:\/\/127\.0\.0\.1:4222" is not a NATS URL/);
    const r = spawnSync(process.execPath, [cli, 'worker'], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, PLURIGRID_LOG: 'chatty' },
    });
    expect(r.status).toBe(EXIT_USAGE);
    expect(r.stderr).toMatch(/'chatty' from env 'PLURIGRID_LOG' is invalid/);
  });

  it("rejects an unknown --executor for demo and worker with commander's message, before starting anything", () => {
    for (const command of ['demo', 'worker']) {
      const started = performance.now();
      const r = plurigrid(command, '--executor', 'nonsense');
      expect(r.code).toBe(EXIT_USAGE);
      expect(r.stderr).toMatch(/argument 'nonsense' is invalid\. Allowed choices are auto, docker, process/);
      expect(r.stdout).toBe('');
      expect(performance.now() - started).toBeLessThan(10_000);
    }
  });
});
