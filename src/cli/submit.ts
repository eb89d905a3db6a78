import { dirname, resolve } from 'node:path';
import type { Msg, NatsConnection } from '@nats-io/transport-node';
import { type Command, InvalidArgumentError } from 'commander';
import { ApiClient } from '../coordinator/client.ts';
import { sim } from '../ledger/accounts.ts';
import { StudyEvent, type StudyStatus, type SubmitRequest } from '../models/api.ts';
import { parseInput } from '../models/errors.ts';
import { Study } from '../models/study.ts';
import { readJsonFile } from '../study/files.ts';
import { decode } from '../transport/connect.ts';
import { PUBLIC_OWNER } from '../transport/permissions.ts';
import { subjects } from '../transport/subjects.ts';
import { addConnectionOptions, openClient } from './connection.ts';
import { addKeyOptions, type KeyFlags, signerKey } from './keys.ts';
import { explainRefusal, simAmountParser } from './ledger.ts';
import { intOption } from './options.ts';
import { writeStudyResults } from './results.ts';
import { statusLine } from './status.ts';

interface Options extends KeyFlags {
  follow?: boolean;
  out?: string;
  idempotencyKey?: string;
  memoryMb?: number;
  timeoutS?: number;
  maxAttempts?: number;
  targetJobSeconds?: number;
  priority?: number;
  quorum?: number;
  maxResults?: number;
  adaptive?: boolean;
  /** SIM, as the API takes it ("1.5"). */
  budget?: string;
  maxPrice?: number;
  /** A public good's title (and description). */
  publicGood?: string;
  description?: string;
}

/** Reads a study (with its scenario file inlined) or a single scenario into a submit request. */
export async function requestFromFile(file: string, opts: Partial<Options> = {}): Promise<SubmitRequest> {
  const raw = await readJsonFile(file, 'study or scenario');
  const isStudy = raw !== null && typeof raw === 'object' && 'runs' in raw;
  const req: SubmitRequest = {};
  if (isStudy) {
    const study = parseInput(Study, raw, `invalid study ${file}`);
    const scenario =
      typeof study.scenario === 'string'
        ? await readJsonFile(resolve(dirname(file), study.scenario), 'scenario')
        : study.scenario;
    req.study = { ...study, scenario: scenario as Record<string, unknown> };
  } else {
    req.scenario = raw as Record<string, unknown>;
  }
  const limits = {
    ...(opts.memoryMb !== undefined ? { memory_mb: opts.memoryMb } : {}),
    ...(opts.timeoutS !== undefined ? { timeout_s: opts.timeoutS } : {}),
  };
  if (Object.keys(limits).length > 0) req.limits = limits;
  if (opts.idempotencyKey) req.idempotency_key = opts.idempotencyKey;
  if (opts.maxAttempts !== undefined) req.max_attempts = opts.maxAttempts;
  if (opts.targetJobSeconds !== undefined) req.target_job_seconds = opts.targetJobSeconds;
  if (opts.priority !== undefined) req.priority = opts.priority;
  if (opts.quorum !== undefined || opts.maxResults !== undefined || opts.adaptive !== undefined) {
    req.verification = {
      quorum: opts.quorum ?? 2,
      adaptive: opts.adaptive ?? true,
      ...(opts.maxResults !== undefined ? { max_results: opts.maxResults } : {}),
    };
  }
  if (opts.budget !== undefined) req.budget = opts.budget;
  if (opts.maxPrice !== undefined) req.max_price = opts.maxPrice;
  if (opts.publicGood !== undefined)
    req.public_good = { title: opts.publicGood, description: opts.description ?? '' };
  return req;
}

export interface FollowTiming {
  /** Least time between two status requests that job events trigger. */
  refreshMs?: number;
  /** A status request at least this often, for events missed (across a reconnect, say). */
  safetyPollMs?: number;
}

/**
 * Follows a study until it ends, reporting progress; resolves with its final status. The job-event feed says when
 * something changed and the status request says what is true, so a quiet study costs a request every
 * `safetyPollMs`, a busy one at most one every `refreshMs`, and the end is seen as soon as its study event arrives.
 */
export async function follow(
  nc: NatsConnection,
  api: ApiClient,
  studyId: string,
  /** The study's owner (its events come under that key; `public` for a study without one). */
  owner: string,
  onProgress: (s: StudyStatus) => void,
  { refreshMs = 200, safetyPollMs = 5_000 }: FollowTiming = {},
): Promise<StudyStatus> {
  let changed = false;
  let ended = false;
  let wake = () => {};
  // Which jobs moved does not matter: the status request that follows says where the study is.
  const onJobs = () => {
    changed = true;
    wake();
  };
  const onStudy = (_: unknown, msg: Msg) => {
    try {
      if (decode(msg.data, StudyEvent, 'study event').state !== 'running') ended = true;
    } catch {
      changed = true; // undecodable, but something happened: the status will say what
    }
    wake();
  };
  // Subscribed before the first status request: the server handles this connection's SUBs before its request, so
  // any transition after that status is seen.
  const subs = [
    nc.subscribe(subjects.jobEvents(owner, studyId), { callback: onJobs }),
    nc.subscribe(subjects.studyEvents(owner, studyId), { callback: onStudy }),
  ];
  try {
    for (;;) {
      const fetchedAt = performance.now();
      changed = false;
      ended = false;
      const s = await api.status(studyId);
      onProgress(s);
      if (s.state !== 'running') return s;
      for (;;) {
        const due = ended ? 0 : (changed ? refreshMs : safetyPollMs) - (performance.now() - fetchedAt);
        if (due <= 0) break;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, due);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = () => {};
      }
    }
  } finally {
    for (const sub of subs) sub.unsubscribe();
  }
}

export function progressReporter(): { update: (s: StudyStatus) => void; stop: () => void } {
  if (!process.stderr.isTTY) return { update: () => {}, stop: () => {} };
  let last = '';
  return {
    update: (s) => {
      const line = statusLine(s);
      if (line !== last) process.stderr.write(`\r\x1b[2K${line}`);
      last = line;
    },
    stop: () => last && process.stderr.write('\n'),
  };
}

function priceOption(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1000)
    throw new InvalidArgumentError(`--max-price: expected SIM per CPU-second from 0 to 1000, got "${value}"`);
  return n;
}

function secondsOption(flag: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0)
      throw new InvalidArgumentError(`${flag}: expected seconds > 0, got "${v}"`);
    return n;
  };
}

export function registerSubmit(program: Command): void {
  addKeyOptions(
    addConnectionOptions(
      program
        .command('submit')
        .description('submit a study (or a single scenario) to the coordinator')
        .argument('<file>', 'study or scenario JSON file')
        .option('--follow', 'wait for it to finish, showing progress, then print the comparison')
        .option('--out <dir>', 'with --follow: write the results table, aggregates and report here')
        .option('--idempotency-key <key>', 'a repeated submit with the same key returns the first answer')
        .option('--memory-mb <n>', 'memory limit per job', intOption('--memory-mb', 16, 65_536))
        .option('--timeout-s <s>', 'wall-clock limit per job attempt', secondsOption('--timeout-s'))
        .option('--max-attempts <n>', 'attempts per job', intOption('--max-attempts', 1, 20))
        .option('--target-job-seconds <s>', 'work packed into one job', secondsOption('--target-job-seconds'))
        .option('--priority <n>', 'higher runs first', intOption('--priority', -100, 100))
        .option(
          '--quorum <n>',
          'equal results from distinct providers that accept a job (1: no replication)',
          intOption('--quorum', 1, 7),
          2,
        )
        .option(
          '--max-results <n>',
          'results after which a job without a quorum fails (default: quorum + 2)',
          intOption('--max-results', 1, 15),
        )
        .option('--no-adaptive', 'replicate every job, even on providers trusted to run alone')
        .option(
          '--budget <sim>',
          'SIM escrowed from your key for the study (signed; what is left comes back when it ends)',
          simAmountParser('--budget'),
        )
        .option(
          '--max-price <sim-per-cpu-s>',
          'with --budget or --public-good: the most paid per CPU-second of estimated work, in SIM',
          priceOption,
        )
        .option(
          '--public-good <title>',
          'submit it to the Simulation Commons: funded by the community (`plurigrid fund`), run on idle off-peak capacity, its results public; --budget is then your first contribution',
        )
        .option('--description <text>', 'with --public-good: what the study is for'),
    ),
  ).action(async (file: string, opts: Options, cmd: Command) => {
    if (opts.description !== undefined && opts.publicGood === undefined) {
      cmd.error('error: --description only with --public-good', { exitCode: 2, code: 'plurigrid.usage' });
    }
    if (opts.budget === undefined && opts.publicGood === undefined) {
      const needless = [opts.maxPrice !== undefined && '--max-price'].filter(Boolean);
      if (needless.length > 0) {
        cmd.error(
          `error: ${needless.join(', ')} only with --budget (a study without a budget pays nothing)`,
          {
            exitCode: 2,
            code: 'plurigrid.usage',
          },
        );
      }
    }
    const req = await requestFromFile(file, opts);
    // Always signed: the signing key owns the study (only it reads the study and cancels it).
    const signer = await signerKey(opts);
    const transport = await openClient(opts, 'plurigrid-submit');
    try {
      const api = new ApiClient(transport.nc);
      const reply = await api
        .submitSigned(req, signer.keyPair)
        .catch((err: unknown) =>
          opts.budget === undefined
            ? Promise.reject(err)
            : explainRefusal(err, { api, key: signer.key, what: 'the budget', amount: sim(opts.budget) }),
        );
      const paid =
        opts.budget === undefined
          ? ''
          : opts.publicGood !== undefined
            ? `; ${opts.budget} SIM contributed by ${signer.key}`
            : `; budget ${opts.budget} SIM escrowed from ${signer.key}`;
      const commons =
        opts.publicGood !== undefined ? ' as a public good (fund it: plurigrid fund <study> <sim>)' : '';
      process.stdout.write(
        `${reply.duplicate ? 'already submitted' : 'submitted'} ${reply.study_id} (${reply.name})${commons}: ${reply.epochs} epochs in ${reply.jobs} jobs${paid}\n`,
      );
      if (!opts.follow) return;
      const progress = progressReporter();
      // A public good's events are public.
      const owner = opts.publicGood !== undefined ? PUBLIC_OWNER : signer.key;
      const final = await follow(transport.nc, api, reply.study_id, owner, progress.update);
      progress.stop();
      process.stdout.write(`${statusLine(final)}\n`);
      if (final.state !== 'done') {
        for (const f of final.failures) process.stdout.write(`  ${f.job_id}: ${f.reasons.join('; ')}\n`);
        process.exitCode = 1;
        return;
      }
      await writeStudyResults(api, reply.study_id, opts.out);
    } finally {
      await transport.close();
    }
  });
}
