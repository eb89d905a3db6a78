// A study on a 3-node JetStream cluster (every stream and bucket with 3 replicas) survives kill -9 of the metadata
// leader and then of the RESULTS stream's leader, mid-study: it finishes, every epoch accepted exactly once, and the
// ledger sums to zero.
import { type JetStreamManager, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, describe, expect, it } from 'vitest';
import { balanceSum } from '../../src/cli/ledger.ts';
import { parseCredentials } from '../../src/transport/auth.ts';
import { connectNats } from '../../src/transport/connect.ts';
import type { ClusterNode } from '../../src/transport/nats-cluster.ts';
import { STREAMS } from '../../src/transport/resources.ts';
import { Cluster, until } from './cluster.ts';

let cluster: Cluster | undefined;
let sys: NatsConnection | undefined;

afterAll(async () => {
  await sys?.close().catch(() => {});
  await cluster?.stop();
});

interface MetaCluster {
  /** The metadata leader (the server that answered). */
  leader: string;
  replicas?: { name: string; current: boolean }[];
}

/** The JetStream metadata group, as its leader reports it (the system account's JSZ, asked of the leader only). */
async function meta(nc: NatsConnection): Promise<MetaCluster | undefined> {
  try {
    const reply = await nc.request('$SYS.REQ.SERVER.PING.JSZ', JSON.stringify({ leader_only: true }), {
      timeout: 1_000,
    });
    const body = reply.json() as { server: { name: string }; data?: { meta_cluster?: MetaCluster } };
    return { ...body.data?.meta_cluster, leader: body.server.name };
  } catch {
    return undefined;
  }
}

/** A node is back in full: the metadata group and the RESULTS stream each have a leader and two current followers. */
async function healed(nc: NatsConnection, jsm: JetStreamManager): Promise<boolean> {
  const m = await meta(nc);
  const info = await jsm.streams.info(STREAMS.results);
  const current = (rs: { current: boolean }[] | undefined) => rs?.length === 2 && rs.every((r) => r.current);
  return !!m?.leader && current(m.replicas) && !!info.cluster?.leader && current(info.cluster.replicas);
}

describe('a replicated JetStream cluster', () => {
  it('a study survives kill -9 of the meta leader and of the RESULTS leader; each epoch accepted once, ledger sums to zero', async () => {
    cluster = await new Cluster().start({ nodes: 3 });
    const c = cluster;
    const nodes = c.jetstream!.nodes;
    const byName = (name: string): ClusterNode => nodes.find((n) => n.name === name)!;
    await c.startCoordinator(['--log-level', 'info']);
    await c.startWorker('a', ['--slots', '2', '--log-level', 'info']);
    await c.startWorker('b', ['--slots', '2', '--log-level', 'info']);
    await c.waitForWorkers(2);
    const admin = await jetstreamManager(c.admin);
    expect((await admin.streams.info(STREAMS.results)).config.num_replicas).toBe(3);
    const creds = await c.auth.systemCredentials();
    sys = await connectNats({
      url: c.url,
      name: 'test-sys',
      creds: { key: parseCredentials(creds).key, text: creds },
    });

    // Paid work, so the ledger has escrow, payments and a refund to balance.

    const submitted = await c.submitPaidStudy(20);

    const progress = () => c.epochsDone(submitted.study_id);
    await until(async () => (await progress()) >= 1, 60_000, 'a first epoch', true);
    let done = await progress();
    // 1. The metadata leader.
    const metaLeader = (await meta(sys))!.leader!;
    expect(nodes.map((n) => n.name)).toContain(metaLeader);
    await byName(metaLeader).stop('SIGKILL');
    await until(
      async () => {
        const now = (await meta(sys!))?.leader;
        return now !== undefined && now !== metaLeader;
      },
      30_000,
      'a new meta leader',
    );
    // Generous waits: three servers, a coordinator and two workers share two cores, and a stream's new leader is found
    // by its consumers only after their heartbeats miss; the test is about surviving, not about how fast.
    await until(async () => (await progress()) > done, 120_000, 'progress without the old meta leader', true);
    await byName(metaLeader).start();
    // Killing a second node before the first has caught up would leave one of three: no quorum, by design.
    await until(() => healed(sys!, admin), 60_000, 'the restarted node to catch up', true);
    // 2. The leader of the RESULTS stream (every result batch goes through it).
    done = await progress();
    const leader = (await admin.streams.info(STREAMS.results)).cluster!.leader!;
    await byName(leader).stop('SIGKILL');
    await until(
      async () => {
        const info = await admin.streams.info(STREAMS.results);
        return info.cluster?.leader !== undefined && info.cluster.leader !== leader;
      },
      30_000,
      'a new RESULTS leader',
      true,
    );
    await until(
      async () => (await progress()) > done,
      120_000,
      'progress without the old RESULTS leader',
      true,
    );
    await byName(leader).start();
    await until(() => healed(sys!, admin), 60_000, 'the second restarted node to catch up', true);

    // The coordinator's view of the bus (`plurigrid health`) shows every stream back with its three replicas.
    await until(
      async () => {
        const h = await c.api.health();
        return h.bus.connected && h.bus.streams.every((s) => s.ok && s.replicas === 3 && s.current === 3);
      },
      90_000,
      'health to show every stream with 3 current replicas',
      true,
    );
    const final = await c.waitForStudy(submitted.study_id, 180_000);
    expect(final.state, JSON.stringify(final.failures.slice(0, 3))).toBe('done');
    expect(final.epochs).toMatchObject({ total: 40, done: 40 });
    // Each epoch accepted exactly once: one row per epoch, one accepted output per job.
    const { rows } = await c.api.allResults(submitted.study_id);
    expect(rows).toHaveLength(40);
    expect(new Set(rows.map((r) => r.epoch_id)).size).toBe(40);
    const jobs = await c.api.allProvenance(submitted.study_id);
    for (const job of jobs) {
      expect(job.accepted).not.toBeNull();
      const paid = job.executions.filter((e) => e.verdict === 'valid');
      expect(paid.length).toBeGreaterThanOrEqual(2);
      expect(new Set(paid.map((e) => e.worker_id)).size).toBe(paid.length);
    }
    const ledger = await c.api.ledger({ verify: true, limit: 1000 });
    expect(ledger.check).toMatchObject({ ok: true, problems: [] });
    expect(balanceSum(ledger.balances)).toBe(0);
  }, 480_000);
});
