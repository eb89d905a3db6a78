import type { JetStreamManager } from '@nats-io/jetstream';
import { createUser } from '@nats-io/nkeys';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { escrowAccount, keyAccount } from '../../src/ledger/accounts.ts';
import { Bank } from '../../src/ledger/bank.ts';
import { fundingOf } from '../../src/ledger/funding.ts';
import type { Builder, Journal } from '../../src/ledger/journal.ts';
import { type JournalEntry, MAX_ROUND_STUDIES, Posting, postingSums } from '../../src/ledger/posting.ts';
import { quadraticMatch } from '../../src/ledger/quadratic.ts';
import {
  applyPosting,
  balance,
  contribute,
  emptyState,
  fund,
  type LedgerState,
  matchRound,
  mint,
  refund,
  refundToPool,
  replay,
  settled,
} from '../../src/ledger/rules.ts';
import { AuthError, signRequest } from '../../src/ledger/signed.ts';
import { refusedWith } from '../fixtures/ledger.ts';

const T0 = Date.UTC(2026, 10, 22);
const pairs = Array.from({ length: 4 }, () => createUser());
const keys = pairs.map((kp) => kp.getPublicKey());
const [K1, K2, K3, SPONSOR] = keys as [string, string, string, string];
const STUDIES = ['sA', 'sB', 'sC'];

/** Four keys with 1,000 SIM each; `log` keeps every entry, for replays. */
function start(): { s: LedgerState; log: JournalEntry[]; apply: (p: Posting | null) => JournalEntry } {
  const s = emptyState();
  const log: JournalEntry[] = [];
  const apply = (p: Posting | null) => {
    expect(p).not.toBeNull();
    const e = applyPosting(s, p!);
    log.push(e);
    return e;
  };
  for (const k of keys) apply(mint(keyAccount(k), 1_000_000_000, `mint:${k}`, T0));
  return { s, log, apply };
}

/** Gifts as (study, key, amount), each possibly split into pieces given one after the other. */
const gift = fc.record({
  st: fc.integer({ min: 0, max: STUDIES.length - 1 }),
  k: fc.integer({ min: 0, max: 2 }),
  pieces: fc.array(fc.integer({ min: 1, max: 5_000_000 }), { minLength: 1, maxLength: 3 }),
});
const gifts = fc.array(gift, { minLength: 1, maxLength: 12 });
const poolAmount = fc.integer({ min: 0, max: 100_000_000 });

/** Applies the gifts (split as given, or one posting per study and key) and the pool; returns the round. */
function roundAfter(
  gs: (typeof gift extends fc.Arbitrary<infer G> ? G : never)[],
  pool: number,
  split: boolean,
) {
  const { s, log, apply } = start();
  let n = 0;
  const given = new Map<string, number>();
  for (const g of gs) {
    const total = g.pieces.reduce((a, b) => a + b, 0);
    const id = `${STUDIES[g.st]} ${keys[g.k]}`;
    given.set(id, (given.get(id) ?? 0) + total);
    if (split) for (const c of g.pieces) apply(contribute(s, STUDIES[g.st]!, keys[g.k]!, c, `g${n++}`, T0));
  }
  if (!split)
    for (const [id, total] of [...given].sort()) {
      const [st, k] = id.split(' ') as [string, string];
      apply(contribute(s, st, k, total, `g${n++}`, T0));
    }
  if (pool > 0) apply(fund(s, SPONSOR, pool, 'sponsor', T0));
  return { s, log, apply, round: matchRound(s, STUDIES, T0) };
}

describe('funding rounds in the ledger', () => {
  it('a round balances, pays out the whole pool or nothing, and matches by quadratic funding (property)', () => {
    fc.assert(
      fc.property(gifts, poolAmount, (gs, pool) => {
        const { s, log, apply, round } = roundAfter(gs, pool, true);
        const expected = quadraticMatch(s.funding.studies.size ? pendingOf(s) : new Map(), pool);
        const matched = [...expected].filter(([, m]) => m > 0);
        if (!round) {
          expect(matched).toEqual([]);
          return;
        }
        expect(Posting.parse(round)).toEqual(round);
        const { credits, debits } = postingSums(round);
        expect(credits).toBe(debits);
        expect(debits).toBe(pool); // never more than the pool, and all of it
        expect(round.entries).toContainEqual({ account: 'pool', amount: -pool });
        expect(round.entries.filter((e) => e.amount > 0)).toEqual(
          matched.map(([id, m]) => ({ account: escrowAccount(id), amount: m })),
        );
        apply(round);
        expect(balance(s, 'pool')).toBe(0);
        for (const [id, m] of expected) {
          const f = fundingOf(s, id);
          expect(f.matched).toBe(m);
          // A paid study's pending contributions are matched; one left out keeps them for the next round.
          expect(f.pending.size === 0).toBe(m > 0);
        }
        expect(replay(log).funding).toEqual(s.funding);
      }),
      { numRuns: 200 },
    );
  });

  it('one key giving in several pieces counts once per study: the round is the same as for its total (property)', () => {
    fc.assert(
      fc.property(gifts, poolAmount, (gs, pool) => {
        const split = roundAfter(gs, pool, true);
        const whole = roundAfter(gs, pool, false);
        expect(split.round?.entries).toEqual(whole.round?.entries);
        for (const id of STUDIES) expect(fundingOf(split.s, id).funders).toBe(fundingOf(whole.s, id).funders);
      }),
      { numRuns: 100 },
    );
  });

  it('pays at most MAX_ROUND_STUDIES studies, the largest matches; the others keep their pending for the next', () => {
    const { s, apply } = start();
    const ids = Array.from({ length: MAX_ROUND_STUDIES + 2 }, (_, i) => `s${String(i).padStart(3, '0')}`);
    // Study i's two funders each give i + 1 µSIM: s000 and s001 have the smallest matches.
    ids.forEach((id, i) => {
      apply(contribute(s, id, K1, i + 1, `a${i}`, T0));
      apply(contribute(s, id, K2, i + 1, `b${i}`, T0));
    });
    apply(fund(s, SPONSOR, 500_000_000, 'sponsor', T0));
    const first = matchRound(s, ids, T0)!;
    expect(first.entries).toHaveLength(MAX_ROUND_STUDIES + 1);
    expect(first.entries.map((e) => e.account)).not.toContain(escrowAccount('s000'));
    expect(first.entries.map((e) => e.account)).not.toContain(escrowAccount('s001'));
    apply(first);
    expect(fundingOf(s, 's000').pending.size).toBe(2);
    expect(fundingOf(s, 's100').pending.size).toBe(0);
    // With the pool filled again, the next round is theirs alone.
    apply(fund(s, SPONSOR, 3_000, 'sponsor2', T0));
    const second = matchRound(s, ids, T0)!;
    expect(second).toMatchObject({ op_id: 'round:2', refs: { round: 2 } });
    expect(second.entries).toEqual([
      { account: 'pool', amount: -3_000 },
      { account: escrowAccount('s000'), amount: 1_000 }, // raw matches 2 and 4: a third and two thirds
      { account: escrowAccount('s001'), amount: 2_000 },
    ]);
  });

  it('keeps an unmatched study’s gifts pending until it has two funders, and skips settled studies', () => {
    const { s, log, apply } = start();
    apply(contribute(s, 'sA', K1, 4_000_000, 'g1', T0));
    apply(contribute(s, 'sB', K1, 1_000_000, 'g2', T0));
    apply(contribute(s, 'sB', K2, 1_000_000, 'g3', T0));
    apply(fund(s, SPONSOR, 6_000_000, 'p1', T0));
    apply(refund(s, 'sB', K1, T0)); // settled, whatever for: no match
    expect(matchRound(s, ['sA', 'sB'], T0)).toBeNull();
    apply(contribute(s, 'sA', K2, 1_000_000, 'g4', T0));
    apply(contribute(s, 'sA', K3, 1_000_000, 'g5', T0));
    const round = matchRound(s, ['sA', 'sB', 'sA'], T0)!;
    expect(round.entries).toEqual([
      { account: 'pool', amount: -6_000_000 },
      { account: escrowAccount('sA'), amount: 6_000_000 },
    ]);
    apply(round);
    expect(fundingOf(s, 'sA')).toMatchObject({ contributed: 6_000_000, funders: 3, matched: 6_000_000 });
    expect(fundingOf(s, 'sA').pending.size).toBe(0);
    // Gifts after a match count toward the next round only.
    apply(contribute(s, 'sA', K1, 500_000, 'g6', T0));
    expect(fundingOf(s, 'sA').pending).toEqual(new Map([[K1, 500_000]]));
    expect(fundingOf(s, 'sA').byKey.get(K1)).toBe(4_500_000);
    expect(replay(log).funding).toEqual(s.funding);
  });

  it('sends what is left of a public good to the pool once, empty or not, and settles it', () => {
    const { s, apply } = start();
    const empty = refundToPool(s, 'sE', T0)!;
    expect(empty).toMatchObject({
      kind: 'refund',
      op_id: 'refund:sE',
      entries: [],
      refs: { study_id: 'sE' },
    });
    apply(empty);
    expect(settled(s, 'sE')).toBe(true);
    expect(refundToPool(s, 'sE', T0)).toBeNull();
    refusedWith('study-settled', () => contribute(s, 'sE', K1, 1, 'late', T0));
  });
});

/** Every public good's pending gifts (the input of the next round). */
const pendingOf = (s: LedgerState) =>
  new Map([...s.funding.studies].filter(([id]) => !settled(s, id)).map(([id, f]) => [id, f.pending]));

describe('fund builders and their refusals', () => {
  it('apply once per op id, within the giver’s balance', () => {
    const { s, apply } = start();
    apply(contribute(s, 'sA', K1, 5, 'g1', T0));
    expect(contribute(s, 'sA', K1, 5, 'g1', T0)).toBeNull();
    apply(fund(s, K2, 7, 'p1', T0));
    expect(fund(s, K2, 7, 'p1', T0)).toBeNull();
    expect(s.funding.pool).toEqual(new Map([[K2, 7]]));
    refusedWith('insufficient-funds', () => contribute(s, 'sA', K1, 2_000_000_000, 'g2', T0));
    refusedWith('invalid-amount', () => contribute(s, 'sA', K1, 0, 'g2', T0));
    refusedWith('invalid-amount', () => fund(s, K1, 1.5, 'p2', T0));
    refusedWith('invalid-account', () => contribute(s, 'has space', K1, 1, 'g2', T0));
  });

  it('refuse fund postings that are not a gift to a study, a gift to the pool or the next round', () => {
    const { s, apply } = start();
    apply(contribute(s, 'sA', K1, 1_000, 'g1', T0));
    apply(contribute(s, 'sA', K2, 1_000, 'g2', T0));
    apply(fund(s, SPONSOR, 1_000, 'p1', T0));
    const fundPosting = (op_id: string, entries: Posting['entries'], refs: Posting['refs']): Posting => ({
      op_id,
      kind: 'fund',
      entries,
      at: T0,
      memo: null,
      refs,
    });
    const pool = (n: number) => ({ account: 'pool' as const, amount: n });
    const esc = (id: string, n: number) => ({ account: escrowAccount(id), amount: n });
    const key = (k: string, n: number) => ({ account: keyAccount(k), amount: n });
    const invalid: Posting[] = [
      // A round out of a key, from the pool into a key, with a study or a key in its refs, named wrongly.
      fundPosting('round:1', [key(K1, -1), esc('sA', 1)], { round: 1 }),
      fundPosting('round:1', [pool(-1), key(K1, 1)], { round: 1 }),
      fundPosting('round:1', [pool(-1), esc('sA', 1)], { round: 1, study_id: 'sA' }),
      fundPosting('round:1', [pool(-1), esc('sA', 1)], { round: 1, key: K1 }),
      fundPosting('round:2', [pool(-1), esc('sA', 1)], { round: 2 }),
      fundPosting('r1', [pool(-1), esc('sA', 1)], { round: 1 }),
      // The pool given away without a round; a gift from another key than refs.key, or without one.
      fundPosting('x1', [pool(-1), esc('sA', 1)], { study_id: 'sA' }),
      fundPosting('x2', [key(K1, -1), esc('sA', 1)], { study_id: 'sA', key: K2 }),
      fundPosting('x3', [key(K1, -1), pool(1)], {}),
      // A gift into another escrow than refs.study_id, to the pool naming a study, to two places at once.
      fundPosting('x4', [key(K1, -1), esc('sA', 1)], { study_id: 'sB', key: K1 }),
      fundPosting('x5', [key(K1, -1), pool(1)], { study_id: 'sA', key: K1 }),
      fundPosting('x6', [key(K1, -2), pool(1), esc('sA', 1)], { study_id: 'sA', key: K1 }),
    ];
    const before = structuredClone({ balances: s.balances, funding: s.funding, seq: s.lastSeq });
    for (const p of invalid) refusedWith('invalid-posting', () => applyPosting(s, p));
    expect({ balances: s.balances, funding: s.funding, seq: s.lastSeq }).toEqual(before);
    // A round may not pay more than the pool holds, nor into a settled study.
    refusedWith('insufficient-funds', () =>
      applyPosting(s, fundPosting('round:1', [pool(-1_001), esc('sA', 1_001)], { round: 1 })),
    );
    apply(refundToPool(s, 'sB', T0));
    refusedWith('study-settled', () =>
      applyPosting(s, fundPosting('round:1', [pool(-1), esc('sB', 1)], { round: 1 })),
    );
    refusedWith('study-settled', () =>
      applyPosting(s, fundPosting('x7', [key(K1, -1), esc('sB', 1)], { study_id: 'sB', key: K1 })),
    );
    // The same round, well formed, applies once.
    const round = matchRound(s, ['sA'], T0)!;
    apply(round);
    refusedWith('duplicate-op', () => applyPosting(s, round));
  });
});

/** A journal in memory: what the bank and settlement need of one (state, and append run through the rules). */
function memoryJournal(s: LedgerState = emptyState()): Journal {
  const append = async (build: Posting | Builder) => {
    const p = typeof build === 'function' ? build(s) : build;
    if (!p) return { status: 'skipped', op_id: null, seq: null };
    const done = s.applied.get(p.op_id);
    if (done !== undefined) return { status: 'skipped', op_id: p.op_id, seq: done };
    const entry = applyPosting(s, Posting.parse(p));
    return { status: 'appended', entry, streamSeq: entry.seq };
  };
  return { state: s, append } as unknown as Journal;
}

describe('the bank’s commons operations', () => {
  const bankWith = () => {
    const { s } = start();
    const bank = new Bank({ journal: memoryJournal(s), jsm: {} as JetStreamManager, now: () => T0 });
    return { s, bank };
  };
  const [P1, P2] = pairs as [(typeof pairs)[0], (typeof pairs)[0]];

  it('fund: a signed gift to a study (asked about first) or to the pool, once', async () => {
    const { s, bank } = bankWith();
    const asked: string[] = [];
    const req = signRequest(P1, 'fund', { to: 'sA', amount: '2.5' }, T0);
    const reply = await bank.fund(req, (id) => asked.push(id));
    expect(asked).toEqual(['sA']);
    expect(reply).toMatchObject({ op_id: `req:${K1}:${req.nonce}`, balance: { key: K1 } });
    expect(reply.balance.available).toBe(1_000_000_000 - 2_500_000);
    expect(fundingOf(s, 'sA').byKey.get(K1)).toBe(2_500_000);

    const toPool = await bank.fund(signRequest(P2, 'fund', { to: 'pool', amount: '1' }, T0), () => {
      throw new Error('not asked about the pool');
    });
    expect(s.applied.get(toPool.op_id)).toBe(toPool.seq);
    expect(s.funding.pool.get(K2)).toBe(1_000_000);
    await expect(bank.fund(req, () => {})).rejects.toMatchObject({ code: 'replayed' });
  });

  it('fund: a study the coordinator refuses throws its error and appends nothing', async () => {
    const { s, bank } = bankWith();
    const seq = s.lastSeq;
    const refusal = new Error('not an open public good');
    await expect(
      bank.fund(signRequest(P1, 'fund', { to: 'sA', amount: '1' }, T0), () => {
        throw refusal;
      }),
    ).rejects.toBe(refusal);
    await expect(
      bank.fund(signRequest(P1, 'fund', { to: 'no.such', amount: '1' }, T0), () => {}),
    ).rejects.toBeInstanceOf(AuthError);
    expect(s.lastSeq).toBe(seq);
  });

  it('contribute: a public good’s budget at submit, once per signed submit; matchRound reports its matches', async () => {
    const { s, bank } = bankWith();
    const body = { study: { name: 'pg' } };
    const { key, nonce, expires_at, signature } = signRequest(P1, 'submit', body, T0);
    await bank.contribute('sA', { key, nonce, expires_at, signature }, body, 3_000_000);
    expect(fundingOf(s, 'sA').byKey.get(K1)).toBe(3_000_000);
    // A fresh bank (a restart: its nonce guard is empty) still refuses the same signed submit.
    const again = new Bank({ journal: memoryJournal(s), jsm: {} as JetStreamManager, now: () => T0 });
    await expect(
      again.contribute('sB', { key, nonce, expires_at, signature }, body, 1),
    ).rejects.toMatchObject({ code: 'replayed' });

    expect(await bank.matchRound(['sA'])).toBeNull(); // one funder: nothing to match
    await bank.fund(signRequest(P2, 'fund', { to: 'sA', amount: '3' }, T0), () => {});
    await bank.fund(signRequest(P2, 'fund', { to: 'pool', amount: '10' }, T0), () => {});
    expect(await bank.matchRound(['sA'])).toEqual({
      round: 1,
      matches: [{ study_id: 'sA', amount: 10_000_000 }],
    });
    expect(await bank.matchRound(['sA'])).toBeNull();
  });
});
