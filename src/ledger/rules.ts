/**
 * The ledger's rules (pure: no IO, time passed in). A {@link LedgerState} is what the journal's entries add up to;
 * {@link applyEntry} / {@link applyPosting} are the only ways it changes. Operation builders read a state and return
 * the posting that performs the operation, null when there is nothing to do (its op id is already applied, nothing is
 * left to pay), or throw a {@link LedgerError}; the journal appends what they return.
 *
 * Invariants every applied posting keeps: it balances (Σ amounts = 0), no account but `treasury` goes below zero,
 * its op id was never applied before, and its entries move SIM only the way its kind allows (only `mint` debits the
 * treasury, `pay` goes from escrow to a key, …). So Σ of all balances is always 0 and −treasury is the supply.
 */
import {
  type Account,
  checkAccount,
  checkAmount,
  escrowAccount,
  isAccount,
  keyAccount,
  LedgerError,
  MICRO_PER_SIM,
  stakeAccount,
  unbondingAccount,
} from './accounts.ts';
import { emptyFunding, type FundingState, type FundingView, trackFunding } from './funding.ts';
import {
  chainEntry,
  type Entry,
  entryHash,
  GENESIS_HASH,
  isBalanced,
  type JournalEntry,
  MAX_ROUND_STUDIES,
  OpId,
  type Posting,
  type PostingKind,
  type Refs,
} from './posting.ts';
import { largestMatches, quadraticMatch } from './quadratic.ts';

/** Stake on its way back to its key, created by an unstake and ended by its release. */
export interface Unbonding {
  /** The unstake's op id; the release's op id is `release:<op_id>`. */
  op_id: string;
  key: string;
  amount: number;
  release_at: number;
}

export interface FaucetUsage {
  /** Grants per `<key> <UTC day>`. */
  perKeyDay: Map<string, number>;
  /** Grants per key, ever. */
  perKeyTotal: Map<string, number>;
  /** µSIM granted per UTC day (`YYYY-MM-DD`), all keys together. */
  perDay: Map<string, number>;
}

export interface LedgerState {
  /** Non-zero balances only (a missing account holds 0). */
  balances: Map<Account, number>;
  /** Applied op ids → the seq of the entry that applied them. */
  applied: Map<string, number>;
  faucet: FaucetUsage;
  /** Pending unbondings by their unstake's op id. */
  unbonding: Map<string, Unbonding>;
  /** The Simulation Commons: contributions, matches, and what public goods spent (funding.ts). */
  funding: FundingState;
  /** Seq and hash of the last entry (0 and {@link GENESIS_HASH} for an empty ledger). */
  lastSeq: number;
  lastHash: string;
}

/** A state for reading only (what the journal hands out). */
export interface LedgerView {
  readonly balances: ReadonlyMap<Account, number>;
  readonly applied: ReadonlyMap<string, number>;
  readonly faucet: {
    readonly perKeyDay: ReadonlyMap<string, number>;
    readonly perKeyTotal: ReadonlyMap<string, number>;
    readonly perDay: ReadonlyMap<string, number>;
  };
  readonly unbonding: ReadonlyMap<string, Readonly<Unbonding>>;
  readonly funding: FundingView;
  readonly lastSeq: number;
  readonly lastHash: string;
}

export function emptyState(): LedgerState {
  return {
    balances: new Map(),
    applied: new Map(),
    faucet: { perKeyDay: new Map(), perKeyTotal: new Map(), perDay: new Map() },
    unbonding: new Map(),
    funding: emptyFunding(),
    lastSeq: 0,
    lastHash: GENESIS_HASH,
  };
}

export const balance = (s: LedgerView, account: Account): number => s.balances.get(account) ?? 0;
export const stakeOf = (s: LedgerView, key: string): number => balance(s, stakeAccount(key));
export const applied = (s: LedgerView, opId: string): boolean => s.applied.has(opId);
/** SIM in existence: everything ever minted, less what was slashed back into the treasury. */
export const supply = (s: LedgerView): number => -balance(s, 'treasury');

/** The UTC day of `now`, as `YYYY-MM-DD` (the faucet's caps reset at UTC midnight). */
export const utcDay = (now: number): string => new Date(now).toISOString().slice(0, 10);

// ---------------------------------------------------------------------------------------------------------------
// Applying

type AccountClass = 'key' | 'stake' | 'unbonding' | 'escrow' | 'faucet' | 'treasury' | 'pool';
const classOf = (a: Account): AccountClass => {
  const colon = a.indexOf(':');
  return (colon < 0 ? a : a.slice(0, colon)) as AccountClass;
};
const idOf = (a: Account): string => a.slice(a.indexOf(':') + 1);

/** Where each kind may take SIM from (debit) and put it (credit). Only a mint debits the treasury. */
const FLOWS: Record<PostingKind, { from: readonly AccountClass[]; to: readonly AccountClass[] }> = {
  mint: { from: ['treasury'], to: ['key', 'faucet', 'pool', 'escrow'] },
  faucet: { from: ['faucet'], to: ['key'] },
  transfer: { from: ['key'], to: ['key'] },
  escrow: { from: ['key'], to: ['escrow'] },
  pay: { from: ['escrow'], to: ['key'] },
  refund: { from: ['escrow'], to: ['key', 'pool'] },
  stake: { from: ['key'], to: ['stake'] },
  unstake: { from: ['stake'], to: ['unbonding'] },
  release: { from: ['unbonding'], to: ['key'] },
  slash: { from: ['stake', 'unbonding'], to: ['treasury'] },
  fund: { from: ['key', 'pool'], to: ['pool', 'escrow'] },
};

/** Kinds whose entries must all name the same nkey (SIM moves between one key's own accounts). */
const SAME_KEY: ReadonlySet<PostingKind> = new Set(['stake', 'unstake', 'release']);

/**
 * A slash that reaches into unbonding stake takes it from the key's pending unbondings, latest first (the one asked
 * for most recently is the most likely escape), so every release still moves exactly what its unbonding holds.
 */
function slashUnbonding(s: LedgerState, key: string, amount: number): void {
  let left = amount;
  const pending = [...s.unbonding.values()]
    .filter((u) => u.key === key)
    .sort((a, b) => b.release_at - a.release_at);
  for (const u of pending) {
    if (left <= 0) break;
    const take = Math.min(left, u.amount);
    left -= take;
    if (take === u.amount) s.unbonding.delete(u.op_id);
    else s.unbonding.set(u.op_id, { ...u, amount: u.amount - take });
  }
}

const invalid = (p: Posting, why: string) =>
  new LedgerError('invalid-posting', `posting ${p.op_id} (${p.kind}): ${why}`);

/** The one debit and one credit of a two-entry posting (the shape every kind but a pay-out of many has). */
function pair(p: Posting): { from: Entry; to: Entry } {
  const [a, b] = p.entries;
  if (p.entries.length !== 2 || !a || !b || a.amount + b.amount !== 0)
    throw invalid(p, 'expected two entries');
  return a.amount < 0 ? { from: a, to: b } : { from: b, to: a };
}

/** The unbonding a release ends (its op id is `release:<unstake op id>`). */
function releasedBy(s: LedgerView, p: Posting): Readonly<Unbonding> | undefined {
  return p.op_id.startsWith('release:') ? s.unbonding.get(p.op_id.slice('release:'.length)) : undefined;
}

/** Checks the parts of a posting the kind gives meaning to (faucet usage, unbonding). */
function checkKind(s: LedgerView, p: Posting): void {
  if (p.kind === 'faucet') {
    if (idOf(pair(p).to.account) !== p.refs.key) throw invalid(p, 'refs.key must name the key granted to');
  } else if (p.kind === 'unstake') {
    pair(p);
    if (p.refs.release_at === undefined) throw invalid(p, 'refs.release_at is missing');
  } else if (p.kind === 'fund') {
    checkFund(s, p);
  } else if (p.kind === 'release') {
    const u = releasedBy(s, p);
    if (!u) throw new LedgerError('unknown-op', `posting ${p.op_id}: no pending unbonding to release`);
    const { from, to } = pair(p);
    if (idOf(from.account) !== u.key || to.amount !== u.amount) {
      throw invalid(p, `must release exactly ${u.amount} µSIM of ${u.key}`);
    }
  }
}

/**
 * A `fund` posting is one of three: a key's gift to the pool (refs.key names it), a key's gift to a study's escrow
 * (refs.key and refs.study_id name them; not to a settled study), or a funding round (refs.round = the next round,
 * op id `round:<n>`: the pool to unsettled escrows only).
 */
function checkFund(s: LedgerView, p: Posting): void {
  const round = p.refs.round;
  if (round !== undefined) {
    if (round !== s.funding.rounds + 1)
      throw invalid(p, `round ${round} where ${s.funding.rounds + 1} comes next`);
    if (p.op_id !== roundOpId(round)) throw invalid(p, `a round's op id is ${roundOpId(round)}`);
    // A round is the pool's, not a gift: refs naming a key or a study would make it read as both.
    if (p.refs.key !== undefined || p.refs.study_id !== undefined)
      throw invalid(p, 'a round names no key or study in its refs');
    for (const e of p.entries) {
      if (e.amount < 0 && e.account !== 'pool') throw invalid(p, 'a round pays out of the pool only');
      if (e.amount > 0 && classOf(e.account) !== 'escrow') throw invalid(p, 'a round pays into escrows only');
      if (e.amount > 0 && settled(s, idOf(e.account)))
        throw new LedgerError(
          'study-settled',
          `posting ${p.op_id}: study ${idOf(e.account)} is already settled`,
        );
    }
    return;
  }
  const { from, to } = pair(p);
  if (classOf(from.account) !== 'key' || idOf(from.account) !== p.refs.key)
    throw invalid(p, 'a gift comes from the key refs.key names');
  if (classOf(to.account) === 'escrow') {
    if (idOf(to.account) !== p.refs.study_id) throw invalid(p, 'refs.study_id must name the escrow given to');
    if (settled(s, p.refs.study_id))
      throw new LedgerError(
        'study-settled',
        `posting ${p.op_id}: study ${p.refs.study_id} is already settled`,
      );
  } else if (p.refs.study_id !== undefined) throw invalid(p, 'a gift to the pool names no study');
}

/**
 * Throws the {@link LedgerError} that applying `p` to `s` would meet, or returns when it would apply: an op id
 * applied before ('duplicate-op'), a bad account or amount, an unbalanced posting ('unbalanced'), a flow its kind
 * does not allow ('invalid-posting'), a balance that would go below zero ('insufficient-funds').
 */
export function checkPosting(s: LedgerView, p: Posting): void {
  if (s.applied.has(p.op_id)) throw new LedgerError('duplicate-op', `op ${p.op_id} is already applied`);
  if (!OpId.safeParse(p.op_id).success) throw invalid(p, 'bad op id');
  if (p.entries.length === 0 && p.kind !== 'refund') throw invalid(p, 'no entries');
  const flow = FLOWS[p.kind];
  if (!flow) throw invalid(p, 'unknown kind');
  const seen = new Set<string>();
  const keys = new Set<string>();
  for (const e of p.entries) {
    if (!isAccount(e.account)) throw new LedgerError('invalid-account', `posting ${p.op_id}: ${e.account}`);
    if (!Number.isSafeInteger(e.amount) || e.amount === 0) {
      throw new LedgerError('invalid-amount', `posting ${p.op_id}: ${e.account} ${e.amount}`);
    }
    if (seen.has(e.account)) throw invalid(p, `${e.account} appears twice`);
    seen.add(e.account);
    const cls = classOf(e.account);
    if (!(e.amount < 0 ? flow.from : flow.to).includes(cls)) {
      throw invalid(p, `a ${p.kind} may not ${e.amount < 0 ? 'debit' : 'credit'} ${cls} accounts`);
    }
    if (SAME_KEY.has(p.kind)) keys.add(idOf(e.account));
  }
  if (keys.size > 1) throw invalid(p, 'must move SIM between accounts of one key');
  if (!isBalanced(p)) throw new LedgerError('unbalanced', `posting ${p.op_id} does not sum to zero`);
  for (const e of p.entries) {
    const next = (s.balances.get(e.account) ?? 0) + e.amount;
    if (!Number.isSafeInteger(next)) throw new LedgerError('invalid-amount', `${e.account} would overflow`);
    if (next < 0 && e.account !== 'treasury') {
      throw new LedgerError(
        'insufficient-funds',
        `${e.account} holds ${s.balances.get(e.account) ?? 0} µSIM, ${-e.amount} needed`,
      );
    }
  }
  checkKind(s, p);
}

/** Applies a posting that {@link checkPosting} accepted (mutates `s`). */
function commit(s: LedgerState, p: Posting, seq: number): void {
  for (const e of p.entries) {
    const next = (s.balances.get(e.account) ?? 0) + e.amount;
    if (next === 0) s.balances.delete(e.account);
    else s.balances.set(e.account, next);
  }
  s.applied.set(p.op_id, seq);
  if (p.kind === 'faucet') {
    const key = p.refs.key!;
    const day = utcDay(p.at);
    const f = s.faucet;
    f.perKeyDay.set(`${key} ${day}`, (f.perKeyDay.get(`${key} ${day}`) ?? 0) + 1);
    f.perKeyTotal.set(key, (f.perKeyTotal.get(key) ?? 0) + 1);
    f.perDay.set(day, (f.perDay.get(day) ?? 0) + pair(p).to.amount);
  } else if (p.kind === 'unstake') {
    const { to } = pair(p);
    s.unbonding.set(p.op_id, {
      op_id: p.op_id,
      key: idOf(to.account),
      amount: to.amount,
      release_at: p.refs.release_at!,
    });
  } else if (p.kind === 'release') {
    s.unbonding.delete(p.op_id.slice('release:'.length));
  } else if (p.kind === 'slash') {
    for (const e of p.entries)
      if (e.amount < 0 && classOf(e.account) === 'unbonding') slashUnbonding(s, idOf(e.account), -e.amount);
  }
  trackFunding(s.funding, p);
}

/**
 * Appends `p` to the state's chain: checks it ({@link checkPosting}), applies it and returns the journal entry that
 * records it. Mutates `s` in place, all or nothing: a refused posting leaves `s` as it was.
 */
export function applyPosting(s: LedgerState, p: Posting): JournalEntry {
  checkPosting(s, p);
  const entry = chainEntry(s.lastSeq, s.lastHash, p);
  commit(s, p, entry.seq);
  s.lastSeq = entry.seq;
  s.lastHash = entry.hash;
  return entry;
}

/**
 * Applies a stored journal entry (mutates `s`, all or nothing): it must come next in the chain ('bad-seq'), link to
 * the last entry's hash ('broken-link'), carry its own hash ('bad-hash') and hold a posting that applies.
 */
export function applyEntry(s: LedgerState, entry: JournalEntry): void {
  if (entry.seq !== s.lastSeq + 1) {
    throw new LedgerError('bad-seq', `entry ${entry.seq} where ${s.lastSeq + 1} comes next`);
  }
  if (entry.prev_hash !== s.lastHash) {
    throw new LedgerError(
      'broken-link',
      `entry ${entry.seq} does not link to the hash of entry ${s.lastSeq}`,
    );
  }
  if (entryHash(entry.prev_hash, entry.posting) !== entry.hash) {
    throw new LedgerError('bad-hash', `entry ${entry.seq}: its hash does not recompute`);
  }
  checkPosting(s, entry.posting);
  commit(s, entry.posting, entry.seq);
  s.lastSeq = entry.seq;
  s.lastHash = entry.hash;
}

/** The state a sequence of entries adds up to (throws at the first that does not apply). */
export function replay(entries: Iterable<JournalEntry>): LedgerState {
  const s = emptyState();
  for (const e of entries) applyEntry(s, e);
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// Operation builders

function posting(
  kind: PostingKind,
  opId: string,
  entries: Entry[],
  now: number,
  refs: Refs = {},
  memo: string | null = null,
): Posting {
  if (!OpId.safeParse(opId).success) {
    throw new LedgerError('invalid-posting', `bad op id ${JSON.stringify(opId)}`);
  }
  if (!Number.isSafeInteger(now) || now < 0) throw new LedgerError('invalid-posting', `bad time ${now}`);
  return { op_id: opId, kind, entries, at: now, memo, refs };
}

/** Entries moving `amount` from one account to another. */
const move = (from: Account, to: Account, amount: number): Entry[] => [
  { account: from, amount: -amount },
  { account: to, amount },
];

function needFunds(s: LedgerView, account: Account, amount: number): void {
  const has = balance(s, account);
  if (has < amount) {
    throw new LedgerError('insufficient-funds', `${account} holds ${has} µSIM, ${amount} needed`);
  }
}

/** Creates `amount` µSIM in `to`, out of the treasury. */
export function mint(to: Account, amount: number, opId: string, now: number): Posting {
  if (checkAccount(to) === 'treasury')
    throw new LedgerError('invalid-account', 'cannot mint into the treasury');
  return posting('mint', opId, move('treasury', to, checkAmount(amount)), now);
}

export interface FaucetPolicy {
  /** µSIM per grant. */
  grant: number;
  /** Grants per key per UTC day. */
  perKeyPerDay: number;
  /** Grants per key, ever. */
  perKeyTotal: number;
  /** µSIM granted per UTC day, all keys together. */
  globalPerDay: number;
}

export const DEFAULT_FAUCET_POLICY: FaucetPolicy = {
  grant: 100 * MICRO_PER_SIM,
  perKeyPerDay: 1,
  perKeyTotal: 3,
  globalPerDay: 10_000 * MICRO_PER_SIM,
};

/**
 * One faucet grant to `key` (from the `faucet` account, which a mint fills), within the policy's caps. The op id
 * `faucet:<key>:<day>:<n>` numbers the key's grants of the day, so two concurrent requests cannot both pass a cap.
 */
export function faucet(
  s: LedgerView,
  key: string,
  now: number,
  policy: FaucetPolicy = DEFAULT_FAUCET_POLICY,
): Posting {
  const to = keyAccount(key);
  const day = utcDay(now);
  const today = s.faucet.perKeyDay.get(`${key} ${day}`) ?? 0;
  if (today >= policy.perKeyPerDay) {
    throw new LedgerError('faucet-cap', `${key} had its ${policy.perKeyPerDay} grant(s) for ${day}`);
  }
  if ((s.faucet.perKeyTotal.get(key) ?? 0) >= policy.perKeyTotal) {
    throw new LedgerError('faucet-cap', `${key} had all its ${policy.perKeyTotal} grants`);
  }
  if ((s.faucet.perDay.get(day) ?? 0) + policy.grant > policy.globalPerDay) {
    throw new LedgerError('faucet-cap', `the faucet gave out its ${policy.globalPerDay} µSIM for ${day}`);
  }
  needFunds(s, 'faucet', checkAmount(policy.grant));
  return posting('faucet', `faucet:${key}:${day}:${today + 1}`, move('faucet', to, policy.grant), now, {
    key,
  });
}

/** Moves SIM between two keys' spendable balances. */
export function transfer(
  s: LedgerView,
  from: string,
  to: string,
  amount: number,
  opId: string,
  now: number,
): Posting | null {
  const a = keyAccount(from);
  const b = keyAccount(to);
  if (applied(s, opId)) return null;
  if (a === b) throw new LedgerError('invalid-account', 'cannot transfer to the same key');
  needFunds(s, a, checkAmount(amount));
  return posting('transfer', opId, move(a, b, amount), now, { key: from });
}

/** Moves SIM from a key into the commons matching pool. */
export function fund(s: LedgerView, from: string, amount: number, opId: string, now: number): Posting | null {
  const a = keyAccount(from);
  if (applied(s, opId)) return null;
  needFunds(s, a, checkAmount(amount));
  return posting('fund', opId, move(a, 'pool', amount), now, { key: from });
}

/** A key's gift to a public good: into its escrow, counted for the next funding round's match. */
export function contribute(
  s: LedgerView,
  studyId: string,
  from: string,
  amount: number,
  opId: string,
  now: number,
): Posting | null {
  const a = keyAccount(from);
  const to = escrowAccount(studyId);
  if (applied(s, opId)) return null;
  if (settled(s, studyId)) throw new LedgerError('study-settled', `study ${studyId} is already settled`);
  needFunds(s, a, checkAmount(amount));
  return posting('fund', opId, move(a, to, amount), now, { study_id: studyId, key: from });
}

export const roundOpId = (round: number) => `round:${round}`;

/**
 * The next funding round: the whole pool shared by quadratic funding among the `eligible` public goods, over what
 * each was given since it was last matched (at most {@link MAX_ROUND_STUDIES}, those with the largest matches; the
 * others wait for the next round). One posting, the pool to each matched escrow. Null when nothing would be matched.
 */
export function matchRound(s: LedgerView, eligible: readonly string[], now: number): Posting | null {
  const pool = balance(s, 'pool');
  if (pool <= 0) return null;
  const pending = new Map<string, ReadonlyMap<string, number>>();
  for (const id of new Set(eligible)) {
    const p = s.funding.studies.get(id)?.pending;
    if (p && p.size > 1 && !settled(s, id)) pending.set(id, p);
  }
  const matches = [...quadraticMatch(largestMatches(pending, MAX_ROUND_STUDIES), pool)].filter(
    ([, m]) => m > 0,
  );
  if (matches.length === 0) return null;
  const round = s.funding.rounds + 1;
  const total = matches.reduce((sum, [, m]) => sum + m, 0);
  const entries: Entry[] = [
    { account: 'pool', amount: -total },
    ...matches.map(([id, m]) => ({ account: escrowAccount(id), amount: m })),
  ];
  return posting('fund', roundOpId(round), entries, now, { round });
}

/** What is left of a public good's escrow back to the matching pool, once (it marks the study settled). */
export function refundToPool(s: LedgerView, studyId: string, now: number): Posting | null {
  const from = escrowAccount(studyId);
  if (settled(s, studyId)) return null;
  const left = balance(s, from);
  return posting('refund', refundOpId(studyId), left > 0 ? move(from, 'pool', left) : [], now, {
    study_id: studyId,
  });
}

export const escrowOpId = (studyId: string) => `escrow:${studyId}`;
export const payOpId = (jobId: string, attempt: number) => `pay:${jobId}:${attempt}`;
export const refundOpId = (studyId: string) => `refund:${studyId}`;
export const slashOpId = (jobId: string, attempt: number) => `slash:${jobId}:${attempt}`;
export const releaseOpId = (unstakeOpId: string) => `release:${unstakeOpId}`;

/** Whether a study's escrow is settled (its refund, possibly of nothing, is applied). */
export const settled = (s: LedgerView, studyId: string): boolean => applied(s, refundOpId(studyId));

/**
 * Holds a study's budget: key:<from> → escrow:<study>, once per op id — the signed submit's own (`req:<key>:<nonce>`)
 * when it comes from one, so the same signed submit never escrows twice, even for another study id.
 */
export function escrow(
  s: LedgerView,
  studyId: string,
  fromKey: string,
  amount: number,
  now: number,
  opId = escrowOpId(studyId),
): Posting | null {
  const to = escrowAccount(studyId);
  const from = keyAccount(fromKey);
  if (applied(s, opId)) return null;
  if (settled(s, studyId)) throw new LedgerError('study-settled', `study ${studyId} is already settled`);
  needFunds(s, from, checkAmount(amount));
  return posting('escrow', opId, move(from, to, amount), now, {
    study_id: studyId,
    key: fromKey,
  });
}

/**
 * Pays a provider for one execution out of the study's escrow: `amount`, or what the escrow still holds if that is
 * less — an escrow never pays out more than was put in. Null when already paid or the escrow is empty.
 */
export function pay(
  s: LedgerView,
  studyId: string,
  providerKey: string,
  amount: number,
  jobId: string,
  attempt: number,
  now: number,
): Posting | null {
  const from = escrowAccount(studyId);
  const to = keyAccount(providerKey);
  checkAmount(amount);
  const opId = payOpId(jobId, attempt);
  if (applied(s, opId)) return null;
  const paid = Math.min(amount, balance(s, from));
  if (paid <= 0) return null;
  return posting('pay', opId, move(from, to, paid), now, {
    study_id: studyId,
    job_id: jobId,
    attempt,
    key: providerKey,
  });
}

/**
 * Returns what is left in a study's escrow to `toKey` and marks the study settled. With nothing left the posting has
 * no entries: it records the settlement all the same. Null when the study is already settled.
 */
export function refund(s: LedgerView, studyId: string, toKey: string, now: number): Posting | null {
  const from = escrowAccount(studyId);
  const to = keyAccount(toKey);
  if (settled(s, studyId)) return null;
  const left = balance(s, from);
  return posting('refund', refundOpId(studyId), left > 0 ? move(from, to, left) : [], now, {
    study_id: studyId,
    key: toKey,
  });
}

/** Bonds `amount` of a key's SIM as stake. */
export function stake(s: LedgerView, key: string, amount: number, opId: string, now: number): Posting | null {
  const from = keyAccount(key);
  if (applied(s, opId)) return null;
  needFunds(s, from, checkAmount(amount));
  return posting('stake', opId, move(from, stakeAccount(key), amount), now, { key });
}

/** Starts unbonding `amount` of stake; {@link release} returns it to the key `unbondingMs` later. */
export function unstake(
  s: LedgerView,
  key: string,
  amount: number,
  opId: string,
  now: number,
  unbondingMs: number,
): Posting | null {
  const from = stakeAccount(key);
  if (applied(s, opId)) return null;
  if (!Number.isSafeInteger(unbondingMs) || unbondingMs < 0) {
    throw new LedgerError('invalid-posting', `bad unbonding period ${unbondingMs}`);
  }
  needFunds(s, from, checkAmount(amount));
  return posting('unstake', opId, move(from, unbondingAccount(key), amount), now, {
    key,
    release_at: now + unbondingMs,
  });
}

/** Unbondings whose period has ended at `now`, soonest first. */
export function dueReleases(s: LedgerView, now: number): Readonly<Unbonding>[] {
  return [...s.unbonding.values()]
    .filter((u) => u.release_at <= now)
    .sort((a, b) => a.release_at - b.release_at);
}

/** Returns an unbonding's SIM to its key once due. Null when already released; 'not-due' before its time. */
export function release(s: LedgerView, unstakeOpId: string, now: number): Posting | null {
  const opId = releaseOpId(unstakeOpId);
  if (applied(s, opId)) return null;
  const u = s.unbonding.get(unstakeOpId);
  if (!u) throw new LedgerError('unknown-op', `no pending unbonding ${unstakeOpId}`);
  if (now < u.release_at) {
    throw new LedgerError('not-due', `unbonding ${unstakeOpId} is released at ${u.release_at}, not before`);
  }
  return posting('release', opId, move(unbondingAccount(u.key), keyAccount(u.key), u.amount), now, {
    key: u.key,
    release_at: u.release_at,
  });
}

/**
 * Takes `amount` of a provider's stake (all of it if it holds less) into the treasury, for one bad execution: bonded
 * stake first, then stake still unbonding — unstaking does not put stake beyond reach until it is released. Null
 * when already slashed for it or the provider has nothing at stake.
 */
export function slash(
  s: LedgerView,
  providerKey: string,
  amount: number,
  jobId: string,
  attempt: number,
  now: number,
): Posting | null {
  const bonded = stakeAccount(providerKey);
  const unbonding = unbondingAccount(providerKey);
  checkAmount(amount);
  const opId = slashOpId(jobId, attempt);
  if (applied(s, opId)) return null;
  const fromStake = Math.min(amount, balance(s, bonded));
  const fromUnbonding = Math.min(amount - fromStake, balance(s, unbonding));
  if (fromStake + fromUnbonding <= 0) return null;
  const entries: Entry[] = [];
  if (fromStake > 0) entries.push({ account: bonded, amount: -fromStake });
  if (fromUnbonding > 0) entries.push({ account: unbonding, amount: -fromUnbonding });
  entries.push({ account: 'treasury', amount: fromStake + fromUnbonding });
  return posting('slash', opId, entries, now, { job_id: jobId, attempt, key: providerKey });
}
