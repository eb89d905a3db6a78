/**
 * What the ledger stores: postings (one balanced move of SIM, named by an operation id) chained into journal entries
 * by SHA-256. One zod schema per stored message; the schemas check shape only — balance, funds and uniqueness are
 * the rules' business (rules.ts), so a bad posting is refused with a code that names what is wrong with it.
 */
import { z } from 'zod';
import { StudyId } from '../models/api.ts';
import { digestOf } from '../models/digest.ts';
import { AccountId, Nkey } from './accounts.ts';

export const POSTING_KINDS = [
  'mint',
  'faucet',
  'transfer',
  'escrow',
  'pay',
  'refund',
  'stake',
  'unstake',
  'release',
  'slash',
  'fund',
] as const;
export const PostingKind = z.enum(POSTING_KINDS);

/** Public-goods studies one funding round matches at most (the others wait for the next round). */
export const MAX_ROUND_STUDIES = 255;
export type PostingKind = z.infer<typeof PostingKind>;

/** A non-zero whole number of µSIM: negative debits the account, positive credits it. */
export const Amount = z
  .number()
  .refine((n) => Number.isSafeInteger(n) && n !== 0, 'expected a non-zero whole number of µSIM');

export const Entry = z.strictObject({ account: AccountId, amount: Amount });
export type Entry = z.infer<typeof Entry>;

/** Printable ASCII without spaces: op ids double as Nats-Msg-Id headers. */
export const OpId = z
  .string()
  .min(1)
  .max(512)
  .regex(/^[\x21-\x7e]+$/, 'expected printable ASCII without spaces');

const Millis = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** What a posting is about, for settlement and audit (only the fields that apply are present). */
export const Refs = z.strictObject({
  study_id: StudyId.optional(),
  job_id: z.string().min(1).max(256).optional(),
  attempt: z.number().int().min(0).optional(),
  key: Nkey.optional(),
  /** unstake: when the unbonding stake may be released. */
  release_at: Millis.optional(),
  /** fund: the quadratic-funding round whose matches it pays out of the pool. */
  round: z.number().int().min(1).optional(),
});
export type Refs = z.infer<typeof Refs>;

export const Posting = z.strictObject({
  /** Names the operation: a posting with an op id already applied is never applied again. */
  op_id: OpId,
  kind: PostingKind,
  /**
   * Balanced (sums to zero); empty only for a refund of nothing, which marks a study as settled. A funding round pays
   * every matched study in one posting: the pool and up to {@link MAX_ROUND_STUDIES} escrows.
   */
  entries: z.array(Entry).max(MAX_ROUND_STUDIES + 1),
  /** When the operation was decided (ms since the epoch, from the injected clock). */
  at: Millis,
  memo: z.string().max(500).nullable(),
  refs: Refs,
});
export type Posting = z.infer<typeof Posting>;

export const Hash = z.string().regex(/^[0-9a-f]{64}$/, 'expected a SHA-256 hex digest');

/** A posting as stored: `hash` = SHA-256 of canonicalJson({prev_hash, posting}), linking every entry to the last. */
export const JournalEntry = z.strictObject({
  /** Position in the chain: 1 for the first entry. */
  seq: z.number().int().min(1),
  prev_hash: Hash,
  hash: Hash,
  posting: Posting,
  /**
   * The ledger authority's ed25519 signature (base64) over `hash`: only the coordinator, which checks every signed
   * request, can write an entry a journal with an authority accepts. Absent on a journal kept without one (tests).
   */
  sig: z
    .string()
    .max(200)
    .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'expected base64')
    .optional(),
});
export type JournalEntry = z.infer<typeof JournalEntry>;

/** The prev_hash of the first entry. */
export const GENESIS_HASH = '0'.repeat(64);

export function entryHash(prevHash: string, posting: Posting): string {
  return digestOf({ prev_hash: prevHash, posting });
}

/** The journal entry that puts `posting` after the entry `prevSeq` whose hash is `prevHash`. */
export function chainEntry(prevSeq: number, prevHash: string, posting: Posting): JournalEntry {
  return { seq: prevSeq + 1, prev_hash: prevHash, hash: entryHash(prevHash, posting), posting };
}

export interface PostingSums {
  /** Σ of the credits (positive amounts). */
  credits: number;
  /** Σ of the debits, as a positive number. */
  debits: number;
}

/**
 * Credits and debits summed apart, so that each sum stays exact (a running total of mixed signs could pass beyond
 * 2^53 and round). A posting balances when both are safe integers and equal.
 */
export function postingSums(p: Pick<Posting, 'entries'>): PostingSums {
  let credits = 0;
  let debits = 0;
  for (const e of p.entries) {
    if (e.amount > 0) credits += e.amount;
    else debits -= e.amount;
  }
  return { credits, debits };
}

export function isBalanced(p: Pick<Posting, 'entries'>): boolean {
  const { credits, debits } = postingSums(p);
  return Number.isSafeInteger(credits) && Number.isSafeInteger(debits) && credits === debits;
}

/** The amount a posting moves (its credits). */
export const postingAmount = (p: Pick<Posting, 'entries'>): number => postingSums(p).credits;
