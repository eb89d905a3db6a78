import { createUser } from '@nats-io/nkeys';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Account,
  escrowAccount,
  formatSim,
  isAccount,
  keyAccount,
  LedgerError,
  type LedgerErrorCode,
  sim,
  unbondingAccount,
} from '../../src/ledger/accounts.ts';
import {
  entryHash,
  GENESIS_HASH,
  type JournalEntry,
  type Posting,
  postingSums,
} from '../../src/ledger/posting.ts';
import {
  applied,
  applyEntry,
  applyPosting,
  balance,
  contribute,
  DEFAULT_FAUCET_POLICY,
  dueReleases,
  emptyState,
  escrow,
  type FaucetPolicy,
  faucet,
  fund,
  type LedgerState,
  matchRound,
  mint,
  pay,
  refund,
  refundToPool,
  release,
  replay,
  settled,
  slash,
  stake,
  stakeOf,
  supply,
  transfer,
  unstake,
  utcDay,
} from '../../src/ledger/rules.ts';
import { refusedWith } from '../fixtures/ledger.ts';

const [A, B, C, D] = Array.from({ length: 4 }, () => createUser().getPublicKey()) as [
  string,
  string,
  string,
  string,
];
const T0 = Date.UTC(2025, 5, 1, 12);
const DAY = 86_400_000;

/** Runs `fn`, expecting a LedgerError with `code`. */

function apply(s: LedgerState, p: Posting | null): JournalEntry {
  expect(p).not.toBeNull();
  return applyPosting(s, p!);
}

/** A state where A and B hold 1,000 SIM and the faucet 10,000. */
function funded(): LedgerState {
  const s = emptyState();
  apply(s, mint(keyAccount(A), sim(1000), 'mint:a', T0));
  apply(s, mint(keyAccount(B), sim(1000), 'mint:b', T0));
  apply(s, mint('faucet', sim(10_000), 'mint:faucet', T0));
  return s;
}

const snapshot = (s: LedgerState) => ({
  balances: [...s.balances],
  applied: [...s.applied],
  unbonding: [...s.unbonding],
  faucet: [...s.faucet.perKeyDay, ...s.faucet.perKeyTotal, ...s.faucet.perDay],
  funding: structuredClone(s.funding),
  lastSeq: s.lastSeq,
  lastHash: s.lastHash,
});

describe('amounts and accounts', () => {
  it('parses SIM amounts into µSIM and refuses what is not one', () => {
    expect(sim('1.5')).toBe(1_500_000);
    expect(sim(' 2 ')).toBe(2_000_000);
    expect(sim('0.000001')).toBe(1);
    expect(sim(3.25)).toBe(3_250_000);
    expect(sim('9007199254.740991')).toBe(Number.MAX_SAFE_INTEGER);
    for (const bad of [
      '-1',
      '1.0000001',
      'NaN',
      '',
      '1e3',
      '.5',
      '1,5',
      '9007199254.740992',
      Number.NaN,
      -2,
    ]) {
      refusedWith('invalid-amount', () => sim(bad));
    }
  });

  it('formats µSIM as SIM', () => {
    expect(formatSim(1_500_000)).toBe('1.500000');
    expect(formatSim(1_500_000, { trim: true })).toBe('1.5');
    expect(formatSim(2_000_000, { trim: true })).toBe('2');
    expect(formatSim(-1)).toBe('-0.000001');
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n) => {
        expect(sim(formatSim(n))).toBe(n);
        expect(sim(formatSim(n, { trim: true }))).toBe(n);
      }),
    );
  });

  it('accepts only well-formed account ids', () => {
    expect(isAccount(keyAccount(A))).toBe(true);
    expect(isAccount(escrowAccount('study-1'))).toBe(true);
    expect(isAccount('treasury')).toBe(true);
    for (const bad of [
      'key:nope',
      `key:${A.slice(0, -1)}X`,
      `key:${A.replace('U', 'A')}`,
      'escrow:a.b',
      'mint',
    ]) {
      expect(isAccount(bad)).toBe(false);
    }
    refusedWith('invalid-account', () => keyAccount('UABC'));
    refusedWith('invalid-account', () => escrowAccount('has space'));
  });
});

describe('applying postings', () => {
  it('mints out of the treasury, the only account allowed below zero', () => {
    const s = funded();
    expect(balance(s, 'treasury')).toBe(-sim(12_000));
    expect(supply(s)).toBe(sim(12_000));
    refusedWith('invalid-account', () => mint('treasury', 1, 'm', T0));
  });

  it('refuses unbalanced, overdrawing, repeated and misdirected postings, leaving the state as it was', () => {
    const s = funded();
    const before = snapshot(s);
    const p = (entries: Posting['entries'], kind: Posting['kind'] = 'transfer', op_id = 'x'): Posting => ({
      op_id,
      kind,
      entries,
      at: T0,
      memo: null,
      refs: {},
    });
    refusedWith('unbalanced', () =>
      applyPosting(
        s,
        p([
          { account: keyAccount(A), amount: -5 },
          { account: keyAccount(B), amount: 4 },
        ]),
      ),
    );
    refusedWith('insufficient-funds', () =>
      applyPosting(
        s,
        p([
          { account: keyAccount(C), amount: -1 },
          { account: keyAccount(A), amount: 1 },
        ]),
      ),
    );
    refusedWith('duplicate-op', () =>
      applyPosting(
        s,
        p(
          [
            { account: keyAccount(A), amount: -1 },
            { account: keyAccount(B), amount: 1 },
          ],
          'transfer',
          'mint:a',
        ),
      ),
    );
    // Only a mint may take from the treasury.
    refusedWith('invalid-posting', () =>
      applyPosting(
        s,
        p([
          { account: 'treasury', amount: -1 },
          { account: keyAccount(A), amount: 1 },
        ]),
      ),
    );
    refusedWith('invalid-posting', () => applyPosting(s, p([], 'transfer')));
    refusedWith('invalid-amount', () =>
      applyPosting(
        s,
        p([
          { account: keyAccount(A), amount: -0.5 },
          { account: keyAccount(B), amount: 0.5 },
        ]),
      ),
    );
    expect(snapshot(s)).toEqual(before);
  });

  it('chains entries by hash, and a replay refuses a tampered, reordered or missing entry', () => {
    const s = emptyState();
    const entries = [
      applyPosting(s, mint(keyAccount(A), 10, 'm1', T0)),
      applyPosting(s, mint(keyAccount(B), 20, 'm2', T0)),
    ];
    entries.push(applyPosting(s, transfer(s, A, B, 3, 't1', T0)!));
    expect(entries[0]!.prev_hash).toBe(GENESIS_HASH);
    for (let i = 1; i < entries.length; i++) expect(entries[i]!.prev_hash).toBe(entries[i - 1]!.hash);
    for (const e of entries) expect(e.hash).toBe(entryHash(e.prev_hash, e.posting));
    expect(replay(entries).balances).toEqual(s.balances);
    expect(s.lastSeq).toBe(3);
    expect(s.lastHash).toBe(entries[2]!.hash);

    const tampered = structuredClone(entries);
    tampered[1]!.posting.entries[1]!.amount = 21;
    tampered[1]!.posting.entries[0]!.amount = -21;
    refusedWith('bad-hash', () => replay(tampered));
    refusedWith('broken-link', () => replay([entries[0]!, { ...entries[2]!, seq: 2 }]));
    refusedWith('bad-seq', () => replay([entries[1]!]));
    const partial = emptyState();
    applyEntry(partial, entries[0]!);
    refusedWith('bad-seq', () => applyEntry(partial, entries[0]!));
  });
});

describe('operation builders', () => {
  it('transfer: moves between keys once per op id, within the balance', () => {
    const s = funded();
    apply(s, transfer(s, A, C, sim(10), 't1', T0));
    expect(balance(s, keyAccount(C))).toBe(sim(10));
    expect(balance(s, keyAccount(A))).toBe(sim(990));
    expect(transfer(s, A, C, sim(10), 't1', T0)).toBeNull();
    expect(applied(s, 't1')).toBe(true);
    refusedWith('insufficient-funds', () => transfer(s, C, A, sim(10) + 1, 't2', T0));
    refusedWith('invalid-account', () => transfer(s, A, A, 1, 't3', T0));
    refusedWith('invalid-amount', () => transfer(s, A, C, 0, 't4', T0));
    refusedWith('invalid-amount', () => transfer(s, A, C, 1.5, 't4', T0));
  });

  it('faucet: a fixed grant per request, capped per key per day, per key ever and per day overall', () => {
    const policy: FaucetPolicy = { grant: 100, perKeyPerDay: 1, perKeyTotal: 2, globalPerDay: 250 };
    const s = emptyState();
    refusedWith('insufficient-funds', () => faucet(s, A, T0, policy));
    apply(s, mint('faucet', 10_000, 'fill', T0));
    const first = faucet(s, A, T0, policy);
    expect(first.op_id).toBe(`faucet:${A}:${utcDay(T0)}:1`);
    apply(s, first);
    expect(balance(s, keyAccount(A))).toBe(100);
    refusedWith('faucet-cap', () => faucet(s, A, T0 + 1000, policy)); // once a day
    apply(s, faucet(s, A, T0 + DAY, policy));
    refusedWith('faucet-cap', () => faucet(s, A, T0 + 2 * DAY, policy)); // twice ever
    apply(s, faucet(s, B, T0 + 2 * DAY, policy));
    apply(s, faucet(s, C, T0 + 2 * DAY, policy));
    refusedWith('faucet-cap', () => faucet(s, D, T0 + 2 * DAY, policy)); // 250 a day overall
    apply(s, faucet(s, D, T0 + 3 * DAY, policy));
    expect(DEFAULT_FAUCET_POLICY.grant).toBe(sim(100));
  });

  it('escrow, pay, refund: pays at most what the escrow holds, refunds the rest once and marks it settled', () => {
    const s = funded();
    apply(s, escrow(s, 'st1', A, sim(10), T0));
    expect(escrow(s, 'st1', A, sim(10), T0)).toBeNull(); // once per study
    expect(balance(s, escrowAccount('st1'))).toBe(sim(10));
    refusedWith('insufficient-funds', () => escrow(s, 'st2', C, 1, T0));

    apply(s, pay(s, 'st1', C, sim(4), 'st1-00000', 1, T0));
    expect(pay(s, 'st1', C, sim(4), 'st1-00000', 1, T0)).toBeNull(); // once per execution
    const capped = pay(s, 'st1', D, sim(8), 'st1-00001', 1, T0)!;
    expect(postingSums(capped).credits).toBe(sim(6));
    apply(s, capped);
    expect(pay(s, 'st1', D, 1, 'st1-00002', 1, T0)).toBeNull(); // nothing left

    expect(settled(s, 'st1')).toBe(false);
    const marker = refund(s, 'st1', A, T0)!;
    expect(marker.entries).toEqual([]); // nothing left to refund: recorded all the same
    apply(s, marker);
    expect(settled(s, 'st1')).toBe(true);
    expect(refund(s, 'st1', A, T0)).toBeNull();

    apply(s, escrow(s, 'st3', B, sim(5), T0));
    apply(s, pay(s, 'st3', C, sim(1), 'st3-00000', 2, T0));
    apply(s, refund(s, 'st3', B, T0));
    expect(balance(s, keyAccount(B))).toBe(sim(999));
    expect(balance(s, escrowAccount('st3'))).toBe(0);
    expect(pay(s, 'st3', C, sim(1), 'st3-00001', 1, T0)).toBeNull();

    // A study settled before it was escrowed cannot take a budget any more.
    apply(s, refund(s, 'st4', B, T0));
    refusedWith('study-settled', () => escrow(s, 'st4', B, 1, T0));
  });

  it('stake, unstake, release: unbonding returns to the key only when due', () => {
    const s = funded();
    apply(s, stake(s, A, sim(100), 's1', T0));
    expect(stakeOf(s, A)).toBe(sim(100));
    refusedWith('insufficient-funds', () => unstake(s, A, sim(101), 'u1', T0, 1000));
    apply(s, unstake(s, A, sim(40), 'u1', T0, 1000));
    expect(balance(s, unbondingAccount(A))).toBe(sim(40));
    expect(dueReleases(s, T0 + 999)).toEqual([]);
    refusedWith('not-due', () => release(s, 'u1', T0 + 999));
    expect(dueReleases(s, T0 + 1000).map((u) => u.op_id)).toEqual(['u1']);
    apply(s, release(s, 'u1', T0 + 1000));
    expect(release(s, 'u1', T0 + 2000)).toBeNull();
    refusedWith('unknown-op', () => release(s, 'u9', T0));
    expect(balance(s, keyAccount(A))).toBe(sim(940));
    expect(stakeOf(s, A)).toBe(sim(60));
    expect(s.unbonding.size).toBe(0);
  });

  it('slash: takes stake into the treasury, never more than staked, once per execution', () => {
    const s = funded();
    expect(slash(s, C, 5, 'j', 1, T0)).toBeNull(); // no stake
    apply(s, stake(s, A, sim(3), 's1', T0));
    const p = slash(s, A, sim(5), 'j', 1, T0)!;
    expect(postingSums(p).credits).toBe(sim(3));
    apply(s, p);
    expect(stakeOf(s, A)).toBe(0);
    expect(supply(s)).toBe(sim(12_000) - sim(3));
    expect(slash(s, A, 1, 'j', 1, T0)).toBeNull();
  });

  it('slash reaches stake still unbonding, and the release then returns only what is left of it', () => {
    const s = funded();
    apply(s, stake(s, A, sim(10), 's1', T0));
    apply(s, unstake(s, A, sim(4), 'u1', T0, 1000));
    apply(s, unstake(s, A, sim(4), 'u2', T0 + 1, 1000));
    // 2 SIM still bonded, 8 unbonding: a slash of 5 takes the 2, then 3 from the latest unbonding.
    apply(s, slash(s, A, sim(5), 'j', 1, T0 + 2)!);
    expect(stakeOf(s, A)).toBe(0);
    expect(balance(s, unbondingAccount(A))).toBe(sim(5));
    expect(s.unbonding.get('u2')?.amount).toBe(sim(1));
    expect(s.unbonding.get('u1')?.amount).toBe(sim(4));
    apply(s, release(s, 'u1', T0 + 2000)!);
    apply(s, release(s, 'u2', T0 + 2000)!);
    expect(balance(s, unbondingAccount(A))).toBe(0);
    expect(balance(s, keyAccount(A))).toBe(sim(1000) - sim(10) + sim(5));
    // A slash larger than all of it takes everything and no more.
    apply(s, stake(s, A, sim(1), 's2', T0));
    apply(s, unstake(s, A, sim(1), 'u3', T0, 1000));
    expect(postingSums(slash(s, A, sim(50), 'j', 2, T0)!).credits).toBe(sim(1));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Properties over random operation sequences

const KEYS = [A, B, C, D];
const STUDIES = ['s0', 's1', 's2'];
const key = fc.integer({ min: 0, max: KEYS.length - 1 });
const study = fc.integer({ min: 0, max: STUDIES.length - 1 });
const amount = fc.oneof(fc.integer({ min: 1, max: 2_000 }), fc.integer({ min: 1, max: 200_000 }));
const opNo = fc.integer({ min: 0, max: 6 }); // few op ids, so retries happen

const faucetOp = fc.record({ t: fc.constant('faucet' as const), k: key });
// The commons: gifts to a study or to the pool, funding rounds, a public good's rest back to the pool.
const giftOp = fc.record({ t: fc.constant('contribute' as const), st: study, k: key, amount, n: opNo });
const poolOp = fc.record({ t: fc.constant('fund' as const), k: key, amount, n: opNo });
const roundOp = fc.record({ t: fc.constant('round' as const) });
const toPoolOp = fc.record({ t: fc.constant('refundToPool' as const), st: study });
const payOp = fc.record({
  t: fc.constant('pay' as const),
  st: study,
  k: key,
  amount,
  job: opNo,
  attempt: opNo,
});
const advance = (max: number) => fc.record({ t: fc.constant('advance' as const), ms: fc.nat(max) });
const op = fc.oneof(
  fc.record({ t: fc.constant('mint' as const), k: key, amount }),
  faucetOp,
  fc.record({ t: fc.constant('transfer' as const), k: key, to: key, amount, n: opNo }),
  fc.record({ t: fc.constant('escrow' as const), st: study, k: key, amount }),
  payOp,
  fc.record({ t: fc.constant('refund' as const), st: study, k: key }),
  fc.record({ t: fc.constant('stake' as const), k: key, amount, n: opNo }),
  fc.record({ t: fc.constant('unstake' as const), k: key, amount, n: opNo, ms: fc.nat(3 * DAY) }),
  fc.record({ t: fc.constant('release' as const), pick: fc.nat() }),
  fc.record({ t: fc.constant('slash' as const), k: key, amount, job: opNo, attempt: opNo }),
  giftOp,
  poolOp,
  roundOp,
  toPoolOp,
  advance(DAY),
  fc.record({ t: fc.constant('repeat' as const), pick: fc.nat() }),
);
/** Mostly faucet requests, hours apart: sequences that run into every faucet cap. */
const faucetOps = fc.array(
  fc.oneof({ arbitrary: faucetOp, weight: 4 }, { arbitrary: advance(DAY / 3), weight: 1 }),
  {
    minLength: 1,
    maxLength: 80,
  },
);
/** Mostly gifts, then rounds, payments and ends of public goods: sequences that run many funding rounds. */
const commonsOps = fc.array(
  fc.oneof(
    { arbitrary: giftOp, weight: 8 },
    { arbitrary: poolOp, weight: 3 },
    { arbitrary: roundOp, weight: 3 },
    { arbitrary: payOp, weight: 2 },
    { arbitrary: toPoolOp, weight: 1 },
  ),
  { minLength: 20, maxLength: 60 },
);
type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

const POLICY: FaucetPolicy = { grant: 1_000, perKeyPerDay: 2, perKeyTotal: 3, globalPerDay: 5_000 };

function build(s: LedgerState, o: Op, now: number, log: JournalEntry[]): Posting | null {
  const k = KEYS[(o as { k?: number }).k ?? 0]!;
  switch (o.t) {
    case 'mint':
      return mint(keyAccount(k), o.amount, `mint:${log.length}`, now);
    case 'faucet':
      return faucet(s, k, now, POLICY);
    case 'transfer':
      return transfer(s, k, KEYS[o.to]!, o.amount, `t:${o.n}`, now);
    case 'escrow':
      return escrow(s, STUDIES[o.st]!, k, o.amount, now);
    case 'pay':
      return pay(s, STUDIES[o.st]!, k, o.amount, `${STUDIES[o.st]}-${o.job}`, o.attempt, now);
    case 'refund':
      return refund(s, STUDIES[o.st]!, k, now);
    case 'stake':
      return stake(s, k, o.amount, `stake:${o.n}`, now);
    case 'unstake':
      return unstake(s, k, o.amount, `unstake:${o.n}`, now, o.ms);
    case 'release': {
      const pending = [...s.unbonding.keys()];
      return pending.length ? release(s, pending[o.pick % pending.length]!, now) : null;
    }
    case 'slash':
      return slash(s, k, o.amount, `job-${o.job}`, o.attempt, now);
    case 'contribute':
      return contribute(s, STUDIES[o.st]!, k, o.amount, `gift:${o.n}`, now);
    case 'fund':
      return fund(s, k, o.amount, `fund:${o.n}`, now);
    case 'round':
      return matchRound(s, STUDIES, now);
    case 'refundToPool':
      return refundToPool(s, STUDIES[o.st]!, now);
    default:
      return null;
  }
}

const EXPECTED_REFUSALS: ReadonlySet<LedgerErrorCode> = new Set([
  'insufficient-funds',
  'faucet-cap',
  'not-due',
  'study-settled',
  'invalid-account', // a transfer to the same key
]);

interface Run {
  state: LedgerState;
  log: JournalEntry[];
}

/** Runs the operations, checking after every step what must always hold. */
function run(ops: Op[]): Run {
  const s = emptyState();
  const log: JournalEntry[] = [];
  let now = T0;
  for (const k of KEYS) log.push(applyPosting(s, mint(keyAccount(k), 50_000, `seed:${k}`, now)));
  log.push(applyPosting(s, mint('faucet', 20_000, 'seed:faucet', now)));
  for (const o of ops) {
    if (o.t === 'advance') {
      now += o.ms;
      continue;
    }
    if (o.t === 'repeat') {
      // A posting applied before never applies again, and trying leaves the state as it was.
      const again = log[o.pick % log.length]!.posting;
      const before = snapshot(s);
      refusedWith('duplicate-op', () => applyPosting(s, again));
      expect(snapshot(s)).toEqual(before);
      continue;
    }
    let p: Posting | null;
    try {
      p = build(s, o, now, log);
    } catch (err) {
      if (!(err instanceof LedgerError) || !EXPECTED_REFUSALS.has(err.code)) throw err;
      continue;
    }
    if (!p) continue;
    const { credits, debits } = postingSums(p);
    expect(credits).toBe(debits);
    if (p.kind === 'release') expect(p.at).toBeGreaterThanOrEqual(p.refs.release_at!); // never before due
    log.push(applyPosting(s, p)); // what a builder returns always applies
    let total = 0;
    for (const [account, b] of s.balances) {
      total += b;
      if (account !== 'treasury') expect(b).toBeGreaterThan(0);
    }
    expect(total).toBe(0);
  }
  return { state: s, log };
}

const sumWhere = (log: JournalEntry[], pred: (p: Posting) => boolean, account: (p: Posting) => Account) =>
  log
    .map((e) => e.posting)
    .filter(pred)
    .reduce((sum, p) => sum + (p.entries.find((e) => e.account === account(p))?.amount ?? 0), 0);

describe('ledger properties over random operation sequences', () => {
  const ops = fc.array(op, { minLength: 1, maxLength: 120 });

  it('keeps every posting balanced and every balance but the treasury’s ≥ 0; repeated op ids apply once', () => {
    fc.assert(
      fc.property(ops, (o) => {
        const { state, log } = run(o);
        expect(new Set(log.map((e) => e.posting.op_id)).size).toBe(log.length);
        expect(state.applied.size).toBe(log.length);
      }),
      { numRuns: 300 },
    );
  });

  it('never pays out of an escrow more than was put in: Σ pay + refund = escrowed once settled', () => {
    fc.assert(
      fc.property(fc.oneof(ops, commonsOps), (o) => {
        const { state, log } = run(o);
        for (const st of STUDIES) {
          const of = (kind: string) => (p: Posting) => p.kind === kind && p.refs.study_id === st;
          const acct = () => escrowAccount(st);
          // What went in: a payer's escrow, gifts and funding rounds' matches.
          const escrowed = sumWhere(log, (p) => p.kind === 'escrow' || p.kind === 'fund', acct);
          const paid = 0 - sumWhere(log, of('pay'), acct);
          const refunded = 0 - sumWhere(log, of('refund'), acct);
          expect(paid).toBeLessThanOrEqual(escrowed);
          expect(paid + refunded + balance(state, escrowAccount(st))).toBe(escrowed);
          if (settled(state, st)) expect(paid + refunded).toBe(escrowed);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('keeps the commons’ books: matches, gifts, spending and pending gifts add up to what the journal moved', () => {
    fc.assert(
      fc.property(fc.oneof(ops, commonsOps), (o) => {
        const { state, log } = run(o);
        const postings = log.map((e) => e.posting);
        const rounds = postings.filter((p) => p.kind === 'fund' && p.refs.round !== undefined);
        expect(state.funding.rounds).toBe(rounds.length);
        expect(rounds.map((p) => p.refs.round)).toEqual(rounds.map((_, i) => i + 1));
        const toPool = sumWhere(
          log,
          (p) => p.kind === 'fund' && p.refs.round === undefined,
          () => 'pool',
        );
        expect([...state.funding.pool.values()].reduce((a, b) => a + b, 0)).toBe(toPool);
        for (const [st, f] of state.funding.studies) {
          const acct = () => escrowAccount(st);
          expect(f.matched).toBe(sumWhere(log, (p) => rounds.includes(p), acct));
          // A public good is spent from its first gift on (these sequences also escrow payers' budgets into it).
          const paid = 0 - sumWhere(log, (p) => p.kind === 'pay', acct);
          const escrowed = postings.some((p) => p.kind === 'escrow' && p.refs.study_id === st);
          if (escrowed) expect(f.spent).toBeLessThanOrEqual(paid);
          else expect(f.spent).toBe(paid);
          for (const [k, v] of f.pending) expect(v).toBeLessThanOrEqual(f.contributed.get(k)!);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('holds the faucet caps: per key per UTC day, per key ever, per day overall', () => {
    fc.assert(
      fc.property(fc.oneof(ops, faucetOps), (o) => {
        const { log } = run(o);
        const grants = log.map((e) => e.posting).filter((p) => p.kind === 'faucet');
        const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map());
        for (const n of count(grants.map((p) => `${p.refs.key} ${utcDay(p.at)}`)).values()) {
          expect(n).toBeLessThanOrEqual(POLICY.perKeyPerDay);
        }
        for (const n of count(grants.map((p) => p.refs.key!)).values()) {
          expect(n).toBeLessThanOrEqual(POLICY.perKeyTotal);
        }
        for (const n of count(grants.map((p) => utcDay(p.at))).values()) {
          expect(n * POLICY.grant).toBeLessThanOrEqual(POLICY.globalPerDay);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('replays its journal into the same state, and a replay refuses any tampered entry', () => {
    fc.assert(
      fc.property(
        fc.oneof(ops, commonsOps),
        fc.nat(),
        fc.integer({ min: 1, max: 1000 }),
        (o, pick, delta) => {
          const { state, log } = run(o);
          for (const e of log) expect(e.hash).toBe(entryHash(e.prev_hash, e.posting));
          const again = replay(log);
          expect(snapshot(again)).toEqual(snapshot(state));

          // Move `delta` µSIM more through one entry: still balanced, but the hash no longer recomputes.
          const tampered = structuredClone(log);
          const victim = tampered[pick % tampered.length]!.posting;
          const [debit, credit] = [...victim.entries].sort((a, b) => a.amount - b.amount);
          if (!debit || !credit) return;
          debit.amount -= delta;
          credit.amount += delta;
          refusedWith('bad-hash', () => replay(tampered));
        },
      ),
      { numRuns: 200 },
    );
  });
});
