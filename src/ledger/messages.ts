/** One zod schema per wire message of the ledger's API endpoints (plurigrid.api.<op>). */
import { z } from 'zod';
import { SimAmount, StudyId } from '../models/api.ts';
import { AccountId, Nkey } from './accounts.ts';
import { JournalEntry } from './posting.ts';
import { SignedRequest } from './signed.ts';

/** The body of each signed request, by action. The signer's own key is the account it acts on. */
export const FaucetBody = z.strictObject({});
export const TransferBody = z.strictObject({ to: Nkey, amount: SimAmount });
export const StakeBody = z.strictObject({ amount: SimAmount });
export const UnstakeBody = StakeBody;
/** A gift to a public-goods study or to the matching pool (study ids never read `pool`: they are `s…`). */
export const FundBody = z.strictObject({ to: z.union([z.literal('pool'), StudyId]), amount: SimAmount });

/** faucet / transfer / stake / unstake / fund: a signed request in, the posting it made out. */
export const SignedLedgerRequest = SignedRequest;
export const PostingReply = z.strictObject({
  op_id: z.string(),
  seq: z.number().int(),
  /** The signer's balances after it. */
  balance: z.lazy(() => BalanceReply),
});

export const BalanceRequest = z.strictObject({ key: Nkey });
export const BalanceReply = z.strictObject({
  key: Nkey,
  /** µSIM: spendable, bonded as stake, and unbonding (each with when it returns). */
  available: z.number().int(),
  stake: z.number().int(),
  unbonding: z.array(z.strictObject({ amount: z.number().int(), release_at: z.number().int() })),
});
export type BalanceReply = z.infer<typeof BalanceReply>;

export const JournalRequest = z.strictObject({
  /** Entries from this sequence number on (default: the last `limit`). */
  from: z.number().int().min(1).optional(),
  limit: z.number().int().min(1).max(1000).default(100),
  /** Re-walk the whole chain and its sums as well. */
  verify: z.boolean().default(false),
});
export const JournalReply = z.strictObject({
  entries: z.array(JournalEntry),
  /** Every account's balance (µSIM), the supply and the last entry. */
  balances: z.array(z.strictObject({ account: AccountId, amount: z.number().int() })),
  postings: z.number().int(),
  last_hash: z.string(),
  /** The journal check, when asked for. */
  check: z
    .strictObject({ ok: z.boolean(), postings: z.number().int(), problems: z.array(z.string()) })
    .nullable(),
});
export type JournalReply = z.infer<typeof JournalReply>;
