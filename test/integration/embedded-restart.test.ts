// A coordinator restart on the embedded server: the server must come back on the same port, so that workers holding
// its URL reconnect by themselves, and a client must say in its log when the bus is away and when it is back.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { connectNats, logConnectionStatus, NATS_URL_ENV } from '../../src/transport/connect.ts';
import { type EmbeddedNats, startEmbeddedNats } from '../../src/transport/nats-server.ts';
import { subjects } from '../../src/transport/subjects.ts';

const dirs: string[] = [];
const servers: EmbeddedNats[] = [];

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'plurigrid-restart-'));
  dirs.push(dir);
  return dir;
}

async function start(dataDir: string, log: (line: string) => void = () => {}): Promise<EmbeddedNats> {
  const server = await startEmbeddedNats({ dataDir, log });
  servers.push(server);
  return server;
}

/** A real pino logger whose JSON lines land in `lines`. */
function memoryLogger() {
  const lines: { level: number; nats_status?: string; down_ms?: number }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), lines };
}

async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const WARN = 40;
const INFO = 30;

describe('embedded nats-server restart', () => {
  it('comes back on the same port without being told it, and a connected client reconnects and logs it', async () => {
    const dir = await tempDir();
    const first = await start(dir);
    const nc = await connectNats({ url: first.url, name: 'restart-client' });
    const { log, lines } = memoryLogger();
    const watch = logConnectionStatus(nc, log);
    try {
      await first.stop();
      await until(
        () => lines.some((l) => l.level === WARN && l.nats_status === 'disconnect'),
        5_000,
        'a warning that the connection is lost',
      );

      const second = await start(dir);
      expect(second.port).toBe(first.port);
      expect(second.url).toBe(first.url);
      await until(
        () => lines.some((l) => l.level === INFO && l.nats_status === 'reconnect'),
        10_000,
        'the client to reconnect',
      );
      expect(lines.find((l) => l.nats_status === 'reconnect')?.down_ms).toBeGreaterThan(0);
      await nc.flush();
      await second.stop();
    } finally {
      watch.stop();
      await nc.close();
    }
    await watch.done;
  });

  it('takes a free port, and says so, when its previous port is taken by someone else', async () => {
    const dir = await tempDir();
    const first = await start(dir);
    await first.stop();
    expect((await readFile(join(dir, 'nats-port'), 'utf8')).trim()).toBe(String(first.port));

    const squatter = createServer();
    await new Promise<void>((done) => squatter.listen(first.port, '127.0.0.1', done));
    try {
      const said: string[] = [];
      const second = await start(dir, (line) => said.push(line));
      expect(second.port).not.toBe(first.port);
      expect(said).toHaveLength(1);
      expect(said[0]).toContain(String(first.port));
      await second.stop();
      // The new port is the one a later restart reuses.
      expect((await readFile(join(dir, 'nats-port'), 'utf8')).trim()).toBe(String(second.port));
    } finally {
      squatter.close();
    }
  });
});

describe('a worker across a restart of the embedded server', () => {
  it('finds the server again through <data-dir>/nats.url, heartbeats again, and logs the outage', async () => {
    const dir = await tempDir();
    const first = await start(dir);
    // What `plurigrid coordinator` without --nats writes for the workers on this machine.
    await writeFile(join(dir, 'nats.url'), `${first.url}\n`);
    const env = { ...process.env };
    delete env[NATS_URL_ENV];
    delete env.PLURIGRID_DATA_DIR;
    const cli = fileURLToPath(new URL('../../bin/plurigrid.js', import.meta.url));
    const worker: ChildProcess = spawn(
      process.execPath,
      [cli, 'worker', '--name', 'w1', '--data-dir', dir, '--executor', 'process', '--slots', '1'],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    const lines: { level: number; nats_status?: string }[] = [];
    worker.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
    });
    let partial = '';
    worker.stderr!.on('data', (c: Buffer) => {
      const parts = (partial + c.toString()).split('\n');
      partial = parts.pop()!;
      for (const line of parts.filter(Boolean)) {
        try {
          lines.push(JSON.parse(line));
        } catch {
          // not a log line
        }
      }
    });
    try {
      await until(() => out.includes('ready'), 20_000, 'the worker to start');
      await first.stop();
      await until(
        () => lines.some((l) => l.level === WARN && l.nats_status === 'disconnect'),
        5_000,
        'the worker to warn that the bus is away',
      );
      const second = await start(dir);
      await until(
        () => lines.some((l) => l.level === INFO && l.nats_status === 'reconnect'),
        10_000,
        'the worker to reconnect',
      );
      const nc = await connectNats({ url: second.url, name: 'watcher' });
      try {
        const beat = nc.subscribe(subjects.heartbeatAll, { max: 1 });
        const got = (async () => {
          for await (const m of beat) return m.subject;
        })();
        const timeout = new Promise((r) => setTimeout(r, 5_000, null));
        expect(await Promise.race([got, timeout])).toMatch(/^plurigrid\.worker\.hb\./);
      } finally {
        await nc.close();
      }
    } finally {
      const exited = new Promise((r) => worker.once('exit', r));
      worker.kill('SIGTERM');
      const killer = setTimeout(() => worker.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
    }
  });
});
