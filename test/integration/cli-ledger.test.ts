import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_USAGE } from '../../src/cli/errors.ts';
import { main } from '../../src/cli/main.ts';
import { formatSim, sim } from '../../src/ledger/accounts.ts';
import { DEFAULT_FAUCET_POLICY } from '../../src/ledger/rules.ts';
import { type CliRun, cliPath as cli, runCli } from '../fixtures/cli.ts';
import { Cluster } from './cluster.ts';

let cluster: Cluster;
/** The CLI user's data dir (their key), apart from the cluster's. */
const home = mkdtempSync(join(tmpdir(), 'plurigrid-cli-ledger-'));

/** The CLI as its own process, the way a user runs it. */
function plurigridProcess(...args: string[]) {
  return runCli([...args, '--data-dir', home, '--nats', cluster.nats.url]);
}

/**
 * The CLI's `main` in this process, its output captured: what `bin/plurigrid.js` runs, without a Node start-up
 * (about a second of CPU) per command. One at a time: the capture is process-wide.
 */
async function plurigrid(...args: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const capture = (sink: (s: string) => void) => (chunk: string | Uint8Array) => {
    sink(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString());
    return true;
  };
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(capture((s) => (stdout += s)) as never);
  const err = vi.spyOn(process.stderr, 'write').mockImplementation(capture((s) => (stderr += s)) as never);
  try {
    const code = await main([process.execPath, cli, ...args, '--data-dir', home, '--nats', cluster.nats.url]);
    return { code, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = undefined;
  }
}

const json = (r: { stdout: string }) => JSON.parse(r.stdout);
const grant = DEFAULT_FAUCET_POLICY.grant;

beforeAll(async () => {
  cluster = await new Cluster().start();
  await cluster.startCoordinator();
  // The user's machine has no operator keys: it enrolls with a one-time token (client credentials for its key).
  const { token } = await cluster.auth.enrollmentToken('client', 600);
  const enrolled = await runCli(['enroll', token, '--data-dir', home, '--nats', cluster.nats.url]);
  if (enrolled.code !== 0) throw new Error(`enroll failed: ${enrolled.stderr}`);
}, 30_000);

afterAll(async () => {
  await cluster?.stop();
  rmSync(home, { recursive: true, force: true });
});

describe('plurigrid keys, faucet, balance, transfer, stake, ledger', () => {
  it('moves SIM with a key whose seed is never shown, refusing what it must with the right exit codes', async () => {
    // keys: the user's key is made on first use; only its public half is printed.
    const made = await plurigridProcess('keys');
    const other = await plurigrid('keys', '--key', join(home, 'other.nk'), '--json');
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/^U[A-Z2-7]{55}\n$/);
    const me = made.stdout.trim();
    const seedFile = join(home, 'keys', 'user.nk');
    const seed = readFileSync(seedFile, 'utf8').trim();
    expect(seed).toMatch(/^SU/);
    expect(statSync(seedFile).mode & 0o777).toBe(0o600);
    expect(`${made.stdout}${made.stderr}`).not.toContain(seed);
    const to = json(other).key as string;
    expect(to).toMatch(/^U/);
    expect(to).not.toBe(me);
    expect(other.stdout).not.toContain(readFileSync(join(home, 'other.nk'), 'utf8').trim());

    const again = await plurigrid('keys', '--json');
    expect(json(again)).toMatchObject({ key: me, created: false });
    expect(`${again.stdout}${again.stderr}`).not.toContain(seed);

    // faucet: the grant shows in the balance.
    const faucet = await plurigrid('faucet');
    expect(faucet.code, faucet.stderr).toBe(0);
    expect(faucet.stdout).toContain(`faucet: +${formatSim(grant, { trim: true })} SIM`);
    expect(`${faucet.stdout}${faucet.stderr}`).not.toContain(seed);

    const balance = await plurigrid('balance', '--json');
    const balanceText = await plurigrid('balance', me);
    const secondFaucet = await plurigrid('faucet');
    const tooMuch = await plurigrid('transfer', to, '1000000');
    const badAmount = await plurigrid('transfer', to, '1.5.0');
    const badKey = await plurigrid('balance', 'Unot-a-key');
    expect(json(balance)).toEqual({ key: me, available: grant, stake: 0, unbonding: [] });
    expect(balanceText.stdout).toMatch(new RegExp(`available +${formatSim(grant, { trim: true })} SIM`));
    // A second grant the same day is refused: one line, exit 1 (here from the real process too).
    expect(secondFaucet.code).toBe(EXIT_FAILURE);
    expect(secondFaucet.stderr).toMatch(/^error: the faucet refused: .+\n$/);
    const third = await plurigridProcess('faucet');
    expect(third.code).toBe(EXIT_FAILURE);
    expect(third.stderr).toMatch(/^error: the faucet refused: .+\n$/);
    expect(tooMuch.code).toBe(EXIT_FAILURE);
    expect(tooMuch.stderr).toMatch(
      new RegExp(`^error: insufficient funds: ${me} has ${formatSim(grant, { trim: true })} SIM available`),
    );
    expect(tooMuch.stderr).not.toMatch(/^\s+at /m);
    expect(badAmount.code).toBe(EXIT_USAGE);
    expect(badAmount.stderr).toMatch(/invalid for argument 'amount'.*"1\.5\.0"/);
    expect(badKey.code).toBe(EXIT_USAGE);
    expect(badKey.stderr).toMatch(/argument 'key'/);

    // transfer and stake move SIM; unstaking more than is staked is refused.
    const sent = await plurigrid('transfer', to, '1.5');
    const staked = await plurigrid('stake', '20');
    expect(sent.code, sent.stderr).toBe(0);
    expect(staked.code, staked.stderr).toBe(0);
    expect(staked.stdout).toMatch(/staked 20 SIM/);
    const after = await plurigrid('balance', '--json');
    const theirs = await plurigrid('balance', to, '--json');
    const overUnstake = await plurigrid('unstake', '21');
    expect(json(after)).toMatchObject({ available: grant - sim('21.5'), stake: sim('20') });
    expect(json(theirs)).toMatchObject({ available: sim('1.5'), stake: 0 });
    expect(overUnstake.code).toBe(EXIT_FAILURE);
    expect(overUnstake.stderr).toMatch(/insufficient funds: .* has 20 SIM staked/);

    // The journal re-walks, and every balance (the treasury's −supply among them) sums to zero.
    const ledger = await plurigrid('ledger', '--verify', '--json');
    const ledgerText = await plurigrid('ledger', '--verify', '--limit', '3');
    expect(ledger.code, ledger.stderr).toBe(0);
    const journal = json(ledger);
    expect(journal.check).toMatchObject({ ok: true, problems: [] });
    expect(journal.sum).toBe(0);
    expect(journal.balances.reduce((s: number, b: { amount: number }) => s + b.amount, 0)).toBe(0);
    expect(journal.balances).toContainEqual({ account: `stake:${me}`, amount: sim('20') });
    expect(journal.entries.map((e: { posting: { kind: string } }) => e.posting.kind)).toEqual(
      expect.arrayContaining(['faucet', 'transfer', 'stake']),
    );
    expect(ledgerText.code, ledgerText.stderr).toBe(0);
    expect(ledgerText.stdout).toMatch(/balances sum to 0/);
    expect(ledgerText.stdout).toMatch(/verified: the chain of \d+ postings/);
    for (const r of [ledger, ledgerText, after, sent, staked])
      expect(`${r.stdout}${r.stderr}`).not.toContain(seed);
  }, 30_000);
});

describe('plurigrid submit --public-good, fund, commons', () => {
  it('submits a public good, gives to it and to the pool (signed), and shows the commons', async () => {
    const study = fileURLToPath(new URL('../../examples/commons-village.json', import.meta.url));
    const submitted = await plurigrid(
      'submit',
      study,
      '--public-good',
      'Winter village',
      '--description',
      'for the village',
    );
    expect(submitted.code, submitted.stderr).toBe(0);
    const id = /submitted (\S+) .* as a public good/.exec(submitted.stdout)?.[1];
    expect(id).toMatch(/^s/);
    const gift = await plurigrid('fund', id!, '2');
    const pool = await plurigrid('fund', 'pool', '3', '--json');
    expect(gift.code, gift.stderr).toBe(0);
    expect(gift.stdout).toContain(`gave 2 SIM to public good ${id}`);
    expect(pool.code, pool.stderr).toBe(0);
    expect(json(pool).op_id).toMatch(/^req:U/);
    // Not a study, not a target at all, more than the key holds: refused, nothing moves.
    const unknown = await plurigrid('fund', 'snothere', '1');
    const badTarget = await plurigrid('fund', 'no.such', '1');
    const tooMuch = await plurigrid('fund', id!, '1000000');
    expect(unknown.code).toBe(EXIT_NOT_FOUND);
    expect(badTarget.code).toBe(EXIT_USAGE);
    expect(badTarget.stderr).toMatch(/target: expected a study id or "pool"/);
    expect(tooMuch.code).toBe(EXIT_FAILURE);
    expect(tooMuch.stderr).toMatch(/insufficient funds/);

    const mine = await plurigrid('commons', '--mine', '--json');
    expect(mine.code, mine.stderr).toBe(0);
    const view = json(mine);
    expect(view.pool).toBe(sim('3'));
    expect(view.studies).toEqual([
      expect.objectContaining({
        study_id: id,
        title: 'Winter village',
        funders: 1,
        contributed: sim('2'),
        matched: 0,
      }),
    ]);
    expect(view.funder).toMatchObject({
      pool: sim('3'),
      studies: [expect.objectContaining({ study_id: id, share: 1 })],
    });
    const text = await plurigrid('commons');
    expect(text.stdout).toMatch(/matching pool 3 SIM from 1 funder/);
    expect(text.stdout).toContain('Winter village');
    const both = await plurigrid('commons', '--mine', '--funder', view.funder.key);
    expect(both.code).toBe(EXIT_USAGE);
  }, 30_000);
});
