// Settlement across a crash: the coordinator commits verdicts, dies before their postings reach the ledger, and the
// next coordinator pays them on start — exactly once, however often it restarts.
import { createUser, type KeyPair } from '@nats-io/nkeys';
import { afterEach, describe, expect, it } from 'vitest';
import { keyAccount } from '../../src/ledger/accounts.ts';
import { Bank } from '../../src/ledger/bank.ts';
import { Journal } from '../../src/ledger/journal.ts';
import { balance } from '../../src/ledger/rules.ts';
import { AuthError, signRequest } from '../../src/ledger/signed.ts';
import type { SubmitRequest } from '../../src/models/api.ts';
import { jobIdOf } from '../../src/models/study-record.ts';
import { Harness, tinyStudy } from '../fixtures/harness.ts';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

/** A bank over the real journal whose appends can be made to fail, as if the process died before they were sent. */
async function bankOn(harness: Harness) {
  const journal = await Journal.open(harness.resources);
  let down = false;
  const faulty = new Proxy(journal, {
    get(target, prop) {
      if (prop === 'append' && down) return () => Promise.reject(new Error('connection lost'));
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  const bank = new Bank({ journal: faulty, jsm: harness.resources.jsm, now: () => harness.clock.now() });
  await bank.genesis();
  const crash = () => {
    down = true;
  };
  return { bank, journal, crash };
}

/** A harness whose coordinator keeps a ledger (through `bankOn`), and a payer with a faucet grant. */
async function withBank(harness: Harness) {
  const first = await bankOn(harness);
  await harness.stopCoordinator();
  await harness.startCoordinator({ bank: first.bank });
  const payer = createUser();
  await first.bank.faucet(signRequest(payer, 'faucet', {}, harness.clock.now()));
  return { first, payer };
}

/** A submit with a budget, signed by the payer over exactly the JSON sent. */
function signedSubmit(payer: KeyPair, req: object, now: number): SubmitRequest {
  const body = JSON.parse(JSON.stringify(req));
  const { action: _a, body: _b, ...auth } = signRequest(payer, 'submit', body, now);
  return { ...body, auth } as SubmitRequest;
}

describe('settlement', () => {
  it('pays verdicts committed before a crash on the next start, once, and refunds the rest once', async () => {
    h = await Harness.start({ timer: false });
    const { first, payer } = await withBank(h);
    const a = await h.worker('a');
    const b = await h.worker('b');
    a.beat();
    b.beat();
    const { study_id } = await h.coordinator.studies.submit(
      signedSubmit(
        payer,
        { ...tinyStudy(1), verification: { quorum: 2, adaptive: false }, budget: '1' },
        h.clock.now(),
      ),
    );
    await h.round();
    const job = jobIdOf(study_id, 0);
    expect(h.job(job)!.executions).toHaveLength(2);

    // Both results arrive and the verdicts are committed; the postings they call for never leave the process.
    first.crash();
    await a.finish(job);
    await b.finish(job);
    await h.until(() => h!.coordinator.store.study(study_id)?.summary != null, 'the study to close');
    expect(h.job(job)!.executions.map((e) => e.verdict)).toEqual(['valid', 'valid']);
    await h.stopCoordinator();
    const pays = () => [...first.journal.state.applied.keys()].filter((op) => op.startsWith('pay:'));
    await first.journal.refresh();
    expect(pays()).toEqual([]);

    // The next coordinator heals it on start; the one after finds nothing to do.
    const lengths: number[] = [];
    for (let restart = 0; restart < 2; restart++) {
      const next = await bankOn(h);
      await h.startCoordinator({ bank: next.bank });
      await h.coordinator.settlement!.idle();
      await h.stopCoordinator();
      await next.journal.refresh();
      const s = next.journal.state;
      expect([...s.applied.keys()].filter((op) => op.startsWith('pay:')).sort()).toEqual([
        `pay:${job}:1`,
        `pay:${job}:2`,
      ]);
      expect(s.applied.has(`refund:${study_id}`)).toBe(true);
      const earned = balance(s, keyAccount(a.id)) + balance(s, keyAccount(b.id));
      expect(earned).toBeGreaterThan(0);
      // Escrowed = paid + refunded: the payer holds its grant less exactly what the providers earned.
      expect(balance(s, keyAccount(payer.getPublicKey()))).toBe(100_000_000 - earned);
      expect((await next.journal.verify()).ok).toBe(true);
      lengths.push(s.lastSeq);
    }
    expect(lengths[1]).toBe(lengths[0]);
  });

  it('escrows a signed submit once: replayed after a restart (a fresh nonce guard), it is refused', async () => {
    h = await Harness.start({ timer: false });
    const { payer } = await withBank(h);
    const req = signedSubmit(payer, { ...tinyStudy(1), budget: '10' }, h.clock.now());
    await h.coordinator.studies.submit(req);
    await h.stopCoordinator();
    const next = await bankOn(h);
    await h.startCoordinator({ bank: next.bank });
    const err = await h.coordinator.studies.submit(req).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).code).toBe('replayed');
    await next.journal.refresh();
    expect(balance(next.journal.state, keyAccount(payer.getPublicKey()))).toBe(90_000_000);
    expect([...h.coordinator.store.allStudies()]).toHaveLength(1);
  });
});
