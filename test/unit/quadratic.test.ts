import { createUser } from '@nats-io/nkeys';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { keyAccount } from '../../src/ledger/accounts.ts';
import { fundingOf, raisedOf } from '../../src/ledger/funding.ts';
import type { JournalEntry, Posting } from '../../src/ledger/posting.ts';
import { type Contributions, largestMatches, quadraticMatch, rawMatch } from '../../src/ledger/quadratic.ts';
import {
  applyPosting,
  balance,
  contribute,
  emptyState,
  fund,
  type LedgerState,
  matchRound,
  mint,
  pay,
  refund,
  refundToPool,
  replay,
} from '../../src/ledger/rules.ts';
import { refusedWith } from '../fixtures/ledger.ts';

const gifts = fc.array(fc.integer({ min: 1, max: 1e9 }), { minLength: 0, maxLength: 6 });
/** Goods s0, s1, … each with its funders k0, k1, … and what they gave (µSIM). */
const contributions = fc
  .array(gifts, { minLength: 1, maxLength: 6 })
  .map((goods) => new Map(goods.map((g, i) => [`s${i}`, new Map(g.map((c, j) => [`k${j}`, c]))])));
const pool = fc.integer({ min: 0, max: 1e13 });
const sum = (m: ReadonlyMap<string, number>) => [...m.values()].reduce((s, v) => s + v, 0);

describe('quadratic funding', () => {
  it('a worked example: matches ∝ (Σ√c)² − Σc, in whole µSIM that sum to the pool', () => {
    // a: √1 + √4 = 3 → 9 − 5 = 4; b: √9 + √16 = 7 → 49 − 25 = 24; c: one funder → 0.
    const c: Contributions = new Map([
      [
        'a',
        new Map([
          ['k1', 1],
          ['k2', 4],
        ]),
      ],
      [
        'b',
        new Map([
          ['k3', 9],
          ['k4', 16],
        ]),
      ],
      ['c', new Map([['k5', 100]])],
    ]);
    expect([rawMatch([1, 4]), rawMatch([9, 16]), rawMatch([100])]).toEqual([4, 24, 0]);
    expect(quadraticMatch(c, 28)).toEqual(
      new Map([
        ['a', 4],
        ['b', 24],
        ['c', 0],
      ]),
    );
    // 10 × 4/28 = 1.43 and 10 × 24/28 = 8.57: the leftover µSIM goes to the larger remainder.
    expect(quadraticMatch(c, 10)).toEqual(
      new Map([
        ['a', 1],
        ['b', 9],
        ['c', 0],
      ]),
    );
  });

  it('matches are whole, never negative, never more than the pool, and exactly the pool when anyone is matched', () => {
    fc.assert(
      fc.property(contributions, pool, (c, p) => {
        const m = quadraticMatch(c, p);
        expect([...m.keys()].sort()).toEqual([...c.keys()].sort());
        for (const v of m.values()) expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
        const anyone = [...c.values()].some((g) => rawMatch(g.values()) > 0);
        expect(sum(m)).toBe(anyone ? p : 0);
        expect(sum(m)).toBeLessThanOrEqual(p);
      }),
    );
  });

  it('a good with one funder is not matched; more distinct funders of the same total are matched more', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1e9 }),
        fc.integer({ min: 2, max: 12 }),
        fc.integer({ min: 1, max: 11 }),
        (each, many, fewer) => {
          fc.pre(fewer < many);
          // The same total: `many` funders give `each` times `fewer`, `fewer` funders give `each` times `many`.
          const split = (n: number, c: number) => new Map(Array.from({ length: n }, (_, j) => [`k${j}`, c]));
          const c: Contributions = new Map([
            ['broad', split(many, each * fewer)],
            ['narrow', split(fewer, each * many)],
          ]);
          const m = quadraticMatch(c, 1e12);
          expect(m.get('broad')!).toBeGreaterThan(m.get('narrow')!);
          if (fewer === 1) expect(m.get('narrow')).toBe(0);
        },
      ),
    );
  });

  it('does not depend on the order goods or funders are listed in', () => {
    fc.assert(
      fc.property(contributions, pool, (c, p) => {
        const reversed = new Map([...c].reverse().map(([id, g]) => [id, new Map([...g].reverse())]));
        expect(quadraticMatch(reversed, p)).toEqual(quadraticMatch(c, p));
      }),
    );
  });

  it('a raw match is the same bit for bit whatever order the funders come in', () => {
    fc.assert(
      fc.property(
        fc
          .array(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), { minLength: 2, maxLength: 12 })
          .chain((g) => fc.tuple(fc.constant(g), fc.shuffledSubarray(g, { minLength: g.length }))),
        ([g, shuffled]) => {
          expect(rawMatch(shuffled)).toBe(rawMatch(g));
        },
      ),
    );
  });

  it('a round takes the goods with the largest matches when it cannot take them all', () => {
    const c: Contributions = new Map([
      [
        'small',
        new Map([
          ['a', 1],
          ['b', 1],
        ]),
      ],
      [
        'large',
        new Map([
          ['a', 100],
          ['b', 100],
        ]),
      ],
      ['none', new Map([['a', 5]])],
    ]);
    expect([...largestMatches(c, 1).keys()]).toEqual(['large']);
    expect([...largestMatches(c, 5).keys()]).toEqual(['large', 'small', 'none']);
  });
});

const T0 = Date.UTC(2026, 10, 22);
const keys = Array.from({ length: 4 }, () => createUser().getPublicKey());
const [K1, K2, K3, SPONSOR] = keys as [string, string, string, string];

function apply(s: LedgerState, p: Posting | null) {
  expect(p).not.toBeNull();
  return applyPosting(s, p!);
}

/** Four keys with 100 SIM each (and the entries that minted it). */
function start(): { s: LedgerState; minted: JournalEntry[] } {
  const s = emptyState();
  const minted = keys.map((k) => apply(s, mint(keyAccount(k), 100_000_000, `mint:${k}`, T0)));
  return { s, minted };
}

describe('the commons in the ledger', () => {
  it('keeps who gave what, matches a round once, and tracks what a public good spent and returned', () => {
    const { s, minted } = start();
    const entries = [
      apply(s, contribute(s, 'sA', K1, 1_000_000, 'g1', T0)),
      apply(s, contribute(s, 'sA', K1, 3_000_000, 'g2', T0)), // the same key again: one funder, 4 SIM
      apply(s, contribute(s, 'sA', K2, 4_000_000, 'g3', T0)),
      apply(s, contribute(s, 'sB', K3, 8_000_000, 'g4', T0)),
      apply(s, fund(s, SPONSOR, 10_000_000, 'g5', T0)),
    ];
    expect(fundingOf(s, 'sA')).toMatchObject({ contributed: 8_000_000, funders: 2, matched: 0 });
    expect(fundingOf(s, 'sA').byKey.get(K1)).toBe(4_000_000);
    expect(s.funding.pool.get(SPONSOR)).toBe(10_000_000);

    const round = matchRound(s, ['sA', 'sB'], T0)!;
    expect(round).toMatchObject({ op_id: 'round:1', kind: 'fund', refs: { round: 1 } });
    // sB has one funder: the whole pool goes to sA, and sA's contributions count as matched.
    expect(round.entries).toEqual([
      { account: 'pool', amount: -10_000_000 },
      { account: 'escrow:sA', amount: 10_000_000 },
    ]);
    entries.push(apply(s, round));
    expect(fundingOf(s, 'sA')).toMatchObject({ matched: 10_000_000, pending: new Map() });
    expect(raisedOf(s, 'sA')).toBe(18_000_000);
    expect(s.funding.rounds).toBe(1);
    // Nothing left to match: no second round, and the same round never applies twice.
    expect(matchRound(s, ['sA', 'sB'], T0)).toBeNull();
    refusedWith('duplicate-op', () => applyPosting(s, round));

    entries.push(apply(s, pay(s, 'sA', K3, 2_500_000, 'sA-00000', 1, T0)));
    entries.push(apply(s, refundToPool(s, 'sA', T0)));
    expect(fundingOf(s, 'sA')).toMatchObject({ spent: 2_500_000, returned: 15_500_000 });
    expect(balance(s, 'pool')).toBe(15_500_000);
    expect(balance(s, 'escrow:sA')).toBe(0);
    // A settled public good takes no more gifts and no match.
    refusedWith('study-settled', () => contribute(s, 'sA', K2, 1, 'g6', T0));
    // The journal replayed gives the same funding state.
    expect(replay([...minted, ...entries]).funding).toEqual(s.funding);
  });

  it('refuses fund postings that break its rules', () => {
    const { s } = start();
    apply(s, contribute(s, 'sA', K1, 1_000_000, 'g1', T0));
    apply(s, contribute(s, 'sA', K2, 1_000_000, 'g2', T0));
    apply(s, fund(s, SPONSOR, 1_000_000, 'g3', T0));
    const good = matchRound(s, ['sA'], T0)!;
    // Not the next round, not named after its round, or paying a key: refused.
    refusedWith('invalid-posting', () => applyPosting(s, { ...good, refs: { round: 2 } }));
    refusedWith('invalid-posting', () => applyPosting(s, { ...good, op_id: 'round:x' }));
    refusedWith('invalid-posting', () =>
      applyPosting(s, {
        ...good,
        entries: [
          { account: 'pool', amount: -1 },
          { account: keyAccount(K1), amount: 1 },
        ],
      }),
    );
    // A gift must come from the key its refs name, into the escrow its refs name.
    const gift = contribute(s, 'sA', K1, 5, 'g4', T0)!;
    refusedWith('invalid-posting', () => applyPosting(s, { ...gift, refs: { ...gift.refs, key: K2 } }));
    refusedWith('invalid-posting', () =>
      applyPosting(s, { ...gift, refs: { ...gift.refs, study_id: 'sB' } }),
    );
    apply(s, refund(s, 'sB', K3, T0));
    refusedWith('study-settled', () => contribute(s, 'sB', K1, 5, 'g5', T0));
  });
});
