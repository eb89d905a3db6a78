// Coordinator failover, measured: an active coordinator and a standby (real `plurigrid coordinator` processes) on an
// embedded nats-server with authentication, and a client asking the API `list` every 20 ms. The active one is
// (i) killed -9 BENCH_KILLS times (default 10): on the same machine the standby sees the holder's process is gone
// and takes the lease at once; (ii) paused with SIGSTOP BENCH_PAUSES times (default 5): the holder is alive but
// silent, as a machine cut off would be, so the standby waits for the lease's TTL. Reported: time from the fault to
// the standby's "coordinator ready", and to the first API answer. Writes bench/results/failover.json.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Table from 'cli-table3';
import { ApiClient } from '../src/coordinator/client.ts';
import { AuthStore, parseCredentials } from '../src/transport/auth.ts';
import { connectNats } from '../src/transport/connect.ts';
import { startEmbeddedNats } from '../src/transport/nats-server.ts';
import { LEADER_TTL_MS } from '../src/transport/resources.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const KILLS = Number(process.env.BENCH_KILLS ?? 10);
const PAUSES = Number(process.env.BENCH_PAUSES ?? 5);

const dataDir = mkdtempSync(join(tmpdir(), 'plurigrid-failover-'));
const auth = await AuthStore.open(dataDir, { create: true });
const server = await startEmbeddedNats({ dataDir, config: await auth.serverConfig() });
const issued = await auth.credentials('client');
const client = await connectNats({
  url: server.url,
  name: 'bench-client',
  creds: parseCredentials(new TextEncoder().encode(issued.creds)),
});
const api = new ApiClient(client, 500);

/** A coordinator process; resolves when its stdout matches `ready`. */
function coordinator(ready: RegExp): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn(
    process.execPath,
    [
      join(root, 'bin', 'plurigrid.js'),
      'coordinator',
      '--nats',
      server.url,
      '--data-dir',
      dataDir,
      '--log-level',
      'error',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) resolve({ child, out: () => out });
    });
    child.once('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${out}`)));
  });
}

async function until(check: () => boolean | Promise<boolean>): Promise<number> {
  for (;;) {
    if (await check()) return performance.now();
    await new Promise((r) => setTimeout(r, 20));
  }
}

const answers = () =>
  api.list(1).then(
    () => true,
    () => false,
  );

type Sample = { ready_ms: number; api_ms: number };
const runs: Record<'kill' | 'pause', Sample[]> = { kill: [], pause: [] };
let active = await coordinator(/coordinator ready/);
for (let i = 0; i < KILLS + PAUSES; i++) {
  const fault = i < KILLS ? 'kill' : 'pause';
  const standby = await coordinator(/coordinator standby/);
  await until(answers);
  const t0 = performance.now();
  active.child.kill(fault === 'kill' ? 'SIGKILL' : 'SIGSTOP');
  const [ready, api_at] = await Promise.all([
    until(() => /coordinator ready/.test(standby.out())),
    until(answers),
  ]);
  runs[fault].push({ ready_ms: ready - t0, api_ms: api_at - t0 });
  if (fault === 'pause') {
    // Woken, the old one finds its lease gone (and its NATS user revoked): it exits.
    const gone = new Promise((r) => active.child.once('exit', r));
    active.child.kill('SIGCONT');
    await gone;
  }
  active = standby;
}
active.child.kill('SIGTERM');
await client.close();
await server.stop();

const q = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const summary = (xs: Sample[]) => ({
  n: xs.length,
  ready_p50_ms: q(
    xs.map((s) => s.ready_ms),
    0.5,
  ),
  ready_max_ms: Math.max(...xs.map((s) => s.ready_ms)),
  api_p50_ms: q(
    xs.map((s) => s.api_ms),
    0.5,
  ),
  api_max_ms: Math.max(...xs.map((s) => s.api_ms)),
});
const result = {
  benchmark: 'failover',
  at: new Date().toISOString(),
  node: process.versions.node,
  cpu: cpus()[0]?.model,
  cores: cpus().length,
  lease_ttl_ms: LEADER_TTL_MS,
  kill: { ...summary(runs.kill), samples: runs.kill },
  pause: { ...summary(runs.pause), samples: runs.pause },
};
const t = new Table({ head: ['fault', 'n', 'standby ready p50 / max', 'API answers p50 / max'] });
for (const [name, r] of [
  ['kill -9 (holder seen gone)', result.kill],
  [`SIGSTOP (lease TTL ${LEADER_TTL_MS / 1000} s)`, result.pause],
] as const) {
  t.push([
    name,
    r.n,
    `${(r.ready_p50_ms / 1000).toFixed(2)} s / ${(r.ready_max_ms / 1000).toFixed(2)} s`,
    `${(r.api_p50_ms / 1000).toFixed(2)} s / ${(r.api_max_ms / 1000).toFixed(2)} s`,
  ]);
}
console.log(t.toString());
writeFileSync(new URL('./results/failover.json', import.meta.url), `${JSON.stringify(result, null, 2)}\n`);
console.log('wrote bench/results/failover.json');
process.exit(0);
