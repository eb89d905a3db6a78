// Adversarial providers, each a real process (test/fixtures/adversary.ts) against a real coordinator, honest
// workers and nats-server: what replication catches, what leases catch, and what a quorum cannot promise.
import type { KeyPair } from '@nats-io/nkeys';
import { afterEach, describe, expect, it } from 'vitest';
import { summarizeProvenance, verifyStudy } from '../../src/cli/verify.ts';
import { MICRO_PER_SIM } from '../../src/ledger/accounts.ts';
import type { JobProvenance, SubmitRequest } from '../../src/models/api.ts';
import { Study } from '../../src/models/study.ts';
import { runEpoch } from '../../src/sim/epoch.ts';
import { expandStudy } from '../../src/study/expand.ts';
import { Cluster, smallStudy, until } from './cluster.ts';

let cluster: Cluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

/** The submitter (the test's client key, which owns its studies), with SIM from the faucet. */
async function payer(c: Cluster): Promise<KeyPair> {
  await c.api.ledgerOp('faucet', {}, c.user.keyPair);
  return c.user.keyPair;
}

/** Every accepted epoch has the digest the engine gives in-process; returns how many were accepted. */
async function acceptedAreExact(c: Cluster, studyId: string, req: SubmitRequest): Promise<number> {
  const { rows } = await c.api.allResults(studyId);
  const local = new Map(expandStudy(Study.parse(req.study), req.study!.scenario).map((e) => [e.epoch_id, e]));
  for (const row of rows) expect(row.digest).toBe(runEpoch(local.get(row.epoch_id)!.scenario).digest);
  return rows.length;
}

/** Waits until the study's escrow is settled (its refund posted), then returns every posting's kind and key. */
async function settledPostings(c: Cluster, studyId: string) {
  let page = await c.api.ledger({ limit: 1000 });
  await until(
    async () => {
      page = await c.api.ledger({ limit: 1000 });
      return page.entries.some((e) => e.posting.op_id === `refund:${studyId}`);
    },
    15_000,
    'the refund',
  );
  return page;
}

const executionsOf = (jobs: JobProvenance[], worker: string) =>
  jobs.flatMap((j) => j.executions).filter((e) => e.worker_id === worker);

describe('adversarial providers', () => {
  it('one that alters a metric and signs a self-consistent result is outvoted, slashed and unpaid; results equal a local run', async () => {
    cluster = await Cluster.up({ h1: [], h2: [] });
    const cheat = await cluster.startAdversary('alter', 'cheat', '20');
    await cluster.waitForWorkers(3);
    const kp = await payer(cluster);
    const req: SubmitRequest = {
      ...smallStudy(2, ['none']),
      verification: { quorum: 2, adaptive: false },
      budget: '5',
    };
    const sub = await cluster.api.submitSigned(req, kp);
    expect((await cluster.waitForStudy(sub.study_id)).state).toBe('done');
    expect(await acceptedAreExact(cluster, sub.study_id, req)).toBe(2);

    const jobs = await cluster.api.allProvenance(sub.study_id);
    const cheated = executionsOf(jobs, cheat).filter((e) => e.ended === 'ok');
    // Cheapest on the market (price 0), it gets a replica of every job; each of its results is outvoted.
    expect(cheated.length).toBeGreaterThan(0);
    for (const e of cheated) expect(e.verdict).toBe('invalid');
    for (const j of jobs) expect(j.accepted?.agreed).toBe(2);

    const page = await settledPostings(cluster, sub.study_id);
    const slashes = page.entries.filter((e) => e.posting.kind === 'slash');
    expect(slashes.map((e) => e.posting.refs.key)).toEqual(cheated.map(() => cheat));
    const pays = page.entries.filter((e) => e.posting.kind === 'pay');
    expect(pays.some((e) => e.posting.refs.key === cheat)).toBe(false);
    expect(pays).toHaveLength(jobs.length * 2);
    const bal = await cluster.api.balance(cheat);
    expect(bal.available).toBe(80 * MICRO_PER_SIM); // the faucet's 100, less its stake; never paid
    expect(bal.stake).toBe(20 * MICRO_PER_SIM - cheated.length * MICRO_PER_SIM);
    // The submitter got back all it did not pay out.
    const paid = pays.reduce((s, e) => s + e.posting.entries.find((x) => x.amount > 0)!.amount, 0);
    expect((await cluster.api.balance(kp.getPublicKey())).available).toBe(100 * MICRO_PER_SIM - paid);
    expect((await cluster.api.ledger({ verify: true })).check?.ok).toBe(true);
    // `plurigrid verify`: every accepted epoch re-run here matches, every result's signature checks out.
    const report = await verifyStudy(cluster.api, sub.study_id, { seed: 1 });
    expect(report.ok).toBe(true);
    expect(report.epochs).toMatchObject({ accepted: 2, matching: 2, mismatching: 0 });
    const results = jobs.flatMap((j) => j.executions).filter((e) => e.ended === 'ok').length;
    expect(report.summary).toMatchObject({
      signatures_checked: results,
      bad_signatures: 0,
      with_outvoted: 2,
    });
    // A signature over another digest than the one recorded does not check out.
    const signed = await cluster.api.allProvenance(sub.study_id, true);
    const forged = structuredClone(signed);
    const e = forged[0]!.executions.find((x) => x.signed)!;
    e.output_digest = 'f'.repeat(64);
    expect(summarizeProvenance(forged).summary.bad_signatures).toBe(1);
    expect(summarizeProvenance(signed).summary.bad_signatures).toBe(0);
  }, 90_000);

  it('one that never answers and one that signs with another key only hold jobs until their leases expire, unpaid', async () => {
    cluster = await new Cluster().start();
    await cluster.startCoordinator(['--lease-grace-s', '1']);
    await cluster.startWorker('h1');
    await cluster.startWorker('h2');
    const silent = await cluster.startAdversary('silent', 'silent');
    const forger = await cluster.startAdversary('wrong-key', 'forger');
    await cluster.waitForWorkers(4);
    const kp = await payer(cluster);
    const req: SubmitRequest = {
      ...smallStudy(2, ['none']),
      verification: { quorum: 2, adaptive: false },
      limits: { timeout_s: 2 },
      max_attempts: 8,
      budget: '5',
    };
    const sub = await cluster.api.submitSigned(req, kp);
    expect((await cluster.waitForStudy(sub.study_id, 90_000)).state).toBe('done');
    expect(await acceptedAreExact(cluster, sub.study_id, req)).toBe(2);
    const jobs = await cluster.api.allProvenance(sub.study_id);
    const bad = [...executionsOf(jobs, silent), ...executionsOf(jobs, forger)];
    expect(bad.length).toBeGreaterThan(0);
    for (const e of bad) {
      expect(e.verdict).toBeNull();
      expect(['lease-expired', 'worker-lost', 'cancelled']).toContain(e.ended);
    }
    const page = await settledPostings(cluster, sub.study_id);
    const paidKeys = page.entries.filter((e) => e.posting.kind === 'pay').map((e) => e.posting.refs.key);
    expect(paidKeys).not.toContain(silent);
    expect(paidKeys).not.toContain(forger);
    expect(paidKeys).toHaveLength(jobs.length * 2);
  }, 120_000);

  it('two colluders cannot outvote an established provider under quorum 2 of 3: the job fails rather than accept their output', async () => {
    cluster = await new Cluster().start();
    await cluster.startCoordinator(['--trust-after', '3']);
    await cluster.startWorker('honest');
    await cluster.waitForWorkers(1);
    // The honest provider earns its standing first: four valid results in a row.
    const warm = await cluster.submit(smallStudy(2, ['none', 'sdr']));
    expect((await cluster.waitForStudy(warm.study_id)).state).toBe('done');
    const c1 = await cluster.startAdversary('collude', 'c1', '20');
    const c2 = await cluster.startAdversary('collude', 'c2', '20');
    await cluster.waitForWorkers(3);
    const req: SubmitRequest = {
      ...smallStudy(2, ['none']),
      verification: { quorum: 2, max_results: 3, adaptive: false },
      queue_timeout_s: 5,
    };
    const sub = await cluster.submit(req);
    const status = await cluster.waitForStudy(sub.study_id, 60_000);
    // Whatever was accepted is right; no colluder result was ever valid.
    await acceptedAreExact(cluster, sub.study_id, req);
    const jobs = await cluster.api.allProvenance(sub.study_id);
    for (const e of [...executionsOf(jobs, c1), ...executionsOf(jobs, c2)])
      expect(e.verdict).not.toBe('valid');
    // Every job had the established provider's opinion; the colluders never held two replicas of one job.
    for (const j of jobs) {
      const workers = j.executions
        .filter((e) => e.ended === 'ok' || e.ended === null)
        .map((e) => e.worker_id);
      expect(workers.filter((w) => w === c1 || w === c2).length).toBeLessThanOrEqual(1);
    }
    // A job where a colluder disagreed had no second established provider to break the tie: it failed.
    const disputed = jobs.filter((j) =>
      j.executions.some((e) => (e.worker_id === c1 || e.worker_id === c2) && e.ended === 'ok'),
    );
    expect(disputed.length).toBeGreaterThan(0);
    for (const j of disputed) expect(j.status).toBe('failed');
    expect(status.state).toBe('failed');
  }, 120_000);
});
