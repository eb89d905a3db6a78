import Table from 'cli-table3';
import { type Command, InvalidArgumentError } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import { ApiError } from '../coordinator/errors.ts';
import { formatSim, isUserNkey, sim } from '../ledger/accounts.ts';
import type { BalanceReply, JournalReply } from '../ledger/messages.ts';
import type { JournalEntry } from '../ledger/posting.ts';
import { SimAmount, StudyId } from '../models/api.ts';
import { addConnectionOptions, type ConnectionFlags, openClient } from './connection.ts';
import { addKeyOptions, type KeyFlags, signerKey } from './keys.ts';
import { intOption } from './options.ts';

interface JsonFlag {
  json?: boolean;
}

/** Compact table borders: no rule between rows. */
const COMPACT = { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' };

/** "1.5 SIM" from µSIM. */
export const simText = (micro: number): string => `${formatSim(micro, { trim: true })} SIM`;

/**
 * A commander parser for a SIM amount (argument or option): a positive decimal with at most six decimals, returned
 * in the API's form ("1.50" → "1.5"). `what` names it in the message (commander names the argument itself).
 */
export function simAmountParser(what: string, { allowZero = false } = {}): (value: string) => string {
  return (value) => {
    let micro: number;
    try {
      micro = sim(value);
    } catch {
      throw new InvalidArgumentError(
        `${what}: expected SIM as a decimal with at most 6 decimals, e.g. "25" or "0.5", got "${value}"`,
      );
    }
    if (micro === 0 && !allowZero) throw new InvalidArgumentError(`${what}: expected more than 0 SIM`);
    const text = formatSim(micro, { trim: true });
    if (!SimAmount.safeParse(text).success) {
      throw new InvalidArgumentError(`${what}: at most 999999999.999999 SIM, got "${value}"`);
    }
    return text;
  };
}

function nkeyParser(what: string): (value: string) => string {
  return (value) => {
    const key = value.trim();
    if (!isUserNkey(key)) {
      throw new InvalidArgumentError(
        `${what}: expected a public user key (U…, 56 characters), got "${value}"`,
      );
    }
    return key;
  };
}

/** `fund`'s target: the matching pool, or a study id. */
function fundTarget(value: string): string {
  const target = value.trim();
  if (target !== 'pool' && !StudyId.safeParse(target).success) {
    throw new InvalidArgumentError(`target: expected a study id or "pool", got "${value}"`);
  }
  return target;
}

/** A request that moves SIM, refused for a reason the user can act on: one line, exit 1. */
export class LedgerRefusedError extends Error {
  readonly code: 'insufficient_funds' | 'unauthorized' | 'faucet';
  constructor(code: LedgerRefusedError['code'], message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'LedgerRefusedError';
    this.code = code;
  }
}

export interface RefusalContext {
  api: ApiClient;
  /** The key that signed. */
  key: string;
  /** What was asked for, for the message: "the transfer", "the budget"… */
  what: string;
  /** µSIM it needed, when known. */
  amount?: number;
  /** Which of the key's balances it draws on. */
  from?: 'available' | 'stake';
}

/**
 * Rethrows an ApiError the user can act on (matched on its code) as a one-line {@link LedgerRefusedError}; anything
 * else unchanged.
 */
export async function explainRefusal(err: unknown, ctx: RefusalContext): Promise<never> {
  if (!(err instanceof ApiError)) throw err;
  if (err.code === 'insufficient_funds') {
    const from = ctx.from ?? 'available';
    const has = await ctx.api.balance(ctx.key).then(
      (b) =>
        ` has ${simText(from === 'stake' ? b.stake : b.available)} ${from === 'stake' ? 'staked' : 'available'},`,
      () => '',
    );
    const needs = ctx.amount !== undefined ? ` needs ${simText(ctx.amount)}` : ' needs more';
    throw new LedgerRefusedError(
      'insufficient_funds',
      `insufficient funds: ${ctx.key}${has} ${ctx.what}${needs}`,
      {
        cause: err,
      },
    );
  }
  if (err.code === 'unauthorized') {
    throw new LedgerRefusedError(
      'unauthorized',
      `not authorized: the coordinator refused ${ctx.what} signed by ${ctx.key} (${err.message}); check the key file and this machine's clock`,
      { cause: err },
    );
  }
  throw err;
}

function balanceLines(b: BalanceReply): string[] {
  const lines = [`  available  ${simText(b.available)}`, `  stake      ${simText(b.stake)}`];
  for (const u of b.unbonding) {
    lines.push(`  unbonding  ${simText(u.amount)}, returns ${new Date(u.release_at).toISOString()}`);
  }
  return lines;
}

const shortKeys = (s: string) => s.replace(/U[A-Z2-7]{55}/g, (k) => `${k.slice(0, 9)}…`);

/** The journal entry at `seq` (null when it cannot be read). */
async function entryAt(api: ApiClient, seq: number): Promise<JournalEntry | null> {
  if (seq < 1) return null;
  const page = await api.ledger({ from: seq, limit: 1 }).catch(() => null);
  return page?.entries.find((e) => e.seq === seq) ?? null;
}

type Op = 'faucet' | 'transfer' | 'stake' | 'unstake' | 'fund';

/** Signs and sends one ledger operation, printing what it did (or the reply, with --json). */
async function runOp(
  flags: KeyFlags & JsonFlag,
  op: Op,
  body: object,
  describe: (credit: number | null, b: BalanceReply) => string,
  refusal: Omit<RefusalContext, 'api' | 'key'>,
): Promise<void> {
  const signer = await signerKey(flags);
  const transport = await openClient(flags, `plurigrid-${op}`);
  try {
    const api = new ApiClient(transport.nc);
    let reply: Awaited<ReturnType<ApiClient['ledgerOp']>>;
    try {
      reply = await api.ledgerOp(op, body, signer.keyPair);
    } catch (err) {
      if (op === 'faucet' && err instanceof ApiError && err.code === 'conflict') {
        throw new LedgerRefusedError(
          'faucet',
          `the faucet refused: ${err.message} (its grants are limited per key per UTC day and in total)`,
          { cause: err },
        );
      }
      return await explainRefusal(err, { api, key: signer.key, ...refusal });
    }
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(reply)}\n`);
      return;
    }
    // What the signer's own account received in it (the faucet's grant).
    const entry = op === 'faucet' ? await entryAt(api, reply.seq) : null;
    const credit = entry?.posting.entries.find((e) => e.account === `key:${signer.key}`)?.amount ?? null;
    process.stdout.write(
      `${describe(credit, reply.balance)} (journal #${reply.seq}, op ${shortKeys(reply.op_id)})\n${signer.key}\n${balanceLines(reply.balance).join('\n')}\n`,
    );
  } finally {
    await transport.close();
  }
}

/** Σ of every balance, exactly (credits and debits summed apart, as the ledger does). */
export function balanceSum(balances: JournalReply['balances']): number {
  let plus = 0;
  let minus = 0;
  for (const b of balances) {
    if (b.amount > 0) plus += b.amount;
    else minus -= b.amount;
  }
  return plus - minus;
}

const ACCOUNT_ORDER = ['key', 'stake', 'unbonding', 'escrow', 'pool', 'faucet', 'treasury'];
const accountRank = (a: string) => ACCOUNT_ORDER.indexOf(a.split(':')[0]!);

function ledgerText(reply: JournalReply, sum: number): string {
  const out: string[] = [];
  const postings = new Table({
    head: ['#', 'kind', 'op id', 'at', 'entries'],
    style: { head: [], border: [] },
    chars: COMPACT,
  });
  for (const e of reply.entries) {
    const p = e.posting;
    postings.push([
      e.seq,
      p.kind,
      shortKeys(p.op_id),
      new Date(p.at).toISOString().replace(/\.\d+Z$/, 'Z'),
      p.entries.length === 0
        ? '(none)'
        : p.entries
            .map((x) => `${shortKeys(x.account)} ${x.amount > 0 ? '+' : '−'}${simText(Math.abs(x.amount))}`)
            .join('\n'),
    ]);
  }
  out.push(
    reply.entries.length
      ? `last ${reply.entries.length} of ${reply.postings} postings:\n${postings.toString()}`
      : 'no postings yet',
  );
  const balances = new Table({
    head: ['account', 'SIM'],
    colAligns: ['left', 'right'],
    style: { head: [], border: [] },
    chars: COMPACT,
  });
  const sorted = [...reply.balances]
    .filter((b) => b.amount !== 0)
    .sort((a, b) => accountRank(a.account) - accountRank(b.account) || a.account.localeCompare(b.account));
  for (const b of sorted) balances.push([b.account, formatSim(b.amount)]);
  out.push(`balances:\n${balances.toString()}`);
  out.push(
    sum === 0
      ? `check: the ${reply.balances.length} balances sum to 0 (the treasury holds −supply)`
      : `check FAILED: the balances sum to ${formatSim(sum)} SIM, not 0`,
  );
  if (reply.check) {
    out.push(
      reply.check.ok
        ? `verified: the chain of ${reply.check.postings} postings re-walked, every hash and sum checks out (last ${reply.last_hash.slice(0, 16)}…)`
        : `verify FAILED (${reply.check.postings} postings):${reply.check.problems.map((p) => `\n  ${p}`).join('')}`,
    );
  }
  return `${out.join('\n')}\n`;
}

export function registerLedger(program: Command): void {
  addKeyOptions(
    addConnectionOptions(
      program
        .command('balance')
        .description("show a key's SIM: available, staked and unbonding (default: your own key)")
        .argument('[key]', 'public user key (U…)', nkeyParser('key'))
        .option('--json', 'print the reply as JSON (amounts in µSIM)'),
    ),
  ).action(async (keyArg: string | undefined, opts: KeyFlags & JsonFlag, cmd: Command) => {
    if (keyArg && (opts.key || opts.worker)) {
      cmd.error('error: give a key, or --key / --worker, not both', { exitCode: 2, code: 'plurigrid.usage' });
    }
    const key = keyArg ?? (await signerKey(opts)).key;
    const transport = await openClient(opts, 'plurigrid-balance');
    try {
      const b = await new ApiClient(transport.nc).balance(key);
      process.stdout.write(
        opts.json ? `${JSON.stringify(b)}\n` : `${b.key}\n${balanceLines(b).join('\n')}\n`,
      );
    } finally {
      await transport.close();
    }
  });

  addKeyOptions(
    addConnectionOptions(
      program
        .command('faucet')
        .description('take SIM from the faucet (a grant per key per day; test SIM)')
        .option('--json', 'print the reply as JSON (amounts in µSIM)'),
    ),
  ).action((opts: KeyFlags & JsonFlag) =>
    runOp(opts, 'faucet', {}, (credit) => `faucet: ${credit === null ? 'granted' : `+${simText(credit)}`}`, {
      what: 'the faucet request',
    }),
  );

  addKeyOptions(
    addConnectionOptions(
      program
        .command('transfer')
        .description('send SIM from your key to another')
        .argument('<to-key>', 'public user key (U…) to send to', nkeyParser('to-key'))
        .argument('<amount>', 'SIM, e.g. 1.5', simAmountParser('amount'))
        .option('--json', 'print the reply as JSON (amounts in µSIM)'),
    ),
  ).action((to: string, amount: string, opts: KeyFlags & JsonFlag) =>
    runOp(opts, 'transfer', { to, amount }, () => `transferred ${amount} SIM to ${to}`, {
      what: 'the transfer',
      amount: sim(amount),
    }),
  );

  addKeyOptions(
    addConnectionOptions(
      program
        .command('stake')
        .description("bond SIM as stake (a provider's guarantee: slashed when outvoted)")
        .argument('<amount>', 'SIM, e.g. 20', simAmountParser('amount'))
        .option('--json', 'print the reply as JSON (amounts in µSIM)'),
    ),
  ).action((amount: string, opts: KeyFlags & JsonFlag) =>
    runOp(opts, 'stake', { amount }, () => `staked ${amount} SIM`, {
      what: 'the stake',
      amount: sim(amount),
    }),
  );

  addKeyOptions(
    addConnectionOptions(
      program
        .command('unstake')
        .description('unbond stake: it returns to your available SIM after the unbonding period')
        .argument('<amount>', 'SIM, e.g. 5', simAmountParser('amount'))
        .option('--json', 'print the reply as JSON (amounts in µSIM)'),
    ),
  ).action((amount: string, opts: KeyFlags & JsonFlag) =>
    runOp(opts, 'unstake', { amount }, () => `unstaking ${amount} SIM`, {
      what: 'the unstake',
      amount: sim(amount),
      from: 'stake',
    }),
  );

  addKeyOptions(
    addConnectionOptions(
      program
        .command('fund')
        .description(
          'give SIM to a public-goods study, or to the matching pool that funding rounds share out by quadratic funding',
        )
        .argument('<target>', 'a public-goods study id, or "pool"', fundTarget)
        .argument('<amount>', 'SIM, e.g. 5', simAmountParser('amount'))
        .option('--json', 'print the reply as JSON (amounts in µSIM)'),
    ),
  ).action((to: string, amount: string, opts: KeyFlags & JsonFlag) =>
    runOp(
      opts,
      'fund',
      { to, amount },
      () => `gave ${amount} SIM to ${to === 'pool' ? 'the matching pool' : `public good ${to}`}`,
      { what: 'the contribution', amount: sim(amount) },
    ),
  );

  addConnectionOptions(
    program
      .command('ledger')
      .description('the SIM journal: recent postings, every balance, and the check that they sum to zero')
      .option('--limit <n>', 'postings to show', intOption('--limit', 1, 1000), 20)
      .option(
        '--verify',
        'also re-walk the whole chain (hashes, links, sums); exit 1 if it does not check out',
      )
      .option('--json', 'print the reply as JSON (amounts in µSIM), with the sum of the balances'),
  ).action(async (opts: ConnectionFlags & JsonFlag & { limit: number; verify?: boolean }) => {
    const transport = await openClient(opts, 'plurigrid-ledger');
    try {
      const reply = await new ApiClient(transport.nc).ledger({ limit: opts.limit, verify: !!opts.verify });
      const sum = balanceSum(reply.balances);
      process.stdout.write(opts.json ? `${JSON.stringify({ ...reply, sum })}\n` : ledgerText(reply, sum));
      if (sum !== 0 || (reply.check && !reply.check.ok)) process.exitCode = 1;
    } finally {
      await transport.close();
    }
  });
}
