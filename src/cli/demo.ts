import { type ChildProcess, spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import { dockerAvailable } from '../worker/executors/docker.ts';
import { buildImages } from '../worker/images.ts';
import { DEFAULT_DATA_DIR } from './connection.ts';
import { startCoordinator } from './coordinator.ts';
import { intOption } from './options.ts';
import { writeStudyResults } from './results.ts';
import { statusLine } from './status.ts';
import { follow, progressReporter, requestFromFile } from './submit.ts';
import { type ExecutorKind, executorOption, workerArgv } from './worker.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const EXAMPLE = join(root, 'examples', 'mechanism-comparison.json');
const CLI = join(root, 'bin', 'plurigrid.js');

interface Options {
  out: string;
  workers: number;
  executor: ExecutorKind;
}

const say = (line: string) => process.stdout.write(`${line}\n`);

function spawnWorker(
  name: string,
  url: string,
  dataDir: string,
  executor: Options['executor'],
): ChildProcess {
  const args = workerArgv({
    name,
    nats: url,
    dataDir,
    executor,
    slots: 1,
    heartbeatMs: 500,
    logLevel: 'warn',
  });
  return spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
}

async function stopWorker(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

/**
 * The whole marketplace loop on one machine: an embedded nats-server, the coordinator, two provider workers
 * (Docker where an engine answers, else child processes), the mechanism-comparison study submitted, followed,
 * compared and reported, then everything shut down.
 */
export async function runDemo(opts: Options): Promise<void> {
  const dataDir = resolve(DEFAULT_DATA_DIR, 'demo');
  await rm(dataDir, { recursive: true, force: true });
  let executor: 'docker' | 'process' = 'process';
  let image: string | undefined;
  if (opts.executor !== 'process' && (await dockerAvailable())) {
    say('building images (the first time takes a minute)…');
    image = (await buildImages()).gridEpoch;
    executor = 'docker';
  } else if (opts.executor === 'docker') {
    throw new Error('--executor docker: no Docker engine is reachable');
  } else if (opts.executor === 'auto') {
    process.stderr.write(
      'warning: no Docker engine reachable; workers run jobs as child processes (process executor)\n',
    );
  }
  const coordinator = await startCoordinator({
    dataDir,
    maxAttempts: 3,
    logLevel: 'warn',
    ...(image ? { image } : {}),
  });
  const children: ChildProcess[] = [];
  try {
    say(`coordinator up, NATS at ${coordinator.url}; starting ${opts.workers} ${executor} workers`);
    for (let i = 1; i <= opts.workers; i++)
      children.push(spawnWorker(`demo-${i}`, coordinator.url, dataDir, executor));
    const deadline = Date.now() + 30_000;
    while (coordinator.coordinator.registry.live().length < opts.workers) {
      if (children.some((c) => c.exitCode !== null))
        throw new Error('a worker exited during start-up (see its log above)');
      if (Date.now() > deadline) throw new Error('workers did not connect within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const req = await requestFromFile(EXAMPLE);
    // Small jobs, so the two workers share the study and the progress bar moves.
    req.target_job_seconds = 0.02;
    const api = new ApiClient(coordinator.nc);
    const reply = await api.submit(req);
    say(`submitted ${reply.study_id}: ${reply.epochs} epochs in ${reply.jobs} jobs`);
    const started = performance.now();
    const progress = progressReporter();
    const final = await follow(coordinator.nc, api, reply.study_id, progress.update);
    progress.stop();
    say(`${statusLine(final)} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    if (final.state !== 'done') throw new Error(`the study ended ${final.state}`);
    await writeStudyResults(api, reply.study_id, opts.out);
  } finally {
    await Promise.all(children.map(stopWorker));
    await coordinator.close();
  }
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'the marketplace loop on this machine: embedded NATS, coordinator, two workers, the example study',
    )
    .option('--out <dir>', 'output directory', 'out/mechanism-comparison')
    .option('--workers <n>', 'workers to start', intOption('--workers', 1, 16), 2)
    .addOption(executorOption())
    .action((opts: Options) => runDemo(opts));
}
