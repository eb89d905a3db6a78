// Several coordinators against one bus: one active (it holds the KV lease), the others on standby. Under load, the
// active one is killed -9 and a standby takes over; later the new active one is paused (SIGSTOP) until its lease
// lapses, a third takes over and revokes it, and when the paused one wakes it cannot write. The paid study finishes
// with every epoch accepted once, and the ledger sums to zero.
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { balanceSum } from '../../src/cli/ledger.ts';
import { LEADER_TTL_MS } from '../../src/transport/resources.ts';
import { Cluster, until } from './cluster.ts';

let cluster: Cluster | undefined;

afterAll(async () => {
  await cluster?.stop();
});

describe('a standby coordinator', () => {
  it('takes over when the active one dies or stalls; nothing lost, nothing paid twice, no split brain', async () => {
    cluster = await new Cluster().start();
    const c = cluster;
    const first = await c.startCoordinator(['--log-level', 'info']);
    const standby = (): Promise<ChildProcess> => c.spawnCoordinator(/coordinator standby/);
    const second = await standby();
    await c.startWorker('a', ['--slots', '2']);
    await c.startWorker('b', ['--slots', '2']);
    await c.waitForWorkers(2);

    // Paid work, so the ledger has escrow, payments and a refund to balance.

    const submitted = await c.submitPaidStudy(20);

    const progress = () => c.epochsDone(submitted.study_id);
    await until(async () => (await progress()) >= 2, 60_000, 'epochs done', true);

    // 1. kill -9 the active coordinator: the standby takes over (on this machine it sees the holder is dead).
    const killedAt = performance.now();
    await c.kill(first);
    await c.waitForLog(second, /coordinator ready/, 20_000);
    const takeover = performance.now() - killedAt;
    expect(takeover).toBeLessThan(LEADER_TTL_MS + 10_000);
    let done = await progress();
    await until(async () => (await progress()) > done, 60_000, 'progress under the new coordinator', true);

    // 2. Pause the active one past its lease: a third coordinator takes over and revokes it.
    const third = await standby();
    second.kill('SIGSTOP');
    await c.waitForLog(third, /coordinator ready/, LEADER_TTL_MS + 20_000);
    expect(c.log(third)).toMatch(/revoked the previous coordinator/);
    done = await progress();
    await until(async () => (await progress()) > done, 60_000, 'progress under the third coordinator', true);
    // Woken up, the old one finds its lease gone and its user revoked: it stops without writing.
    const exited = new Promise<number | null>((r) => second.once('exit', (code) => r(code)));
    second.kill('SIGCONT');
    expect(await exited).not.toBe(0);
    expect(c.log(second)).toMatch(/lost the coordinator lease/);

    const final = await c.waitForStudy(submitted.study_id, 180_000);
    expect(final.state, JSON.stringify(final.failures.slice(0, 3))).toBe('done');
    const { rows } = await c.api.allResults(submitted.study_id);
    expect(rows).toHaveLength(40);
    expect(new Set(rows.map((r) => r.epoch_id)).size).toBe(40);
    const ledger = await c.api.ledger({ verify: true, limit: 1000 });
    expect(ledger.check).toMatchObject({ ok: true, problems: [] });
    expect(balanceSum(ledger.balances)).toBe(0);
    // Nothing paid twice: one payment per valid execution, each op id once.
    const pays = ledger.entries.filter((e) => e.posting.kind === 'pay').map((e) => e.posting.op_id);
    expect(new Set(pays).size).toBe(pays.length);
    await c.kill(third);
  }, 300_000);
});
