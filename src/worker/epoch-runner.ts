// The program inside every job container (and under the process executor): reads a JobInput, runs its epochs in
// order and writes a JobOutput as canonical JSON. It is bundled into images/grid-epoch, so it imports only the
// engine and its schemas — no CLI, transport or Docker code.
//
//   epoch-runner [--input /input/job.json] [--output /output/results.json]
//   epoch-runner --serve      (a warm runner: jobs arrive over the IPC channel, one at a time; see process-pool)
//
// Exit codes: 0 ok; 2 bad usage or invalid input (each problem named by its path on stderr); 1 anything else.
//
// Under the process executors (PLURIGRID_LIFELINE=stdin) the runner's stdin is a pipe from its worker that is
// never written to: it reaches end-of-file only when the worker is gone, and then the runner kills itself, so a
// killed worker leaves no job running outside its time and memory limits. In a container stdin may be /dev/null,
// so without that variable nothing watches it.
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { canonicalJson } from '../models/digest.ts';
import { InputError, parseInput } from '../models/errors.ts';
import { JobInput, type JobOutput } from '../models/job.ts';
import { runEpoch } from '../sim/epoch.ts';

export const DEFAULT_INPUT = '/input/job.json';
export const DEFAULT_OUTPUT = '/output/results.json';

const USAGE = 'usage: epoch-runner [--input <job.json>] [--output <results.json>]';

interface Args {
  input: string;
  output: string;
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { input: DEFAULT_INPUT, output: DEFAULT_OUTPUT };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag !== '--input' && flag !== '--output') {
      throw new InputError('bad usage', [`unknown argument ${JSON.stringify(flag)}`, USAGE]);
    }
    const value = argv[++i];
    if (!value) throw new InputError('bad usage', [`${flag} needs a file path`, USAGE]);
    args[flag === '--input' ? 'input' : 'output'] = value;
  }
  return args;
}

// Synchronous file IO throughout: a one-shot program gains nothing from async IO, and it keeps libuv from starting
// its thread pool, which matters under a container's small pids limit (threads count as pids).
function readJobInput(path: string): JobInput {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError('cannot read job input', [`${path}: ${code === 'ENOENT' ? 'no such file' : code}`]);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new InputError('invalid job input', [`${path}: not valid JSON (${(e as Error).message})`]);
  }
  return parseInput(JobInput, raw, `invalid job input ${path}`);
}

/** Temp file in the output's own directory, then rename: a reader never sees half a result. */
function writeAtomic(path: string, text: string): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    writeFileSync(tmp, text);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Runs a job's epochs in order. */
export function runJob(job: JobInput, progress: (line: string) => void = () => {}): JobOutput {
  const output: JobOutput = { job_id: job.job_id, results: [] };
  for (const [i, epoch] of job.epochs.entries()) {
    const started = performance.now();
    output.results.push({ epoch_id: epoch.epoch_id, result: runEpoch(epoch.scenario) });
    const ms = Math.round(performance.now() - started);
    progress(`epoch ${i + 1}/${job.epochs.length} ${epoch.epoch_id} done in ${ms} ms\n`);
  }
  return output;
}

/** A request to a warm runner, and its answer (over the IPC channel). */
export interface ServeRequest {
  id: number;
  input: unknown;
}
export type ServeReply =
  | { id: number; ok: true; output: string; cpu_ms: number }
  | { id: number; ok: false; code: 1 | 2; message: string };

/** Warm mode: answer jobs from the parent until the channel closes. Progress lines still go to stderr. */
export function serve(): void {
  process.on('message', (msg: ServeRequest) => {
    const cpu = process.cpuUsage();
    let reply: ServeReply;
    try {
      const job = parseInput(JobInput, msg.input, 'invalid job input');
      const output = canonicalJson(runJob(job));
      const used = process.cpuUsage(cpu);
      reply = { id: msg.id, ok: true, output, cpu_ms: Math.round((used.user + used.system) / 1000) };
    } catch (e) {
      reply = { id: msg.id, ok: false, code: e instanceof InputError ? 2 : 1, message: (e as Error).message };
    }
    process.send!(reply);
  });
  process.on('disconnect', () => process.exit(0));
}

/** Set by the process executors when the runner's stdin is its lifeline (see the top of this file). */
export const LIFELINE_ENV = 'PLURIGRID_LIFELINE';

// Runs on its own thread because a job runs synchronously on the main one, whose event loop would not see the
// end-of-file before the job finished. SIGKILL, not exit: process.exit on a worker thread ends only that thread.
const LIFELINE_WATCHER = `
const { Socket } = require('node:net');
const die = () => process.kill(process.pid, 'SIGKILL');
const lifeline = new Socket({ fd: 0, readable: true, writable: false });
lifeline.on('data', () => {});
lifeline.once('end', die);
lifeline.once('error', die);
`;

/** Dies with the parent once stdin, the lifeline pipe, reaches end-of-file; a no-op unless {@link LIFELINE_ENV} is set. */
export function watchLifeline(): void {
  if (process.env[LIFELINE_ENV] !== 'stdin') return;
  // A small heap: the watcher holds one socket, and its memory counts against the job's limit (~2 MiB this way).
  const watcher = new Worker(LIFELINE_WATCHER, {
    eval: true,
    resourceLimits: { maxOldGenerationSizeMb: 4 },
  });
  watcher.on('error', (e) => process.stderr.write(`warning: lifeline watcher failed: ${e.message}\n`));
  watcher.unref();
}

export function main(argv: readonly string[]): number {
  try {
    const args = parseArgs(argv);
    const job = readJobInput(args.input);
    const output = runJob(job, (line) => process.stderr.write(line));
    writeAtomic(args.output, canonicalJson(output));
    return 0;
  } catch (e) {
    if (e instanceof InputError) {
      process.stderr.write(`error: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`error: ${(e as Error)?.message ?? String(e)}\n`);
    return 1;
  }
}

// Run only as a program, so tests can import main() without side effects.
if (import.meta.main) {
  watchLifeline();
  if (process.argv.includes('--serve')) serve();
  else process.exitCode = main(process.argv.slice(2));
}
