// The Simulation Commons in the coordinator's loop, on a real nats-server and ledger with a hand-moved clock: funding
// and quadratic matching, public goods backfilling idle off-peak slots, paid work preempting them, and a provider's
// window opening and closing.
import { createUser, type KeyPair } from '@nats-io/nkeys';
import { afterEach, describe, expect, it } from 'vitest';
import { ConflictError, NotFoundError } from '../../src/coordinator/errors.ts';
import { DEFAULT_RETRY } from '../../src/coordinator/job-state.ts';
import { jobWork, payFor } from '../../src/coordinator/pricing.ts';
import { MICRO_PER_SIM } from '../../src/ledger/accounts.ts';
import { Bank } from '../../src/ledger/bank.ts';
import { Journal } from '../../src/ledger/journal.ts';
import { balance } from '../../src/ledger/rules.ts';
import { signRequest } from '../../src/ledger/signed.ts';
import type { SubmitRequest } from '../../src/models/api.ts';
import { InputError } from '../../src/models/errors.ts';
import { jobIdOf } from '../../src/models/study-record.ts';
import { type FakeWorker, Harness, tinyStudy } from '../fixtures/harness.ts';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

const OFFPEAK_PRICE = 0.0004;

/** A harness whose coordinator keeps a ledger and runs funding rounds only when told. */
async function commonsHarness(graceMs = 60_000) {
  const harness = await Harness.start({ timer: false });
  const journal = await Journal.open(harness.resources);
  const bank = new Bank({ journal, jsm: harness.resources.jsm, now: () => harness.clock.now() });
  await bank.genesis();
  await harness.stopCoordinator();
  await harness.startCoordinator({ bank, roundEveryMs: null, offpeakGraceMs: graceMs });
  return { harness, bank, journal };
}

/** A key with a faucet grant (100 SIM). */
async function funded(bank: Bank, now: number): Promise<KeyPair> {
  const kp = createUser();
  await bank.faucet(signRequest(kp, 'faucet', {}, now));
  return kp;
}

const give = (harness: Harness, kp: KeyPair, to: string, amount: string) =>
  harness.coordinator.commons!.fund(signRequest(kp, 'fund', { to, amount }, harness.clock.now()));

/** A submit signed by `payer` over exactly the JSON sent (what a budget takes). */
function signed(payer: KeyPair, req: object, now: number): SubmitRequest {
  const body = JSON.parse(JSON.stringify(req));
  const { action: _a, body: _b, ...auth } = signRequest(payer, 'submit', body, now);
  return { ...body, auth } as SubmitRequest;
}

const publicGood = (runs: number, title = 'Feeder study for Elm Street') =>
  tinyStudy(runs, { public_good: { title, description: 'which mechanism keeps the feeder in bounds' } });

/** A worker that offers its idle capacity around the clock (its window is always open). */
async function nightOwl(harness: Harness, name: string): Promise<FakeWorker> {
  const w = await harness.worker(name);
  w.offpeak = [{ from_hour: 0, to_hour: 24 }];
  w.offpeakPrice = OFFPEAK_PRICE;
  w.beat();
  return w;
}

describe('the commons: funding rounds', () => {
  it('matches the pool by quadratic funding: many small funders beat one large one', async () => {
    const c = await commonsHarness();
    h = c.harness;
    const now = h.clock.now();
    const many = await h.submit(publicGood(1, 'many'));
    const one = await h.submit(publicGood(1, 'one'));
    const small = await Promise.all([0, 1, 2].map(() => funded(c.bank, now)));
    for (const kp of small) await give(h, kp, many.study_id, '1');
    // Once more from the same key: one key counts once per study, whatever it gives.
    await give(h, small[0]!, many.study_id, '1');
    const big = await funded(c.bank, now);
    await give(h, big, one.study_id, '4');
    const sponsor = await funded(c.bank, now);
    await give(h, sponsor, 'pool', '10');

    const round = await h.coordinator.commons!.round();
    expect(round?.round).toBe(1);
    const view = h.coordinator.commons!.view(10, small[0]!.getPublicKey());
    const byId = new Map(view.studies.map((s) => [s.study_id, s]));
    // The same 4 SIM given: from four gifts of three keys it draws the whole pool, from one key nothing.
    expect(byId.get(many.study_id)).toMatchObject({
      funders: 3,
      contributed: 4 * MICRO_PER_SIM,
      matched: 10 * MICRO_PER_SIM,
    });
    expect(byId.get(one.study_id)).toMatchObject({ funders: 1, contributed: 4 * MICRO_PER_SIM, matched: 0 });
    expect(view.pool).toBe(0);
    expect(view.rounds).toBe(1);
    expect(view.funder?.studies).toEqual([
      expect.objectContaining({ study_id: many.study_id, contributed: 2 * MICRO_PER_SIM, share: 2 / 14 }),
    ]);
    // Nothing new to match: no second round.
    expect(await h.coordinator.commons!.round()).toBeNull();
  });

  it('takes contributions only for running public goods, and a refused one moves nothing', async () => {
    const c = await commonsHarness();
    h = c.harness;
    const kp = await funded(c.bank, h.clock.now());
    const paid = await h.submit(tinyStudy(1));
    const entries = c.journal.state.lastSeq;
    await expect(give(h, kp, paid.study_id, '1')).rejects.toBeInstanceOf(ConflictError);
    await expect(give(h, kp, 'snope', '1')).rejects.toBeInstanceOf(NotFoundError);
    expect(c.journal.state.lastSeq).toBe(entries);
    expect(c.bank.balanceOf(kp.getPublicKey()).available).toBe(100 * MICRO_PER_SIM);
    // Nor for a public good that has ended.
    const pg = await h.submit(publicGood(1));
    await h.coordinator.studies.cancel(pg.study_id);
    await expect(give(h, kp, pg.study_id, '1')).rejects.toBeInstanceOf(ConflictError);
    expect(c.journal.state.lastSeq).toBe(entries);
  });

  it('a public good waits for its window past the queue timeout, and cannot price itself above the ceiling', async () => {
    const c = await commonsHarness();
    h = c.harness;
    await h.stopCoordinator();
    await h.startCoordinator({
      bank: c.bank,
      roundEveryMs: null,
      retry: { ...DEFAULT_RETRY, queueTimeoutMs: 1000 },
    });
    const pg = await h.submit(publicGood(1));
    const job = jobIdOf(pg.study_id, 0);
    expect(h.job(job)!.queue_deadline).toBeNull();
    h.clock.advance(60_000);
    await h.round();
    expect(h.job(job)!.status).toBe('queued');
    await expect(h.submit({ ...publicGood(1), max_price: 1 })).rejects.toBeInstanceOf(InputError);
  });
});

describe('the commons: backfill and preemption', () => {
  it('public goods backfill idle workers; paid work preempts them, finishes first, and preempted work is never paid', async () => {
    const c = await commonsHarness();
    h = c.harness;
    const now = h.clock.now();
    const a = await nightOwl(h, 'a');
    const b = await nightOwl(h, 'b');
    const pg = await h.submit(publicGood(2));
    await give(h, await funded(c.bank, now), pg.study_id, '5');
    await h.round();
    const pgJobs = [0, 1].map((n) => jobIdOf(pg.study_id, n));
    // Both idle workers took a public-goods job, priced at their off-peak price.
    const work = jobWork(h.job(pgJobs[0]!)!.job);
    for (const id of pgJobs)
      expect(h.job(id)!.executions).toEqual([
        expect.objectContaining({ ended: null, pay: payFor(work, OFFPEAK_PRICE) }),
      ]);
    expect(a.running.size + b.running.size).toBe(2);

    const payer = await funded(c.bank, now);
    const paid = await h.submit(
      signed(payer, { ...tinyStudy(2), budget: '1', verification: { quorum: 1, adaptive: true } }, now),
    );
    await h.round();
    const paidJobs = [0, 1].map((n) => jobIdOf(paid.study_id, n));
    // The paid jobs took both slots; each public-goods execution ended preempted, no attempt used, back in the queue.
    expect([...a.preempted, ...b.preempted].sort()).toEqual(pgJobs.map((j) => `${j}#1`).sort());
    for (const id of pgJobs) {
      const rec = h.job(id)!;
      expect(rec).toMatchObject({ status: 'queued', failures: 0 });
      expect(rec.executions[0]).toMatchObject({ ended: 'preempted', verdict: null });
    }
    for (const w of [a, b]) for (const key of [...w.running.keys()]) await w.finish(key.split('#')[0]!);
    await h.until(() => paidJobs.every((id) => h!.job(id)?.status === 'done'), 'paid jobs done');
    await h.until(() => h!.coordinator.store.study(paid.study_id)?.summary != null, 'paid study closed');
    // The paid study finished first: the public good has not (its jobs went back to the free slots, or wait).
    expect(pgJobs.some((id) => h!.job(id)?.status === 'done')).toBe(false);

    // Capacity is idle again: the public good resumes and finishes.
    h.clock.advance(1000);
    a.beat();
    b.beat();
    await h.round();
    for (const w of [a, b]) for (const key of [...w.running.keys()]) await w.finish(key.split('#')[0]!);
    await h.until(() => h!.coordinator.store.study(pg.study_id)?.summary != null, 'public good closed');
    expect(pgJobs.every((id) => h!.job(id)?.status === 'done')).toBe(true);

    await h.coordinator.settlement!.idle();
    await h.until(() => c.journal.state.applied.has(`refund:${pg.study_id}`), 'public good settled');
    const postings = await allPostings(c.bank);
    const pays = postings.filter((p) => p.kind === 'pay');
    // Every epoch accepted once: one payment per job, for its accepted execution, never for a preempted one.
    for (const id of [...pgJobs, ...paidJobs]) {
      const rec = h.job(id)!;
      const paidFor = pays.filter((p) => p.refs.job_id === id);
      expect(paidFor.map((p) => p.refs.attempt)).toEqual([rec.result!.attempt]);
    }
    for (const id of pgJobs) expect(pays.some((p) => p.op_id === `pay:${id}:1`)).toBe(false);
    // The public good's leftovers went back to the pool; the ledger still sums to zero.
    const refund = postings.find((p) => p.op_id === `refund:${pg.study_id}`)!;
    expect(refund.entries.filter((e) => e.amount > 0).map((e) => e.account)).toEqual(['pool']);
    expect(balance(c.journal.state, 'pool')).toBeGreaterThan(0);
    let sum = 0;
    for (const v of c.journal.state.balances.values()) sum += v;
    expect(sum).toBe(0);
  });

  it('a window that opens starts backfill; one that closes lets work finish within the grace, then preempts it', async () => {
    const c = await commonsHarness(60_000);
    h = c.harness;
    h.clock.set(Date.parse('2026-06-01T12:00:00Z'));
    const w = await h.worker('berlin');
    w.offpeak = [{ from_hour: 22, to_hour: 6 }];
    w.tz = 'Europe/Berlin';
    w.offpeakPrice = OFFPEAK_PRICE;
    const pg = await h.submit(publicGood(1));
    await give(h, await funded(c.bank, h.clock.now()), pg.study_id, '5');
    const job = jobIdOf(pg.study_id, 0);
    const at = async (iso: string) => {
      h!.clock.set(Date.parse(iso));
      w.beat();
      await h!.round();
    };
    await at('2026-06-01T14:00:00Z'); // 16:00 in Berlin: peak hours
    expect(h.job(job)!.executions).toEqual([]);
    await at('2026-06-02T03:58:00Z'); // 05:58 in Berlin (CEST): the window is open
    expect(h.job(job)!.executions).toEqual([expect.objectContaining({ worker_id: w.id, ended: null })]);
    await at('2026-06-02T04:00:30Z'); // 06:00:30: closed, within the minute's grace
    expect(h.job(job)!.executions[0]!.ended).toBeNull();
    await at('2026-06-02T04:01:30Z'); // past the grace: preempted, and not placed again
    expect(h.job(job)!.executions).toEqual([expect.objectContaining({ ended: 'preempted' })]);
    expect(h.job(job)!.status).toBe('queued');
    expect(w.cancelled).toContain(`${job}#1`);
    await at('2026-06-02T04:05:00Z');
    expect(h.job(job)!.executions).toHaveLength(1);
  });
});

/** Every posting in the journal, in order. */
async function allPostings(bank: Bank) {
  const page = await bank.page(1, 1000, false);
  expect(page.entries.length).toBe(page.postings);
  return page.entries.map((e) => e.posting);
}
