import { createUser } from '@nats-io/nkeys';
import { afterEach, describe, expect, it } from 'vitest';
import { getStudyJobs, jobKey } from '../../src/coordinator/jobspecs.ts';
import { claimsOf } from '../../src/models/api.ts';
import { InputError } from '../../src/models/errors.ts';
import { type JobRecord, StoredJobState } from '../../src/models/job-record.ts';
import { Scenario } from '../../src/models/scenario.ts';
import { Study } from '../../src/models/study.ts';
import { runEpoch } from '../../src/sim/epoch.ts';
import { expandStudy } from '../../src/study/expand.ts';
import { identityFrom } from '../../src/transport/identity.ts';
import { ensureResources } from '../../src/transport/resources.ts';
import { subjects } from '../../src/transport/subjects.ts';
import { jobResult } from '../fixtures/results.ts';
import { Cluster, heavyScenario, smallStudy, until } from './cluster.ts';

let cluster: Cluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

/**
 * A study's job records as stored: each job as submitted (or, once the study ended, as archived), with its KV state
 * laid over it while it runs.
 */
async function jobRecords(c: Cluster, studyId: string): Promise<JobRecord[]> {
  const resources = await ensureResources(c.admin);
  const stored = await getStudyJobs(resources, studyId);
  return Promise.all(
    stored!.map(async (rec) => {
      const state = await resources.kv.jobs.get(jobKey(rec));
      return state?.operation === 'PUT' ? { ...StoredJobState.parse(state.json()), job: rec.job } : rec;
    }),
  );
}

/** Ended executions of a job, oldest first. */
const ended = (job: JobRecord) => job.executions.filter((e) => e.ended !== null && e.ended !== 'ok');

/** Waits until a worker reports running an attempt (not merely assigned: the request may still be in flight). */
async function jobRunning(c: Cluster): Promise<void> {
  await until(
    async () => (await c.api.workers()).workers.some((w) => w.running.length > 0),
    10_000,
    'a job to run',
  );
}

/** Every epoch exactly once, with the digest the engine gives in-process. */
async function expectExactResults(c: Cluster, studyId: string, req: ReturnType<typeof smallStudy>) {
  const { rows } = await c.api.allResults(studyId);
  const expected = expandStudy(Study.parse(req.study), req.study!.scenario);
  expect(rows).toHaveLength(expected.length);
  expect(new Set(rows.map((r) => r.epoch_id)).size).toBe(expected.length);
  for (const e of expected) {
    const row = rows.find((r) => r.epoch_id === e.epoch_id)!;
    expect(row.digest).toBe(runEpoch(e.scenario).digest);
  }
}

describe('the marketplace loop', () => {
  it('runs a study across two workers with results identical to local runs; a repeated key returns the first answer', async () => {
    cluster = await Cluster.up({ a: [], b: [] });
    const req = { ...smallStudy(3), idempotency_key: 'paper-42' };
    const first = await cluster.submit(req);
    expect(first).toMatchObject({ epochs: 6, jobs: 6, duplicate: false });
    const again = await cluster.submit(req);
    expect(again).toMatchObject({ study_id: first.study_id, duplicate: true });
    const status = await cluster.waitForStudy(first.study_id);
    expect(status.state).toBe('done');
    await expectExactResults(cluster, first.study_id, req);
    const workersUsed = new Set((await cluster.api.allResults(first.study_id)).rows.map((r) => r.worker_id));
    expect(workersUsed.size).toBe(2);
    expect((await cluster.api.list()).studies.map((s) => s.study_id)).toEqual([first.study_id]);
  });

  it('rejects bad submits with path-named errors and stays up', async () => {
    cluster = await Cluster.up();
    const bad = async (req: unknown) => {
      try {
        await cluster!.submit(req as never);
      } catch (e) {
        expect(e).toBeInstanceOf(InputError);
        return (e as InputError).issues;
      }
      throw new Error('expected a rejection');
    };
    const wrongType = smallStudy();
    (wrongType.study!.scenario as { community: { size: unknown } }).community.size = 'many';
    expect((await bad(wrongType))[0]).toMatch(
      /^study\.scenario\.community\.size: expected number, got "many"/,
    );
    expect(await bad({ ...smallStudy(), image: 'sha256:nope' })).toEqual([
      expect.stringMatching(/^image: unknown image "sha256:nope"/),
    ]);
    expect(await bad({ ...smallStudy(), limits: { memory_mb: 'lots' } })).toEqual([
      expect.stringMatching(/^limits\.memory_mb: expected number/),
    ]);
    const huge = smallStudy(10_000, [
      'none',
      'sdr',
      'sdr',
      'none',
      'bill-sharing',
      'uniform-price',
      'none',
      'sdr',
      'sdr',
      'none',
      'bill-sharing',
    ]);
    expect(await bad(huge)).toEqual([
      'study.sweep: the sweep has 11 points × 10,000 runs = 110,000 epochs; the limit is 100,000',
    ]);
    expect(await bad({ study: smallStudy().study, scenario: {} })).toEqual([
      '(root): expected exactly one of "study" or "scenario"',
    ]);
    // Still answering.
    expect((await cluster.api.list()).studies).toEqual([]);
  });
});

describe('faults', () => {
  it('a 100,000-epoch submit does not starve heartbeats: a running job with one attempt still finishes', async () => {
    cluster = await Cluster.up({ a: [] });
    const scenario = heavyScenario(2000, 30);
    const running = await cluster.submit({ scenario, limits: { memory_mb: 1024 }, max_attempts: 1 });
    await jobRunning(cluster);
    const tiny = heavyScenario(1, 1);
    const big = await cluster.submit({
      study: {
        name: 'big',
        scenario: tiny,
        runs: 10_000,
        seed: 1,
        sweep: [
          {
            name: 'market.mechanism',
            values: ['none', 'sdr', 'uniform-price', 'mid-market-rate', 'bill-sharing'],
          },
          { name: 'battery_strategy', values: ['self-consumption', 'price-responsive'] },
        ],
      },
    });
    expect(big.epochs).toBe(100_000);
    const status = await cluster.waitForStudy(running.study_id, 90_000);
    expect(status.state).toBe('done');
    await cluster.api.cancel(big.study_id, cluster.user.keyPair);
    expect(cluster.log(cluster.coordinator!)).not.toMatch(/no heartbeat/);
  }, 120_000);

  it('a worker killed with SIGKILL mid-job: the job completes elsewhere, one accepted result per epoch', async () => {
    cluster = await Cluster.up({ a: [] });
    const scenario = heavyScenario(2000, 40);
    const submitted = await cluster.submit({ scenario, limits: { memory_mb: 1024 } });
    await jobRunning(cluster);
    await cluster.startWorker('b');
    await cluster.kill(cluster.workers.get('a')!);
    const status = await cluster.waitForStudy(submitted.study_id, 90_000);
    expect(status.state).toBe('done');
    const [job] = await jobRecords(cluster, submitted.study_id);
    expect(ended(job!).map((e) => e.ended)).toEqual(['worker-lost']);
    expect(job!.attempts).toBe(2);
    const { rows } = await cluster.api.allResults(submitted.study_id);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.digest).toBe(runEpoch(Scenario.parse(scenario)).digest);
  }, 120_000);

  it('a worker restarted under the same identity: its lost attempt is reclaimed and rerun', async () => {
    cluster = await Cluster.up({ a: [] });
    const scenario = heavyScenario(2000, 40);
    const submitted = await cluster.submit({ scenario, limits: { memory_mb: 1024 } });
    await jobRunning(cluster);
    await cluster.kill(cluster.workers.get('a')!);
    await cluster.startWorker('a');
    const status = await cluster.waitForStudy(submitted.study_id, 60_000);
    expect(status.state).toBe('done');
    const [job] = await jobRecords(cluster, submitted.study_id);
    expect(ended(job!).map((e) => e.ended)).toEqual(['worker-lost']);
    expect(ended(job!)[0]!.reason).toMatch(/no heartbeat|assignment lost/);
  }, 90_000);

  it('the coordinator killed and restarted mid-study: the study finishes, no epoch lost or counted twice', async () => {
    // One worker starts a fresh process per job (--no-warm), the other keeps warm runners.
    cluster = await Cluster.up({ a: [], b: ['--no-warm'] });
    const req = smallStudy(6);
    const submitted = await cluster.submit(req);
    await until(
      async () => (await cluster!.api.status(submitted.study_id)).epochs.done >= 2,
      30_000,
      'some epochs done',
    );
    await cluster.kill(cluster.coordinator!);
    await new Promise((r) => setTimeout(r, 500));
    await cluster.startCoordinator();
    const status = await cluster.waitForStudy(submitted.study_id);
    expect(status.state).toBe('done');
    expect(status.epochs).toMatchObject({ total: 12, done: 12 });
    await expectExactResults(cluster, submitted.study_id, req);
  }, 120_000);

  it('nats-server stopped and restarted with its store: clients reconnect and work continues', async () => {
    cluster = await Cluster.up({ a: [] });
    const req = smallStudy(5);
    const submitted = await cluster.submit(req);
    await until(
      async () => (await cluster!.api.status(submitted.study_id)).epochs.done >= 1,
      30_000,
      'an epoch done',
    );
    const { port, storeDir } = cluster.nats;
    await cluster.nats.stop();
    await new Promise((r) => setTimeout(r, 1000));
    const { startEmbeddedNats } = await import('../../src/transport/nats-server.ts');
    cluster.nats = await startEmbeddedNats({
      dataDir: cluster.dataDir,
      port,
      config: await cluster.auth.serverConfig(),
    });
    expect(cluster.nats.storeDir).toBe(storeDir);
    const status = await cluster.waitForStudy(submitted.study_id, 90_000);
    expect(status.state).toBe('done');
    await expectExactResults(cluster, submitted.study_id, req);
  }, 120_000);

  it('a job over its memory limit fails with the reason, is retried, then fails after max attempts', async () => {
    cluster = await Cluster.up({ a: [] });
    const submitted = await cluster.submit({
      scenario: heavyScenario(20_000, 3),
      limits: { memory_mb: 48 },
      max_attempts: 2,
    });
    const status = await cluster.waitForStudy(submitted.study_id, 60_000);
    expect(status.state).toBe('failed');
    const [job] = await jobRecords(cluster, submitted.study_id);
    expect(job!.status).toBe('failed');
    expect(ended(job!).map((e) => e.ended)).toEqual(['oom', 'oom']);
    expect(status.failures[0]!.reasons.join(' ')).toMatch(/memory/);
  }, 90_000);

  it('a job over its time limit is reported as a timeout, retried, then failed', async () => {
    cluster = await Cluster.up({ a: [] });
    const submitted = await cluster.submit({
      scenario: heavyScenario(2000, 60),
      limits: { timeout_s: 0.5, memory_mb: 1024 },
      max_attempts: 2,
    });
    const status = await cluster.waitForStudy(submitted.study_id, 60_000);
    expect(status.state).toBe('failed');
    const [job] = await jobRecords(cluster, submitted.study_id);
    expect(ended(job!).map((e) => e.ended)).toEqual(['timeout', 'timeout']);
    expect(ended(job!)[0]!.reason).toMatch(/time/);
  }, 90_000);
});

describe('control', () => {
  it('cancel stops the running attempt and the queued rest', async () => {
    cluster = await Cluster.up({ a: [] });
    const submitted = await cluster.submit({
      study: { name: 'long', scenario: heavyScenario(2000, 200), runs: 3, seed: 1, sweep: [] },
      target_job_seconds: 0,
      limits: { memory_mb: 2048 },
    });
    await jobRunning(cluster);
    const cancelled = await cluster.api.cancel(submitted.study_id, cluster.user.keyPair);
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.jobs).toMatchObject({ total: 3, cancelled: 3 });
    // The worker stops the attempt well before the epoch would have finished (~10 s).
    await until(
      async () => (await cluster!.api.workers()).workers[0]!.running.length === 0,
      3_000,
      'the attempt to stop',
    );
  }, 60_000);

  it('a draining worker hands its job back on SIGTERM without using up an attempt', async () => {
    cluster = await Cluster.up({ a: ['--drain-s', '0'] });
    const scenario = heavyScenario(2000, 40);
    const submitted = await cluster.submit({ scenario, limits: { memory_mb: 1024 }, max_attempts: 1 });
    await jobRunning(cluster);
    await cluster.startWorker('b');
    await cluster.kill(cluster.workers.get('a')!, 'SIGTERM');
    const status = await cluster.waitForStudy(submitted.study_id, 60_000);
    expect(status.state).toBe('done');
    const [job] = await jobRecords(cluster, submitted.study_id);
    expect(ended(job!)).toEqual([
      expect.objectContaining({ ended: 'cancelled', reason: 'worker draining: handed back' }),
    ]);
    expect(job!).toMatchObject({ attempts: 2, failures: 0 });
  }, 60_000);

  it('a provider that alters its results is caught by their digests; its jobs finish on an honest worker', async () => {
    cluster = await Cluster.up({});
    // Cheats carelessly (test/fixtures/adversary.ts): lowers the first epoch's load, leaving its digest as computed.
    const cheater = {
      id: await cluster.startAdversary('careless', 'cheater'),
      stop: () => cluster!.kill(cluster!.workers.get('cheater')!, 'SIGTERM'),
    };
    try {
      await cluster.waitForWorkers(1);
      const req = { ...smallStudy(2, ['none']), max_attempts: 6 };
      const submitted = await cluster.submit(req);
      await until(
        async () => (await jobRecords(cluster!, submitted.study_id)).some((j) => ended(j).length > 0),
        15_000,
        'a cheated attempt to be rejected',
      );
      await cheater.stop();
      await cluster.startWorker('honest');
      expect((await cluster.waitForStudy(submitted.study_id)).state).toBe('done');
      await expectExactResults(cluster, submitted.study_id, req);
      const rejected = (await jobRecords(cluster, submitted.study_id)).flatMap(ended);
      expect(rejected.length).toBeGreaterThan(0);
      // Every attempt the cheater finished was rejected (one it was still running when stopped was handed back).
      const cheated = rejected.filter((h) => h.ended === 'rejected');
      expect(cheated.length).toBeGreaterThan(0);
      // Every rejection is the cheater's. (Other ends are no verdict on a result: under load the honest worker's
      // first assignment may be reclaimed before it has subscribed.)
      for (const h of cheated) {
        expect(h.worker_id).toBe(cheater.id);
        expect(h.reason).toMatch(/result digest does not match its content/);
      }
    } finally {
      await cheater.stop();
    }
  }, 60_000);

  it('a result batch signed by another key than the worker it names changes nothing', async () => {
    cluster = await Cluster.up({ a: [] });
    const scenario = heavyScenario(2000, 40);
    const submitted = await cluster.submit({ scenario, limits: { memory_mb: 1024 } });
    await jobRunning(cluster);
    const [job] = await jobRecords(cluster, submitted.study_id);
    expect(job).toMatchObject({ status: 'assigned', attempts: 1 });
    const running = job!.executions[0]!;
    // An impostor claims the running attempt finished with an output of its own making, under the worker's id.
    const output = { job_id: job!.job.job_id, results: [] };
    const forged = jobResult(job!.job, 1, output);
    const impostor = identityFrom(createUser());
    // Only the worker itself may publish there (permissions.ts); the operator's connection stands in for a
    // forger that got past that, to show the signature check holds on its own.
    const { js } = await ensureResources(cluster.admin);
    await js.publish(
      subjects.results(running.worker_id),
      JSON.stringify({
        batch_id: 'forged-1',
        worker_id: running.worker_id,
        results: [forged],
        signature: impostor.sign(claimsOf([forged])),
      }),
    );
    expect((await cluster.waitForStudy(submitted.study_id)).state).toBe('done');
    const [done] = await jobRecords(cluster, submitted.study_id);
    expect(done).toMatchObject({ status: 'done', attempts: 1, failures: 0 });
    expect(ended(done!)).toEqual([]);
    const { rows } = await cluster.api.allResults(submitted.study_id);
    expect(rows[0]!.digest).toBe(runEpoch(Scenario.parse(scenario)).digest);
    expect(cluster.log(cluster.coordinator!)).toMatch(/bad signature/);
  }, 60_000);

  it('an output over 512 KiB travels in parts through the OUTPUTS stream and verifies', async () => {
    cluster = await Cluster.up({ a: [] });
    const scenario = heavyScenario(4000, 1);
    const submitted = await cluster.submit({ scenario, limits: { memory_mb: 1024 } });
    expect((await cluster.waitForStudy(submitted.study_id)).state).toBe('done');
    const [job] = await jobRecords(cluster, submitted.study_id);
    const { jsm } = await ensureResources(cluster.admin);
    const stored = await jsm.streams.getMessage('RESULTS', { seq: job!.result!.seq });
    const batch = stored!.json<{
      results: { results: unknown; output_object: { parts: number } | null }[];
    }>();
    expect(batch.results).toHaveLength(1);
    expect(batch.results[0]!.results).toBeNull();
    expect(batch.results[0]!.output_object!.parts).toBeGreaterThan(1);
    const { rows } = await cluster.api.allResults(submitted.study_id);
    expect(rows[0]!.digest).toBe(runEpoch(Scenario.parse(scenario)).digest);
  }, 60_000);
});
