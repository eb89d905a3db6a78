import Table from 'cli-table3';
import { type Command, InvalidArgumentError } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import { isUserNkey } from '../ledger/accounts.ts';
import type { CommonsReply } from '../models/api.ts';
import { addConnectionOptions, openClient } from './connection.ts';
import { addKeyOptions, type KeyFlags, signerKey } from './keys.ts';
import { simText } from './ledger.ts';
import { intOption } from './options.ts';

interface Options extends KeyFlags {
  funder?: string;
  mine?: boolean;
  limit: number;
  json?: boolean;
}

const COMPACT = { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' };
const pct = (x: number) => `${(100 * x).toFixed(x < 0.1 ? 1 : 0)} %`;
const shortKey = (k: string) => `${k.slice(0, 9)}…`;

function funderOption(value: string): string {
  const key = value.trim();
  if (!isUserNkey(key))
    throw new InvalidArgumentError(
      `--funder: expected a public user key (U…, 56 characters), got "${value}"`,
    );
  return key;
}

/** The commons as text: the pool and rounds, a table of the public goods, and a funder's part when asked for. */
export function commonsText(c: CommonsReply): string {
  const out: string[] = [];
  const where =
    c.policy === 'offpeak'
      ? "idle slots inside providers' off-peak windows"
      : 'any idle slot no paid job wants';
  const next =
    c.next_round_at === null ? 'none scheduled' : `next ${new Date(c.next_round_at).toISOString()}`;
  out.push(
    `Simulation Commons: matching pool ${simText(c.pool)} from ${c.pool_funders} funder${c.pool_funders === 1 ? '' : 's'}; ${c.rounds} funding round${c.rounds === 1 ? '' : 's'} (${next}); public goods run on ${where}`,
  );
  if (c.studies.length === 0) out.push('no public-goods studies yet');
  else {
    const t = new Table({
      head: ['study', 'title', 'state', 'funders', 'given', 'matched', 'epochs', 'spent', 'left'],
      colAligns: ['left', 'left', 'left', 'right', 'right', 'right', 'right', 'right', 'right'],
      style: { head: [], border: [] },
      chars: COMPACT,
    });
    for (const s of c.studies) {
      t.push([
        s.study_id,
        s.title.length > 40 ? `${s.title.slice(0, 39)}…` : s.title,
        s.waiting && s.state === 'running' ? 'waiting for funds' : s.state,
        s.funders,
        simText(s.contributed),
        simText(s.matched),
        `${s.epochs.done}/${s.epochs.total}`,
        simText(s.spent),
        s.state === 'running' ? simText(s.available) : `${simText(s.returned)} to pool`,
      ]);
    }
    out.push(t.toString());
    out.push(
      `in all: ${simText(c.totals.contributed)} given, ${simText(c.totals.matched)} matched, ${c.totals.epochs_done} epochs computed for ${simText(c.totals.spent)}`,
    );
  }
  if (c.funder) {
    const f = c.funder;
    out.push(
      `funder ${shortKey(f.key)}: ${simText(f.pool)} to the pool; its contributions computed ${f.epochs.toFixed(1)} epochs for ${simText(f.spent)}`,
    );
    for (const s of f.studies)
      out.push(
        `  ${s.study_id} ${s.title}: gave ${simText(s.contributed)} (${pct(s.share)} of what it raised) → ${s.epochs.toFixed(1)} epochs, ${simText(s.spent)} spent`,
      );
  }
  return `${out.join('\n')}\n`;
}

export function registerCommons(program: Command): void {
  addKeyOptions(
    addConnectionOptions(
      program
        .command('commons')
        .description(
          'the Simulation Commons: public-goods studies, what they were given and matched, the epochs computed and the SIM spent',
        )
        .option('--funder <key>', 'also what this key’s contributions computed', funderOption)
        .option('--mine', 'also what your own key’s contributions computed (--key / --worker / --creds)')
        .option('--limit <n>', 'studies to show', intOption('--limit', 1, 1000), 100)
        .option('--json', 'print the reply as JSON (amounts in µSIM)'),
    ),
  ).action(async (opts: Options, cmd: Command) => {
    if (opts.funder && opts.mine)
      cmd.error('error: --funder or --mine, not both', { exitCode: 2, code: 'plurigrid.usage' });
    const funder = opts.mine ? (await signerKey(opts)).key : opts.funder;
    const transport = await openClient(opts, 'plurigrid-commons');
    try {
      const reply = await new ApiClient(transport.nc).commons({
        limit: opts.limit,
        ...(funder ? { funder } : {}),
      });
      process.stdout.write(opts.json ? `${JSON.stringify(reply)}\n` : commonsText(reply));
    } finally {
      await transport.close();
    }
  });
}
