import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StorageType } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  connectNats,
  decode,
  type EmbeddedNats,
  encode,
  ensureResources,
  findNatsServer,
  keepStreams,
  LARGE_OUTPUT_BYTES,
  MessageDecodeError,
  NATS_URL_ENV,
  NatsServerStartError,
  openTransport,
  ResourceConflictError,
  STREAMS,
  SubjectIdError,
  startEmbeddedNats,
  subjects,
} from '../../src/transport/index.ts';
import { OUTPUT_PART_BYTES, workerBus } from '../../src/transport/worker-bus.ts';

/** Rejects when `promise` does not settle within `ms`, naming what it waited for. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** True while `pid` runs (a zombie waiting to be reaped counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false; // vanished between the two checks
  }
}

const quiet = () => {};

/** Waits (bounded) until `pid` is gone. */
async function gone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return !alive(pid);
}

/**
 * Runs a separate Node process that starts an embedded server in `dataDir`, prints its pid and then either exits
 * without calling stop() or waits to be killed. Resolves with the server's pid and the owner process.
 */
async function ownerProcess(dataDir: string, then: 'exit' | 'hang') {
  const script = join(dataDir, 'owner.mjs');
  const module = fileURLToPath(new URL('../../src/transport/nats-server.ts', import.meta.url));
  await writeFile(
    script,
    `import { startEmbeddedNats } from ${JSON.stringify(module)};
const s = await startEmbeddedNats({ dataDir: ${JSON.stringify(dataDir)}, log: () => {} });
console.log(JSON.stringify({ pid: s.pid }));
${then === 'exit' ? 'process.exit(0);' : 'setInterval(() => {}, 1000);'}
`,
  );
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await within(
    new Promise<string>((done, fail) => {
      let out = '';
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('\n')) done(out);
      });
      child.once('exit', (code) => fail(new Error(`owner exited with ${code} before printing`)));
    }),
    20_000,
    'the owner process to start its server',
  ).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  return { serverPid: (JSON.parse(line) as { pid: number }).pid, child };
}
const dirs: string[] = [];
const servers: EmbeddedNats[] = [];

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'plurigrid-transport-'));
  dirs.push(dir);
  return dir;
}

async function startServer(dataDir: string, port?: number): Promise<EmbeddedNats> {
  const server = await within(
    startEmbeddedNats({ dataDir, port, log: quiet }),
    15_000,
    'nats-server to start',
  );
  servers.push(server);
  return server;
}

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('subjects', () => {
  it('builds every subject and rejects ids that are not one literal token', () => {
    expect(subjects.api('submit')).toBe('plurigrid.api.submit');
    expect(subjects.heartbeat('w1')).toBe('plurigrid.worker.hb.w1');
    expect(subjects.assign('w1')).toBe('plurigrid.worker.w1.assign');
    expect(subjects.cancel('w1')).toBe('plurigrid.worker.w1.cancel');
    expect(subjects.results('job-1')).toBe('plurigrid.results.job-1');
    expect(subjects.studyEvents('public', 's1')).toBe('plurigrid.events.public.study.s1');
    expect(subjects.jobEvents('public', 's1')).toBe('plurigrid.events.public.jobs.s1');
    for (const bad of ['a.b', 'a*', '>', 'a b', '', 'tab\t']) {
      expect(() => subjects.results(bad)).toThrow(SubjectIdError);
    }
    expect(() => subjects.assign('w.1')).toThrow(
      /invalid worker id "w\.1" for a NATS subject: must not contain "\."/,
    );
  });
});

describe('json codec', () => {
  const Msg = z.strictObject({ job_id: z.string(), attempt: z.number().int().min(1) });

  it('round-trips and names the bad path', () => {
    expect(decode(encode({ job_id: 'j', attempt: 2 }), Msg, 'assignment')).toEqual({
      job_id: 'j',
      attempt: 2,
    });
    expect(() => decode(encode({ job_id: 'j', attempt: 0 }), Msg, 'assignment')).toThrow(
      /invalid assignment:\n {2}attempt: expected a number ≥ 1, got 0/,
    );
    expect(() => decode(new TextEncoder().encode('{nope'), Msg, 'assignment')).toThrow(MessageDecodeError);
  });
});

describe('transport on a real nats-server', () => {
  let dataDir: string;
  let server: EmbeddedNats;

  beforeAll(async () => {
    dataDir = await tempDir();
    server = await startServer(dataDir);
  });

  it('finds the binary, starts on loopback and stops (the pid is gone)', async () => {
    expect(findNatsServer()).toMatch(/nats-server$/);
    const own = await startServer(await tempDir());
    expect(own.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    expect(alive(own.pid)).toBe(true);
    const argv = (await readFile(`/proc/${own.pid}/cmdline`, 'utf8')).split('\u0000');
    expect(argv).toEqual(expect.arrayContaining(['-js', '-a', '127.0.0.1']));
    await within(own.stop(), 10_000, 'nats-server to stop');
    expect(alive(own.pid)).toBe(false);
    await own.stop(); // idempotent
  });

  it('creates the resources twice, and concurrently from several connections, without error', async () => {
    const conns = await Promise.all(
      [1, 2, 3].map((i) => within(connectNats({ url: server.url, name: `t${i}` }), 10_000, 'connect')),
    );
    try {
      await within(ensureResources(conns[0]!), 20_000, 'first ensureResources');
      const again = await within(ensureResources(conns[0]!), 20_000, 'second ensureResources');
      await within(Promise.all(conns.map((nc) => ensureResources(nc))), 20_000, 'concurrent ensureResources');

      const results = await again.jsm.streams.info(STREAMS.results);
      expect(results.config.subjects).toEqual(['plurigrid.results.>']);
      expect(results.config.duplicate_window).toBe(nanos(120_000));
      expect(results.config.max_msg_size).toBe(1024 * 1024);
      expect(results.config.storage).toBe('file');
      const events = await again.jsm.streams.info(STREAMS.events);
      expect(events.config.storage).toBe('memory');
      expect(events.config.max_age).toBe(nanos(24 * 3600 * 1000));
      const workers = await again.kv.workers.status();
      expect(workers.ttl).toBe(30_000);
      expect(workers.history).toBe(1);
    } finally {
      await Promise.all(conns.map((nc) => nc.close()));
    }
  });

  it('stops the server when its owner exits without calling stop()', async () => {
    const { serverPid } = await ownerProcess(await tempDir(), 'exit');
    try {
      expect(await gone(serverPid, 10_000)).toBe(true);
    } finally {
      if (alive(serverPid)) process.kill(serverPid, 'SIGKILL');
    }
  });

  it('stops a server orphaned by a killed owner on the next start with the same data dir', async () => {
    const dir = await tempDir();
    const { serverPid, child } = await ownerProcess(dir, 'hang');
    try {
      child.kill('SIGKILL');
      await within(new Promise((r) => child.once('exit', r)), 10_000, 'the owner to die');
      expect(alive(serverPid)).toBe(true); // SIGKILL leaves no chance to clean up
      const next = await startServer(dir);
      expect(alive(serverPid)).toBe(false);
      expect(next.pid).not.toBe(serverPid);
      await next.stop();
    } finally {
      if (alive(serverPid)) process.kill(serverPid, 'SIGKILL');
    }
  });

  it('refuses to start a second server on a store that a live process owns', async () => {
    const dir = await tempDir();
    const { serverPid, child } = await ownerProcess(dir, 'hang');
    try {
      await expect(startEmbeddedNats({ dataDir: dir, log: quiet })).rejects.toThrow(
        new RegExp(`already runs an embedded nats-server \\(pid ${serverPid}\\)`),
      );
    } finally {
      child.kill('SIGTERM');
      await within(new Promise((r) => child.once('exit', r)), 10_000, 'the owner to exit');
      expect(await gone(serverPid, 10_000)).toBe(true);
    }
  });

  it('fails with the log tail when the port is taken, and leaves no process behind', async () => {
    const blocker = createServer();
    await new Promise<void>((done) => blocker.listen(0, '127.0.0.1', done));
    const port = (blocker.address() as { port: number }).port;
    try {
      const start = startEmbeddedNats({ dataDir: await tempDir(), port, log: quiet });
      const err = await within(
        start.then(
          () => null,
          (e: unknown) => e,
        ),
        15_000,
        'start to fail',
      );
      expect(err).toBeInstanceOf(NatsServerStartError);
      expect((err as Error).message).toMatch(/exited during start-up/);
      expect((err as NatsServerStartError).logTail).toMatch(/address already in use/);
    } finally {
      blocker.close();
    }
  });

  it('brings drifted settings back in line and refuses what cannot change in place', async () => {
    const fresh = await startServer(await tempDir());
    const nc = await within(connectNats({ url: fresh.url, name: 'drift' }), 10_000, 'connect');
    try {
      const { jsm } = await within(ensureResources(nc), 20_000, 'ensureResources');
      await jsm.streams.update(STREAMS.results, { duplicate_window: nanos(5_000), max_msg_size: 1000 });
      await jsm.streams.update('KV_workers', { max_age: nanos(120_000) });
      const again = await within(ensureResources(nc), 20_000, 'ensureResources after drift');
      const results = await jsm.streams.info(STREAMS.results);
      expect(results.config.duplicate_window).toBe(nanos(120_000));
      expect(results.config.max_msg_size).toBe(1024 * 1024);
      expect((await again.kv.workers.status()).ttl).toBe(30_000);

      await jsm.streams.delete(STREAMS.events);
      await jsm.streams.add({
        name: STREAMS.events,
        subjects: [subjects.eventsAll],
        // The definition keeps events in memory; a file-backed stream cannot be changed in place.
        storage: StorageType.File,
      });
      await expect(within(ensureResources(nc), 20_000, 'ensureResources')).rejects.toThrow(
        ResourceConflictError,
      );
    } finally {
      await nc.close();
      await fresh.stop();
    }
  });

  it('creates the resources concurrently on a fresh server', async () => {
    const fresh = await startServer(await tempDir());
    const conns = await Promise.all(
      [1, 2, 3, 4].map((i) => within(connectNats({ url: fresh.url, name: `c${i}` }), 10_000, 'connect')),
    );
    try {
      await within(Promise.all(conns.map((nc) => ensureResources(nc))), 20_000, 'concurrent ensureResources');
    } finally {
      await Promise.all(conns.map((nc) => nc.close()));
      await fresh.stop();
    }
  });

  it('stores a result published twice with the same Nats-Msg-Id once; KV and large outputs round-trip', async () => {
    const nc = await within(connectNats({ url: server.url, name: 'dedupe' }), 10_000, 'connect');
    try {
      const { js, jsm, kv } = await within(ensureResources(nc), 20_000, 'ensureResources');
      const subject = subjects.results('job-dedupe');
      const first = await js.publish(subject, encode({ n: 1 }), { msgID: 'job-dedupe#1', timeout: 5_000 });
      const second = await js.publish(subject, encode({ n: 1 }), { msgID: 'job-dedupe#1', timeout: 5_000 });
      expect(first.duplicate).toBe(false);
      expect(second.duplicate).toBe(true);
      expect(second.seq).toBe(first.seq);
      const info = await jsm.streams.info(STREAMS.results, { subjects_filter: subject });
      expect(info.state.subjects?.[subject]).toBe(1);

      const Rec = z.strictObject({ status: z.string(), attempt: z.number() });
      const rev = await kv.jobs.put('job-1', encode({ status: 'queued', attempt: 0 }));
      const entry = await kv.jobs.get('job-1');
      expect(entry?.revision).toBe(rev);
      expect(decode(entry!.value, Rec, 'job record')).toEqual({ status: 'queued', attempt: 0 });

      // A large output goes in parts on the worker's own subjects, read back in order by the coordinator.
      const big = randomBytes(LARGE_OUTPUT_BYTES + 100_000);
      const parts = await workerBus(nc, 'wbig').putOutput('job-1', 1, big);
      expect(parts).toBe(Math.ceil(big.length / OUTPUT_PART_BYTES));
      const back = Buffer.concat(
        await Promise.all(
          Array.from({ length: parts }, (_, i) =>
            jsm.streams
              .getMessage(STREAMS.outputs, { last_by_subj: subjects.outputPart('wbig', 'job-1', 1, i) })
              .then((m) => m!.data),
          ),
        ),
      );
      expect(back.length).toBe(big.length);
      const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
      expect(sha(back!)).toBe(sha(big));
    } finally {
      await nc.close();
    }
  });

  it('keeps stream contents across a restart on the same port and store; the client reconnects by itself', async () => {
    const dir = await tempDir();
    const first = await startServer(dir);
    const nc = await within(connectNats({ url: first.url, name: 'restart' }), 10_000, 'connect');
    try {
      const { js, jsm } = await within(ensureResources(nc), 20_000, 'ensureResources');
      const subject = subjects.results('job-restart');
      await js.publish(subject, encode({ before: true }), { msgID: 'restart-1', timeout: 5_000 });

      const seen: string[] = [];
      const statuses = nc.status();
      const reconnected = (async () => {
        for await (const s of statuses) {
          seen.push(s.type);
          if (s.type === 'reconnect') return;
        }
      })();

      await within(first.stop(), 10_000, 'nats-server to stop');
      expect(alive(first.pid)).toBe(false);
      const second = await startServer(dir, first.port);
      expect(second.url).toBe(first.url);
      await within(reconnected, 15_000, 'the client to reconnect');
      expect(seen).toContain('disconnect');

      await js.publish(subject, encode({ after: true }), { msgID: 'restart-2', timeout: 5_000 });
      const info = await jsm.streams.info(STREAMS.results, { subjects_filter: subject });
      expect(info.state.subjects?.[subject]).toBe(2);
      await second.stop();
    } finally {
      await nc.close();
    }
  });

  it('recreates the memory-storage EVENTS stream after a server restart, and it takes events again', async () => {
    const dir = await tempDir();
    const first = await startServer(dir);
    const nc = await within(connectNats({ url: first.url, name: 'keeper' }), 10_000, 'connect');
    const { js, jsm } = await within(ensureResources(nc), 20_000, 'ensureResources');
    const keeper = keepStreams(nc, jsm);
    const statuses = nc.status();
    const reconnected = (async () => {
      for await (const s of statuses) if (s.type === 'reconnect') return;
    })();
    try {
      await js.publish(subjects.studyEvents('public', 's1'), encode({ before: true }), { timeout: 5_000 });
      await within(first.stop(), 10_000, 'nats-server to stop');
      const second = await startServer(dir, first.port);
      // (A request made while disconnected waits out its whole timeout; ask only once the client is back.)
      await within(reconnected, 10_000, 'the client to reconnect');

      // nats-server 2.9 restores file streams only: the stream is back because keepStreams recreated it.
      const back = await within(
        (async () => {
          for (;;) {
            const info = await jsm.streams.info(STREAMS.events).catch(() => null);
            if (info) return info;
            await new Promise((r) => setTimeout(r, 100));
          }
        })(),
        10_000,
        'the EVENTS stream to exist again',
      );
      expect(back.config.storage).toBe('memory');
      const ack = await js.publish(subjects.studyEvents('public', 's1'), encode({ after: true }), {
        timeout: 5_000,
      });
      expect(ack.stream).toBe(STREAMS.events);
      await second.stop();
    } finally {
      keeper.stop();
      await nc.close();
    }
  });

  it('openTransport uses a given URL, or starts and stops its own embedded server', async () => {
    const saved = process.env[NATS_URL_ENV];
    delete process.env[NATS_URL_ENV];
    try {
      const remote = await within(
        openTransport({ url: server.url, dataDir: await tempDir(), name: 'given' }),
        20_000,
        'openTransport with a url',
      );
      expect(remote.embedded).toBe(false);
      expect(remote.url).toBe(server.url);
      await remote.close();
      expect(remote.nc.isClosed()).toBe(true);

      const local = await within(
        openTransport({ dataDir: await tempDir(), name: 'embedded', log: quiet }),
        20_000,
        'openTransport with the embedded server',
      );
      expect(local.embedded).toBe(true);
      expect(local.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
      await local.resources.kv.studies.put('s1', encode({ ok: true }));
      const port = Number(new URL(local.url).port);
      await within(local.close(), 15_000, 'close');
      await local.close(); // idempotent
      await expect(
        within(connectNats({ url: local.url, name: 'gone', firstConnectTimeoutMs: 500 }), 5_000, 'connect'),
      ).rejects.toThrow(new RegExp(`cannot reach the NATS server at nats://127.0.0.1:${port}`));
    } finally {
      if (saved !== undefined) process.env[NATS_URL_ENV] = saved;
    }
  });
});
