// Ledger benchmark, against a real nats-server (file storage, as LEDGER is in production):
//  (a) sustained postings/s of transfers appended through Journal.append by one caller, one at a time;
//  (b) the same with 4 concurrent callers on one journal (appends are serialised in a journal, so this shows the
//      queueing, not parallelism);
//  (c) 4 journals on 4 connections appending at once: every lost race costs a catch-up and a retry;
//  (d) replay: Journal.open of the whole stream (topped up to BENCH_REPLAY postings first), and Journal.verify.
// Each of (a)–(c) runs BENCH_SECONDS (default 10). Prints a table with the CPU each side spent per posting.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createUser } from '@nats-io/nkeys';
import type { NatsConnection } from '@nats-io/transport-node';
import Table from 'cli-table3';
import { keyAccount, LedgerError, sim } from '../src/ledger/accounts.ts';
import { Journal } from '../src/ledger/journal.ts';
import { applyPosting, emptyState, type LedgerState, mint, transfer } from '../src/ledger/rules.ts';
import { connectNats } from '../src/transport/connect.ts';
import { startEmbeddedNats } from '../src/transport/nats-server.ts';
import { ensureResources, type Resources } from '../src/transport/resources.ts';
import { subjects } from '../src/transport/subjects.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const REPLAY = Number(process.env.BENCH_REPLAY ?? 100_000);
const KEYS = Array.from({ length: 64 }, () => createUser().getPublicKey());

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) return m[1].trim();
  } catch {}
  return cpus()[0]?.model ?? 'unknown';
}

/** CPU ms a process has used (Linux /proc), 0 elsewhere. */
function cpuMsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return 0;
  }
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
};

let opNo = 0;
/** A transfer of 1 µSIM between two random keys. */
const randomTransfer = (now: number) => (s: Journal['state']) => {
  const i = Math.floor(Math.random() * KEYS.length);
  const j = (i + 1 + Math.floor(Math.random() * (KEYS.length - 1))) % KEYS.length;
  return transfer(s, KEYS[i]!, KEYS[j]!, 1, `bench:${++opNo}`, now);
};

interface Phase {
  name: string;
  postings: number;
  per_s: number;
  p50_ms: number;
  p99_ms: number;
  conflicts: number;
  gave_up: number;
  per_journal: number[];
  node_cpu_ms: number;
  nats_cpu_ms: number;
}

/** Appends from `callers` loops over `journals` for SECONDS. */
async function phase(name: string, journals: Journal[], callers: number, natsPid: number): Promise<Phase> {
  const latencies: number[] = [];
  let gaveUp = 0;
  const conflictsBefore = journals.reduce((n, j) => n + j.stats.conflicts + j.stats.duplicates, 0);
  const cpu0 = process.cpuUsage();
  const nats0 = cpuMsOf(natsPid);
  const start = performance.now();
  const deadline = start + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: callers }, async (_, c) => {
      const j = journals[c % journals.length]!;
      while (performance.now() < deadline) {
        const t = performance.now();
        try {
          const r = await j.append(randomTransfer(Date.now()));
          if (r.status === 'appended') latencies.push(performance.now() - t);
        } catch (err) {
          if (!(err instanceof LedgerError && err.code === 'conflict')) throw err;
          gaveUp++;
        }
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const n = latencies.length;
  return {
    name,
    postings: n,
    per_s: n / seconds,
    p50_ms: quantile(latencies, 0.5),
    p99_ms: quantile(latencies, 0.99),
    gave_up: gaveUp,
    per_journal: journals.map((j) => j.stats.appended),
    conflicts: journals.reduce((k, j) => k + j.stats.conflicts + j.stats.duplicates, 0) - conflictsBefore,
    node_cpu_ms: (cpu.user + cpu.system) / 1000 / n,
    nats_cpu_ms: (cpuMsOf(natsPid) - nats0) / n,
  };
}

/**
 * Tops the stream up to `total` postings quickly: entries chained on a private copy of the state and published
 * pipelined (this is the only writer meanwhile, and one connection's publishes are stored in order).
 */
async function topUp(r: Resources, journal: Journal, total: number): Promise<void> {
  await journal.refresh();
  const v = journal.state;
  const s: LedgerState = {
    ...emptyState(),
    balances: new Map(v.balances),
    applied: new Map(v.applied),
    lastSeq: v.lastSeq,
    lastHash: v.lastHash,
  };
  const window = new Set<Promise<unknown>>();
  for (let i = s.lastSeq; i < total; i++) {
    const entry = applyPosting(s, randomTransfer(Date.now())(s)!);
    const tracked: Promise<unknown> = r.js
      .publish(subjects.ledger, JSON.stringify(entry), { msgID: entry.posting.op_id })
      .finally(() => window.delete(tracked));
    window.add(tracked);
    if (window.size >= 512) await Promise.race(window);
  }
  await Promise.all(window);
}

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), 'plurigrid-bench-ledger-'));
  const nats = await startEmbeddedNats({ dataDir, log: () => {} });
  const conns: NatsConnection[] = [];
  const resources = async () => {
    const nc = await connectNats({ url: nats.url, name: `bench-ledger-${conns.length}` });
    conns.push(nc);
    return ensureResources(nc);
  };
  try {
    const r = await resources();
    const journal = await Journal.open(r);
    for (const k of KEYS) await journal.append(mint(keyAccount(k), sim(1_000_000), `mint:${k}`, Date.now()));

    process.stderr.write(`(a) one caller, ${SECONDS} s…\n`);
    const a = await phase('(a) 1 caller, 1 journal', [journal], 1, nats.pid);
    process.stderr.write(`(b) 4 callers on one journal, ${SECONDS} s…\n`);
    const b = await phase('(b) 4 callers, 1 journal', [journal], 4, nats.pid);
    process.stderr.write(`(c) 4 journals on 4 connections, ${SECONDS} s…\n`);
    const others = await Promise.all(Array.from({ length: 4 }, async () => Journal.open(await resources())));
    const c = await phase('(c) 4 journals, 4 connections', others, 4, nats.pid);

    await Promise.all(others.map((j) => j.refresh()));
    await journal.refresh();
    process.stderr.write(`(d) topping the stream up to ${REPLAY} postings…\n`);
    await topUp(await resources(), journal, REPLAY);

    const rr = await resources();
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const replayed = await Journal.open(rr);
    const openMs = performance.now() - t0;
    const openCpu = process.cpuUsage(cpu0);
    const t1 = performance.now();
    const report = await replayed.verify();
    const verifyMs = performance.now() - t1;
    if (!report.ok) throw new Error(`verify failed: ${JSON.stringify(report.problems.slice(0, 5))}`);

    const table = new Table({
      head: [
        'measure',
        'postings',
        'postings/s',
        'p50 / p99 ms',
        'lost races',
        'CPU ms/posting (node + nats)',
      ],
    });
    for (const p of [a, b, c]) {
      table.push([
        p.name,
        p.postings,
        p.per_s.toFixed(0),
        `${p.p50_ms.toFixed(2)} / ${p.p99_ms.toFixed(2)}`,
        p.gave_up ? `${p.conflicts} (${p.gave_up} appends gave up)` : p.conflicts,
        `${p.node_cpu_ms.toFixed(3)} + ${p.nats_cpu_ms.toFixed(3)}`,
      ]);
    }
    table.push([
      '(d) replay: Journal.open',
      replayed.state.lastSeq,
      (replayed.state.lastSeq / (openMs / 1000)).toFixed(0),
      `${openMs.toFixed(0)} ms total`,
      '',
      `${((openCpu.user + openCpu.system) / 1000 / replayed.state.lastSeq).toFixed(3)} (node)`,
    ]);
    table.push([
      '(d) Journal.verify',
      report.postings,
      (report.postings / (verifyMs / 1000)).toFixed(0),
      `${verifyMs.toFixed(0)} ms total`,
      '',
      report.ok ? 'ok' : 'FAILED',
    ]);
    console.log(
      `ledger benchmark — ${cpuModel()}, ${cpus().length} cores, node ${process.versions.node}, ` +
        `${SECONDS} s per append phase`,
    );
    console.log(table.toString());
    console.log(`(c) appends per journal: ${c.per_journal.join(', ')} (counted since each opened)`);
  } finally {
    await Promise.all(conns.map((nc) => nc.close().catch(() => {})));
    await nats.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
