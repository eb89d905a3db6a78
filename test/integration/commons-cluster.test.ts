// The Simulation Commons with real processes: a coordinator and two provider workers with off-peak windows, a funded
// public good backfilling them, and a paid study preempting it.
import { createUser } from '@nats-io/nkeys';
import { afterEach, describe, expect, it } from 'vitest';
import { balanceSum } from '../../src/cli/ledger.ts';
import { Study } from '../../src/models/study.ts';
import { expandStudy } from '../../src/study/expand.ts';
import { Cluster, smallStudy, until } from './cluster.ts';

let cluster: Cluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

/** Idle capacity offered around the clock, cheaper than the usual ask. */
const OFFPEAK = ['--offpeak', '0-24', '--tz', 'Europe/Berlin', '--offpeak-price', '0.0005'];

describe('the commons, with real processes', () => {
  it('a public good backfills two workers, a paid study preempts it and finishes first, then the public good finishes; nothing preempted is paid', async () => {
    cluster = await Cluster.up({ a: OFFPEAK, b: OFFPEAK });
    const api = cluster.api;
    // A public good of 12 one-epoch jobs, each a couple of seconds of work: running when paid work comes.
    const pgReq = smallStudy(6);
    (pgReq.study!.scenario as { community: { size: number } }).community.size = 2500;
    const pg = await api.submitSigned(
      {
        ...pgReq,
        verification: { quorum: 1, adaptive: false },
        public_good: { title: 'Suburb mechanisms', description: 'for the neighbourhood' },
      },
      cluster.user.keyPair,
    );
    const funder = createUser();
    await api.ledgerOp('faucet', {}, funder);
    await api.ledgerOp('fund', { to: pg.study_id, amount: '10' }, funder);
    // Both idle workers take public-goods work.
    await until(
      async () =>
        (await api.workers()).workers.every((w) => w.running.some((r) => r.startsWith(pg.study_id))),
      20_000,
      'the public good on both workers',
    );

    const paid = await cluster.submitPaidStudy(2);
    const paidFinal = await cluster.waitForStudy(paid.study_id, 90_000);
    expect(paidFinal.state).toBe('done');
    // The paid study took the slots: the public good was still at work when it finished.
    expect((await api.status(pg.study_id)).state).toBe('running');
    const pgFinal = await cluster.waitForStudy(pg.study_id, 120_000);
    expect(pgFinal.state).toBe('done');

    // Every epoch of both accepted exactly once.
    for (const [id, req] of [
      [pg.study_id, pgReq],
      [paid.study_id, null],
    ] as const) {
      const { rows } = await api.allResults(id);
      const expected = req
        ? expandStudy(Study.parse(req.study), req.study!.scenario).length
        : paidFinal.epochs.total;
      expect(rows).toHaveLength(expected);
      expect(new Set(rows.map((r) => r.epoch_id)).size).toBe(expected);
    }
    const provenance = await api.allProvenance(pg.study_id);
    const preempted = provenance.flatMap((j) =>
      j.executions.filter((e) => e.ended === 'preempted').map((e) => `pay:${j.job_id}:${e.attempt}`),
    );
    // Both slots, unless a public-goods job happened to end just as the paid study came (its slot was then free).
    expect(preempted.length).toBeGreaterThanOrEqual(1);

    // The ledger: settled, nothing paid for preempted work, every balance sums to zero and the chain verifies.
    await until(
      async () => {
        const ops = new Set((await api.allJournal()).map((e) => e.posting.op_id));
        return ops.has(`refund:${pg.study_id}`) && ops.has(`refund:${paid.study_id}`);
      },
      20_000,
      'both studies settled',
    );
    const entries = await api.allJournal();
    const ops = new Set(entries.map((e) => e.posting.op_id));
    for (const op of preempted) expect(ops.has(op)).toBe(false);
    const pays = entries.filter((e) => e.posting.kind === 'pay' && e.posting.refs.study_id === pg.study_id);
    expect(pays).toHaveLength(provenance.length);
    const refund = entries.find((e) => e.posting.op_id === `refund:${pg.study_id}`)!;
    expect(refund.posting.entries.filter((e) => e.amount > 0).map((e) => e.account)).toEqual(['pool']);
    const check = await api.ledger({ limit: 1, verify: true });
    expect(balanceSum(check.balances)).toBe(0);
    expect(check.check?.ok).toBe(true);
    const commons = await api.commons({ funder: funder.getPublicKey() });
    expect(commons.studies).toEqual([
      expect.objectContaining({ study_id: pg.study_id, state: 'done', funders: 1, contributed: 10_000_000 }),
    ]);
    expect(commons.studies[0]!.spent).toBe(
      pays.reduce((s, e) => s + e.posting.entries.find((x) => x.amount > 0)!.amount, 0),
    );
    expect(commons.funder?.studies[0]).toMatchObject({
      study_id: pg.study_id,
      share: 1,
      epochs: expect.any(Number),
    });
  }, 240_000);
});
