// Restart benchmark: how long a coordinator takes to be ready, and how much memory it needs, on a store holding
// 1,000,000 epochs (BENCH_EPOCHS): 10 studies of 100,000 one-epoch jobs each, 7 finished (archived) and 3 live, which
// is the live limit's worth (300,000 epochs), with a tenth of the live jobs running (a KV state each). The state is
// written by the coordinator's own store; then a fresh `plurigrid coordinator` process is started on it and timed from
// spawn to "coordinator ready", with its peak resident set (VmHWM) read from /proc. Writes bench/results/restart.json.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { systemClock } from '../src/coordinator/clock.ts';
import { buildSubmission } from '../src/coordinator/intake.ts';
import { DEFAULT_RETRY, startExecution } from '../src/coordinator/job-state.ts';
import { summarise } from '../src/coordinator/status.ts';
import { StateStore } from '../src/coordinator/store.ts';
import { digestOf } from '../src/models/digest.ts';
import { jobInput } from '../src/models/job.ts';
import type { JobRecord } from '../src/models/job-record.ts';
import { Study } from '../src/models/study.ts';
import { jobIdOf } from '../src/models/study-record.ts';
import { connectNats } from '../src/transport/connect.ts';
import { startEmbeddedNats } from '../src/transport/nats-server.ts';
import { ensureResources } from '../src/transport/resources.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const TOTAL = Number(process.env.BENCH_EPOCHS ?? 1_000_000);
const PER_STUDY = 100_000;
const LIVE_STUDIES = 3;
const example = JSON.parse(readFileSync(join(root, 'examples', 'suburb-summer.json'), 'utf8'));
const log = pino({ level: 'warn' });
const t = () => performance.now();

async function main() {
  const dataDir = mkdtempSync(join(tmpdir(), 'plurigrid-restart-'));
  const nats = await startEmbeddedNats({ dataDir });
  const nc = await connectNats({ url: nats.url, name: 'bench-restart' });
  const resources = await ensureResources(nc);
  const store = new StateStore(resources, systemClock, log);

  process.stderr.write(`expanding one ${PER_STUDY}-epoch study to copy…\n`);
  const scenario = { ...example, community: { ...example.community, size: 20 } };
  delete scenario.feeder;
  const now = Date.now();
  // Through the schema, as the API does: 5 mechanisms × 2 battery strategies × 10,000 runs.
  const study = Study.parse({
    name: 'restart',
    scenario,
    runs: PER_STUDY / 10,
    seed: 1,
    sweep: [
      {
        name: 'market.mechanism',
        values: ['none', 'sdr', 'uniform-price', 'mid-market-rate', 'bill-sharing'],
      },
      { name: 'battery_strategy', values: ['self-consumption', 'price-responsive'] },
    ],
  });
  const template = buildSubmission(
    { study, target_job_seconds: 0 },
    { studyId: 'template', image: 'plurigrid/grid-epoch:bench', now, retry: DEFAULT_RETRY },
  );
  const studies = Math.ceil(TOTAL / PER_STUDY);
  const started = t();
  for (let s = 0; s < studies; s++) {
    const studyId = `s${String(s).padStart(3, '0')}`;
    const live = s >= studies - LIVE_STUDIES;
    const jobs: JobRecord[] = template.jobs.map((rec, n) => {
      const jobId = jobIdOf(studyId, n);
      const job = {
        ...rec.job,
        job_id: jobId,
        study_id: studyId,
        input_digest: digestOf(jobInput(jobId, rec.job.epochs)),
      };
      if (live) return { ...rec, job };
      const w = 'UBENCHWORKER';
      return {
        ...rec,
        job,
        status: 'done',
        attempts: 1,
        executions: [
          {
            attempt: 1,
            worker_id: w,
            assigned_at: now,
            lease_until: now,
            output_digest: 'x',
            seq: 1,
            ended: 'ok',
            reason: null,
            ended_at: now,
            verdict: 'valid',
            pay: 0,
            solo: false,
          },
        ],
        result: { seq: 1, attempt: 1, worker_id: w, output_digest: 'x', agreed: 1 },
      };
    });
    await store.createStudy({ ...template.study, study_id: studyId }, jobs);
    if (live) {
      const running = jobs.filter((_, i) => i % 10 === 0).map((j) => j.job.job_id);
      for (let i = 0; i < running.length; i += 1000) {
        await Promise.all(
          running
            .slice(i, i + 1000)
            .map((id) => store.update(id, (r) => startExecution(r, 'UBENCHWORKER', Date.now(), 60_000))),
        );
      }
    } else {
      // Closed as the coordinator closes a study (its summary), then archived as it later is.
      await store.updateStudy(studyId, (rec) => {
        const finished = { ...rec, state: 'done' as const, finished_at: Date.now() };
        return { ...finished, summary: summarise(finished, jobs) };
      });
      await store.archive(studyId);
    }
    process.stderr.write(
      `study ${s + 1}/${studies} stored (${live ? 'live' : 'archived'}), ${((t() - started) / 1000).toFixed(0)} s\n`,
    );
  }
  await nc.close();

  const runs: { ready_s: number; peak_rss_mb: number; rss_mb: number }[] = [];
  for (let run = 0; run < 3; run++) runs.push(await timeRestart(nats.url, dataDir));
  await nats.stop();

  const result = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    stored_epochs: studies * PER_STUDY,
    live_epochs: LIVE_STUDIES * PER_STUDY,
    jobs_per_study: template.jobs.length,
    runs,
  };
  console.log(JSON.stringify(result, null, 2));
  writeFileSync(join(root, 'bench', 'results', 'restart.json'), `${JSON.stringify(result, null, 2)}\n`);
}

/** Spawns a coordinator on the store and times it to ready, sampling its peak resident set. */
function timeRestart(
  url: string,
  dataDir: string,
): Promise<{ ready_s: number; peak_rss_mb: number; rss_mb: number }> {
  const t0 = t();
  const child = spawn(
    process.execPath,
    [
      join(root, 'bin', 'plurigrid.js'),
      'coordinator',
      '--nats',
      url,
      '--data-dir',
      dataDir,
      '--image',
      'plurigrid/grid-epoch:bench',
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (!out.includes('coordinator ready')) return;
      const ready = (t() - t0) / 1000;
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? Number.NaN);
      const sample = {
        ready_s: Number(ready.toFixed(2)),
        peak_rss_mb: Math.round(kb('VmHWM') / 1024),
        rss_mb: Math.round(kb('VmRSS') / 1024),
      };
      child.once('exit', () => resolve(sample));
      child.kill('SIGTERM');
    });
    child.once('exit', (code) => {
      if (!out.includes('coordinator ready'))
        reject(new Error(`coordinator exited with ${code} before ready`));
    });
  });
}

await main();
