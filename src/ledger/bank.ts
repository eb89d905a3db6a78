import type { JetStreamManager } from '@nats-io/jetstream';
import type { z } from 'zod';
import type { RequestAuth } from '../models/api.ts';
import { STREAMS } from '../transport/resources.ts';
import { keyAccount, sim } from './accounts.ts';
import { escrowStudy } from './funding.ts';
import type { Builder, Journal } from './journal.ts';
import type { BalanceReply, JournalReply } from './messages.ts';
import { FaucetBody, FundBody, StakeBody, TransferBody, UnstakeBody } from './messages.ts';
import { JournalEntry } from './posting.ts';
import {
  balance,
  contribute,
  DEFAULT_FAUCET_POLICY,
  dueReleases,
  escrow,
  type FaucetPolicy,
  faucet,
  fund,
  matchRound,
  mint,
  refund,
  release,
  stake,
  stakeOf,
  transfer,
  unstake,
} from './rules.ts';
import { AuthError, NonceGuard, requestOpId, verifyRequest } from './signed.ts';

export interface BankOptions {
  journal: Journal;
  jsm: JetStreamManager;
  now: () => number;
  faucet?: FaucetPolicy;
  /** How long unstaked SIM stays bonded (slashable) before it returns. */
  unbondingMs?: number;
  /** What the faucet account is filled with on a fresh ledger (µSIM). */
  faucetSupply?: number;
}

export const DEFAULT_UNBONDING_MS = 10 * 60_000;
export const DEFAULT_FAUCET_SUPPLY = 1_000_000 * 1_000_000;

const decoder = new TextDecoder();

/**
 * The ledger's front desk: every request that moves SIM is a signed request (signed.ts) whose key is the account it
 * moves SIM from, checked once (signature, action, expiry, nonce) and applied once (its op id is derived from its
 * key and nonce, so even a replay after a restart is a no-op). Reads are open: balances are not secret here.
 */
export class Bank {
  readonly nonces = new NonceGuard();
  private readonly o: BankOptions;
  private readonly faucetPolicy: FaucetPolicy;

  constructor(o: BankOptions) {
    this.o = o;
    this.faucetPolicy = o.faucet ?? DEFAULT_FAUCET_POLICY;
  }

  get journal(): Journal {
    return this.o.journal;
  }

  /** Fills the faucet once, on a fresh ledger (the genesis mint; its op id makes it happen once ever). */
  async genesis(): Promise<void> {
    const supply = this.o.faucetSupply ?? DEFAULT_FAUCET_SUPPLY;
    await this.o.journal.append((s) =>
      s.applied.has('genesis:faucet') ? null : mint('faucet', supply, 'genesis:faucet', this.o.now()),
    );
  }

  balanceOf(key: string): z.infer<typeof BalanceReply> {
    const s = this.o.journal.state;
    return {
      key,
      available: balance(s, keyAccount(key)),
      stake: stakeOf(s, key),
      unbonding: [...s.unbonding.values()]
        .filter((u) => u.key === key)
        .map((u) => ({ amount: u.amount, release_at: u.release_at })),
    };
  }

  /** Checks a signed request, then appends what `build` makes of its key, body and op id. */
  private async apply<S extends z.ZodType>(
    req: unknown,
    action: string,
    schema: S,
    build: (key: string, body: z.output<S>, opId: string) => Builder,
  ) {
    const ok = verifyRequest(req, action, this.o.now(), this.nonces, schema);
    const res = await this.o.journal.append(build(ok.key, ok.body, requestOpId(ok)));
    return {
      op_id: res.status === 'appended' ? res.entry.posting.op_id : (res.op_id ?? requestOpId(ok)),
      seq: res.status === 'appended' ? res.entry.seq : (res.seq ?? 0),
      balance: this.balanceOf(ok.key),
    };
  }

  faucet(req: unknown) {
    return this.apply(
      req,
      'faucet',
      FaucetBody,
      (key) => (s) => faucet(s, key, this.o.now(), this.faucetPolicy),
    );
  }

  transfer(req: unknown) {
    return this.apply(
      req,
      'transfer',
      TransferBody,
      (key, body, opId) => (s) => transfer(s, key, body.to, sim(body.amount), opId, this.o.now()),
    );
  }

  stake(req: unknown) {
    return this.apply(
      req,
      'stake',
      StakeBody,
      (key, body, opId) => (s) => stake(s, key, sim(body.amount), opId, this.o.now()),
    );
  }

  unstake(req: unknown) {
    return this.apply(
      req,
      'unstake',
      UnstakeBody,
      (key, body, opId) => (s) =>
        unstake(s, key, sim(body.amount), opId, this.o.now(), this.o.unbondingMs ?? DEFAULT_UNBONDING_MS),
    );
  }

  /**
   * A signed gift to a public-goods study or to the matching pool. `target` is asked about a study before anything
   * moves (the coordinator throws there unless it is a running public good): a refused gift appends nothing.
   */
  fund(req: unknown, target: (studyId: string) => void) {
    return this.apply(req, 'fund', FundBody, (key, body, opId) => {
      if (body.to !== 'pool') target(body.to);
      const amount = sim(body.amount);
      return (s) =>
        body.to === 'pool'
          ? fund(s, key, amount, opId, this.o.now())
          : contribute(s, body.to, key, amount, opId, this.o.now());
    });
  }

  /**
   * A public good's budget at submit: its submitter's first contribution, from the key that signed the submit (once:
   * the op id is the signed request's, as for an escrow).
   */
  async contribute(studyId: string, auth: RequestAuth, body: unknown, amount: number): Promise<void> {
    const req = verifyRequest({ ...auth, action: 'submit', body }, 'submit', this.o.now(), this.nonces);
    const opId = requestOpId(req);
    const res = await this.o.journal.append((s) =>
      contribute(s, studyId, auth.key, amount, opId, this.o.now()),
    );
    if (res.status !== 'appended')
      throw new AuthError('replayed', `the signed submit ${opId} was used already`);
  }

  /**
   * The next funding round over the running public goods `eligible` (matchRound in rules.ts). Null when there was
   * nothing to match: the pool is empty, or no good has two funders since it was last matched.
   */
  async matchRound(
    eligible: readonly string[],
  ): Promise<{ round: number; matches: { study_id: string; amount: number }[] } | null> {
    const res = await this.o.journal.append((s) => matchRound(s, eligible, this.o.now()));
    if (res.status !== 'appended') return null;
    const p = res.entry.posting;
    return {
      round: p.refs.round!,
      matches: p.entries
        .filter((e) => e.amount > 0)
        .map((e) => ({ study_id: escrowStudy(e.account)!, amount: e.amount })),
    };
  }

  /**
   * Escrows a study's budget from the key that signed its submit (`body` is the request without its auth). Checked
   * before the study exists; its op id is the study's, so a retried submit escrows once.
   */
  async escrow(studyId: string, auth: RequestAuth, body: unknown, amount: number): Promise<void> {
    const req = verifyRequest({ ...auth, action: 'submit', body }, 'submit', this.o.now(), this.nonces);
    // The nonce guard forgets on a restart; the journal does not: a signed submit escrows once, ever.
    const opId = requestOpId(req);
    const res = await this.o.journal.append((s) => escrow(s, studyId, auth.key, amount, this.o.now(), opId));
    if (res.status !== 'appended')
      throw new AuthError('replayed', `the signed submit ${opId} was used already`);
  }

  /** Returns what is left of a study's escrow to its payer (once; a study settled already is left alone). */
  async refund(studyId: string, payer: string): Promise<void> {
    await this.o.journal.append((s) => refund(s, studyId, payer, this.o.now()));
  }

  /** Returns unbonded stake whose period has ended (level-triggered: the housekeeping timer calls it). */
  async releaseDue(): Promise<number> {
    let n = 0;
    for (const u of dueReleases(this.o.journal.state, this.o.now())) {
      const r = await this.o.journal.append((s) => release(s, u.op_id, this.o.now()));
      if (r.status === 'appended') n++;
    }
    return n;
  }

  /** A page of the journal, every balance, and (when asked) the full check of the chain and its sums. */
  async page(from: number | undefined, limit: number, check: boolean): Promise<z.infer<typeof JournalReply>> {
    const s = this.o.journal.state;
    const last = this.o.journal.streamSeq;
    const start = Math.max(1, from ?? last - limit + 1);
    const entries: JournalEntry[] = [];
    for (let seq = start; seq <= Math.min(last, start + limit - 1); seq++) {
      const msg = await this.o.jsm.streams.getMessage(STREAMS.ledger, { seq }).catch(() => null);
      if (!msg) continue;
      const parsed = JournalEntry.safeParse(JSON.parse(decoder.decode(msg.data)));
      if (parsed.success) entries.push(parsed.data);
    }
    const report = check ? await this.o.journal.verify() : null;
    return {
      entries,
      balances: [...s.balances].map(([account, amount]) => ({ account, amount })),
      postings: s.lastSeq,
      last_hash: s.lastHash,
      check: report && {
        ok: report.ok,
        postings: report.postings,
        problems: report.problems.map((p) => `stream message ${p.streamSeq}: ${p.code}: ${p.detail}`),
      },
    };
  }
}
