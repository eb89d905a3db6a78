// Forged actions by real clients against a real nats-server with authentication: each must be refused by the server
// (a permissions violation, which the server logs with the offender's key) or by the coordinator (a signed request
// from the wrong key). Plus enrollment with a one-time token, and a revoked worker that tries to come back.

import { mkdtempSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { createUser } from '@nats-io/nkeys';
import { errors, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/coordinator/client.ts';
import { ApiError } from '../../src/coordinator/errors.ts';
import { loadCredentials, parseToken } from '../../src/transport/auth.ts';
import { connectNats } from '../../src/transport/connect.ts';
import { inboxPrefix } from '../../src/transport/permissions.ts';
import { STREAMS } from '../../src/transport/resources.ts';
import { subjects } from '../../src/transport/subjects.ts';
import { runCli } from '../fixtures/cli.ts';
import { Cluster, until } from './cluster.ts';

let cluster: Cluster;
let workerId: string;
const conns: NatsConnection[] = [];

beforeAll(async () => {
  cluster = await new Cluster().start();
  await cluster.startCoordinator(['--log-level', 'info']);
  await cluster.startWorker('a');
  await cluster.waitForWorkers(1);
  workerId = (await cluster.api.workers()).workers[0]!.worker_id;
}, 60_000);

afterAll(async () => {
  await Promise.all(conns.map((nc) => nc.close().catch(() => {})));
  await cluster?.stop();
});

/** A connection of `role`, whose permission errors are collected. */
async function as(role: 'worker' | 'client' | 'dashboard', kp = createUser()) {
  const nc = await cluster.connectAs(role, `forger-${role}`, kp);
  conns.push(nc);
  const violations: InstanceType<typeof errors.PermissionViolationError>[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'error' && s.error instanceof errors.PermissionViolationError) violations.push(s.error);
    }
  })();
  /** Waits until the server has refused `op` on `subject`, and checks its log names the offender. */
  const refused = async (operation: 'publish' | 'subscription', subject: string) => {
    await until(
      () => violations.some((v) => v.operation === operation && v.subject === subject),
      5_000,
      `a ${operation} violation on ${subject}`,
    );
    const log = await readFile(cluster.nats.logFile, 'utf8');
    const kind = operation === 'publish' ? 'Publish Violation' : 'Subscription Violation';
    expect(log).toContain(`${kind} - Nkey "${kp.getPublicKey()}", Subject "${subject}"`);
  };
  return { nc, key: kp.getPublicKey(), refused };
}

describe('permissions, enforced by nats-server', () => {
  it("a worker cannot publish another worker's heartbeat or results", async () => {
    const w = await as('worker');
    w.nc.publish(subjects.heartbeat(workerId), '{}');
    w.nc.publish(subjects.results(workerId), '{}');
    w.nc.publish(subjects.workerAdvert(workerId), '{}');
    await w.refused('publish', subjects.heartbeat(workerId));
    await w.refused('publish', subjects.results(workerId));
    await w.refused('publish', subjects.workerAdvert(workerId));
    // …nor take its assignments.
    w.nc.subscribe(subjects.assign(workerId));
    await w.refused('subscription', subjects.assign(workerId));
  });

  it('a client cannot publish results, assignments or cancels', async () => {
    const c = await as('client');
    for (const subject of [
      subjects.results(workerId),
      subjects.assign(workerId),
      subjects.cancel(workerId),
    ]) {
      c.nc.publish(subject, '{}');
      await c.refused('publish', subject);
    }
  });

  it("a client cannot answer the API's requests, nor read another user's replies or events", async () => {
    const c = await as('client');
    c.nc.subscribe(subjects.api('submit'), { queue: 'q' });
    await c.refused('subscription', subjects.api('submit'));
    c.nc.subscribe(subjects.apiAll);
    await c.refused('subscription', subjects.apiAll);
    const theirs = `${inboxPrefix(cluster.owner)}.>`;
    c.nc.subscribe(theirs);
    await c.refused('subscription', theirs);
    c.nc.subscribe(subjects.eventsOf(cluster.owner));
    await c.refused('subscription', subjects.eventsOf(cluster.owner));
  });

  it('nobody but the coordinator reaches the JetStream API; the streams survive the attempt', async () => {
    for (const role of ['worker', 'client', 'dashboard'] as const) {
      const x = await as(role);
      await expect(jetstreamManager(x.nc)).rejects.toThrow();
      x.nc.publish(`$JS.API.STREAM.DELETE.${STREAMS.results}`, '');
      await x.refused('publish', `$JS.API.STREAM.DELETE.${STREAMS.results}`);
      x.nc.publish('$KV.jobs.x', '{}');
      await x.refused('publish', '$KV.jobs.x');
    }
    const jsm = await jetstreamManager(cluster.admin);
    expect((await jsm.streams.info(STREAMS.results)).config.name).toBe(STREAMS.results);
  });
});

describe('studies belong to their owner', () => {
  it("another client can neither read nor cancel someone's study; the owner can", async () => {
    const submitted = await cluster.submit({
      scenario: (await import('./cluster.ts')).example('suburb-summer'),
    });
    const other = await as('client');
    const api = new ApiClient(other.nc, 10_000);
    for (const read of [
      () => api.status(submitted.study_id),
      () => api.results(submitted.study_id),
      () => api.provenance(submitted.study_id),
    ]) {
      await expect(read()).rejects.toSatisfy((e) => e instanceof ApiError && e.code === 'forbidden');
    }
    expect((await api.list()).studies.map((s) => s.study_id)).not.toContain(submitted.study_id);
    // Unsigned, or signed by the wrong key: refused, and the study runs on.
    await expect(api.cancel(submitted.study_id)).rejects.toSatisfy(
      (e) => e instanceof ApiError && e.code === 'unauthorized',
    );
    await expect(api.cancel(submitted.study_id, createUser())).rejects.toSatisfy(
      (e) => e instanceof ApiError && e.code === 'forbidden',
    );
    expect((await cluster.api.status(submitted.study_id)).study_id).toBe(submitted.study_id);
    // A reply sent to the owner's inbox reaches nobody but the owner: the forger learns nothing by asking for one.
    expect((await cluster.api.list()).studies.map((s) => s.study_id)).toContain(submitted.study_id);
    await cluster.waitForStudy(submitted.study_id);
  }, 60_000);

  it('the coordinator answers only to inboxes: a reply subject a forger listens on, or a JetStream command, gets nothing', async () => {
    const submitted = await cluster.submit({
      scenario: (await import('./cluster.ts')).example('suburb-summer'),
    });
    const forger = await as('client');
    const leaked: string[] = [];
    forger.nc.subscribe(subjects.eventsOf('public'), {
      callback: (_e, m) => {
        leaked.push(m.string());
      },
    });
    await forger.nc.flush();
    const body = JSON.stringify({ study_id: submitted.study_id });
    forger.nc.publish(subjects.api('status'), body, { reply: 'plurigrid.events.public.leak' });
    // Were the coordinator a confused deputy, its answer would delete the stream.
    forger.nc.publish(subjects.api('status'), body, { reply: `$JS.API.STREAM.DELETE.${STREAMS.results}` });
    // A request of its own afterwards: once answered, the two before it (same connection, in order) were handled.
    await new ApiClient(forger.nc, 10_000).list();
    await new Promise((r) => setTimeout(r, 200));
    expect(leaked).toEqual([]);
    const jsm = await jetstreamManager(cluster.admin);
    expect((await jsm.streams.info(STREAMS.results)).config.name).toBe(STREAMS.results);
    const ignored = cluster.log(cluster.coordinator!).match(/request without an inbox to answer ignored/g);
    expect(ignored).toHaveLength(2);
  }, 30_000);
});

describe('enrollment and revocation', () => {
  it('a worker enrolls with a one-time token and joins; once revoked it is cut off and cannot come back', async () => {
    const token = await runCli(['enroll-token', '--data-dir', cluster.dataDir, '--ttl', '10m']);
    expect(token.code, token.stderr).toBe(0);
    const t = token.stdout.trim();
    expect(t).toMatch(/^pgenroll1_/);
    // A machine of its own: nothing but the token and the server's URL.
    const elsewhere = mkdtempSync(join(tmpdir(), 'plurigrid-enrolled-'));
    const worker = await cluster.startWorker('enrolled', ['--enroll', t], elsewhere);
    await cluster.waitForWorkers(2);
    const creds = await loadCredentials(join(elsewhere, 'workers', 'enrolled', 'worker.creds'));
    expect((await cluster.api.workers()).workers.map((w) => w.worker_id)).toContain(creds.key);
    expect(cluster.log(cluster.coordinator!)).toMatch(/"msg":"enrolled"/);

    // The token was good once.
    const again = await runCli([
      'worker',
      '--name',
      'second',
      '--nats',
      cluster.nats.url,
      '--data-dir',
      mkdtempSync(join(tmpdir(), 'plurigrid-enrolled-')),
      '--enroll',
      t,
    ]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/used already/);

    const revoked = await runCli([
      'revoke',
      creds.key,
      '--data-dir',
      cluster.dataDir,
      '--nats',
      cluster.nats.url,
    ]);
    expect(revoked.code, revoked.stderr).toBe(0);
    // Disconnected at once; its credentials no longer connect.
    await until(
      async () => !(await cluster.api.workers()).workers.some((w) => w.worker_id === creds.key),
      15_000,
      'the revoked worker to drop out',
    );
    await expect(
      connectNats({ url: cluster.nats.url, name: 'revoked', creds, firstConnectTimeoutMs: 5_000 }),
    ).rejects.toBeInstanceOf(errors.AuthorizationError);
    await cluster.kill(worker);
  }, 90_000);

  it('a token from another coordinator, or a revoked key, gets no credentials', async () => {
    const foreign = new Cluster();
    await foreign.start();
    try {
      const t = await foreign.auth.enrollmentToken('worker', 600);
      const bootstrap = await connectNats({
        url: cluster.nats.url,
        name: 'foreign',
        firstConnectTimeoutMs: 5_000,
        bearer: { jwt: parseToken(t.token).jwt, key: createUser().getPublicKey() },
      }).catch((e: unknown) => e);
      // Our server does not even accept the foreign operator's JWT.
      expect(bootstrap).toBeInstanceOf(errors.AuthorizationError);
    } finally {
      await foreign.stop();
    }
    const kp = createUser();
    await cluster.auth.revoke(kp.getPublicKey());
    const { token } = await cluster.auth.enrollmentToken('worker', 600);
    const c = await as('client');
    await expect(new ApiClient(c.nc, 10_000).enroll({ token, key: kp.getPublicKey() })).rejects.toSatisfy(
      (e) => e instanceof ApiError && e.code === 'unauthorized',
    );
  }, 60_000);
});
