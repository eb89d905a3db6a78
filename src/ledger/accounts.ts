/**
 * Ledger accounts, SIM amounts and the ledger's typed error.
 *
 * | account             | holds                                                                         |
 * | ------------------- | ----------------------------------------------------------------------------- |
 * | `key:<nkey>`        | the spendable SIM of an ed25519 user nkey (submitters, funders, providers)    |
 * | `stake:<nkey>`      | SIM bonded by a provider; slashed when it disagrees with the quorum           |
 * | `unbonding:<nkey>`  | stake on its way back, released to `key:<nkey>` when the unbonding period ends |
 * | `escrow:<studyId>`  | a study's budget, paid out to providers and refunded at settlement            |
 * | `faucet`            | what the faucet may still grant (minted into it)                              |
 * | `treasury`          | the mint: the only account whose balance may be negative (−supply)            |
 * | `pool`              | the commons matching pool                                                     |
 *
 * Amounts are integers in micro-SIM (µSIM, 1 SIM = 1,000,000 µSIM), always safe integers, never floats.
 */
import { fromPublic } from '@nats-io/nkeys';
import { z } from 'zod';
import { StudyId } from '../models/api.ts';

export const MICRO_PER_SIM = 1_000_000;
const DECIMALS = 6;

export type LedgerErrorCode =
  | 'invalid-amount'
  | 'invalid-account'
  | 'invalid-posting'
  | 'insufficient-funds'
  | 'unbalanced'
  | 'duplicate-op'
  | 'unknown-op'
  | 'not-due'
  | 'faucet-cap'
  | 'study-settled'
  | 'bad-seq'
  | 'broken-link'
  | 'bad-hash'
  | 'unsigned'
  | 'malformed'
  | 'conflict'
  | 'state-mismatch';

/** A refused ledger operation. Match on `code`, never on the message. */
export class LedgerError extends Error {
  readonly code: LedgerErrorCode;
  constructor(code: LedgerErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'LedgerError';
    this.code = code;
  }
}

// Valid keys seen so far: an nkey's CRC check decodes base32, and replay checks the same few keys again and again.
const validKeys = new Set<string>();

/** Whether `s` is a public user nkey (`U…`, 56 characters, valid base32 and CRC). */
export function isUserNkey(s: unknown): s is string {
  if (typeof s !== 'string' || s.length !== 56 || s[0] !== 'U') return false;
  if (validKeys.has(s)) return true;
  try {
    fromPublic(s);
  } catch {
    return false;
  }
  if (validKeys.size > 100_000) validKeys.clear();
  validKeys.add(s);
  return true;
}

export const Nkey = z.string().refine(isUserNkey, 'expected a public user nkey (U…, 56 characters)');

export const FIXED_ACCOUNTS = ['faucet', 'treasury', 'pool'] as const;
export type FixedAccount = (typeof FIXED_ACCOUNTS)[number];
export type Account =
  | `key:${string}`
  | `stake:${string}`
  | `unbonding:${string}`
  | `escrow:${string}`
  | FixedAccount;

const KEYED = ['key', 'stake', 'unbonding'] as const;

/** Whether `s` is a well-formed account id. */
export function isAccount(s: unknown): s is Account {
  if (typeof s !== 'string') return false;
  if ((FIXED_ACCOUNTS as readonly string[]).includes(s)) return true;
  const colon = s.indexOf(':');
  if (colon < 0) return false;
  const kind = s.slice(0, colon);
  const id = s.slice(colon + 1);
  if (kind === 'escrow') return StudyId.safeParse(id).success;
  return (KEYED as readonly string[]).includes(kind) && isUserNkey(id);
}

export const AccountId = z.string().refine(isAccount, 'expected a ledger account id') as z.ZodType<
  Account,
  string
>;

function nkeyOrThrow(key: string): string {
  if (!isUserNkey(key))
    throw new LedgerError('invalid-account', `not a public user nkey: ${JSON.stringify(key)}`);
  return key;
}

export const keyAccount = (nkey: string): Account => `key:${nkeyOrThrow(nkey)}`;
export const stakeAccount = (nkey: string): Account => `stake:${nkeyOrThrow(nkey)}`;
export const unbondingAccount = (nkey: string): Account => `unbonding:${nkeyOrThrow(nkey)}`;
export function escrowAccount(studyId: string): Account {
  if (!StudyId.safeParse(studyId).success) {
    throw new LedgerError('invalid-account', `not a study id: ${JSON.stringify(studyId)}`);
  }
  return `escrow:${studyId}`;
}

/** Throws unless `a` is a well-formed account id; returns it typed. */
export function checkAccount(a: string): Account {
  if (!isAccount(a)) throw new LedgerError('invalid-account', `not a ledger account: ${JSON.stringify(a)}`);
  return a;
}

/** Throws unless `micro` is a positive safe integer (an amount to move). */
export function checkAmount(micro: number): number {
  if (!Number.isSafeInteger(micro) || micro <= 0) {
    throw new LedgerError('invalid-amount', `expected a positive whole number of µSIM, got ${micro}`);
  }
  return micro;
}

const DECIMAL = /^(\d+)(?:\.(\d+))?$/;

/**
 * µSIM of a SIM amount written in decimal: `sim("1.5")` = 1,500,000. Refuses negatives, exponents, more than six
 * decimals and anything beyond a safe integer; a number is read through its shortest decimal form.
 */
export function sim(amount: string | number): number {
  const text = typeof amount === 'number' ? String(amount) : amount.trim();
  const m = DECIMAL.exec(text);
  if (!m) throw new LedgerError('invalid-amount', `not a SIM amount: ${JSON.stringify(amount)}`);
  const frac = m[2] ?? '';
  if (frac.length > DECIMALS) {
    throw new LedgerError(
      'invalid-amount',
      `SIM has at most ${DECIMALS} decimals: ${JSON.stringify(amount)}`,
    );
  }
  // Any whole part above 9,007,199,254 overflows below, so Number(m[1]) is exact whenever the result is accepted.
  const micro = Number(m[1]) * MICRO_PER_SIM + Number(frac.padEnd(DECIMALS, '0'));
  if (!Number.isSafeInteger(micro)) {
    throw new LedgerError('invalid-amount', `SIM amount too large: ${JSON.stringify(amount)}`);
  }
  return micro;
}

/** SIM of a µSIM amount: "1.500000", or with `trim` "1.5" (trailing zeros and a bare point dropped). */
export function formatSim(micro: number, { trim = false }: { trim?: boolean } = {}): string {
  if (!Number.isSafeInteger(micro)) throw new LedgerError('invalid-amount', `not a µSIM amount: ${micro}`);
  const abs = Math.abs(micro);
  const whole = Math.floor(abs / MICRO_PER_SIM);
  let frac = String(abs % MICRO_PER_SIM).padStart(DECIMALS, '0');
  if (trim) frac = frac.replace(/0+$/, '');
  return `${micro < 0 ? '-' : ''}${whole}${frac ? `.${frac}` : ''}`;
}
