import { availableParallelism, hostname, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { checkTimeZone, formatWindows, OffPeakError, parseWindows } from '../coordinator/offpeak.ts';
import type { OffPeakWindow } from '../models/worker.ts';
import { identityFrom, loadOrCreateKeyPair } from '../transport/identity.ts';
import { workerBus } from '../transport/worker-bus.ts';
import { VERSION } from '../version.ts';
import { WorkerAgent } from '../worker/agent.ts';
import { createDockerExecutor, dockerAvailable } from '../worker/executors/docker.ts';
import { createProcessExecutor } from '../worker/executors/process.ts';
import { createWarmProcessExecutor } from '../worker/executors/process-pool.ts';
import type { Executor } from '../worker/executors/types.ts';
import {
  addConnectionOptions,
  type Connection,
  type ConnectionFlags,
  clientUrl,
  openClient,
  tlsFiles,
} from './connection.ts';
import { enroll, workerCredsFile } from './credentials.ts';
import { createLogger, logLevelOption } from './log.ts';
import { intOption } from './options.ts';
import { onShutdown } from './shutdown.ts';

export const EXECUTORS = ['auto', 'docker', 'process'] as const;
export type ExecutorKind = (typeof EXECUTORS)[number];

/** `--executor`, shared by `worker` and `demo`. */
export function executorOption(): Option {
  return new Option('--executor <kind>', 'where jobs run (auto: Docker when an engine answers)')
    .choices(EXECUTORS)
    .default('auto');
}

interface Options extends ConnectionFlags {
  name: string;
  executor: ExecutorKind;
  slots: number;
  runners?: number;
  warm: boolean;
  price: number;
  labels: Record<string, string>;
  /** Off-peak windows on this machine's clock (none: no off-peak capacity offered). */
  offpeak: OffPeakWindow[];
  /** IANA zone of the windows. */
  tz: string;
  /** SIM per CPU-second inside the windows (unset: `price`). */
  offpeakPrice?: number;
  heartbeatMs: number;
  drainS: number;
  /** A one-time enrollment token: traded for this worker's credentials before it starts. */
  enroll?: string;
  logLevel?: string;
}

/** What a `plurigrid worker` child process is started with by the demo, the benchmarks and the tests. */
export interface WorkerArgs {
  name: string;
  nats: string;
  dataDir: string;
  executor: Options['executor'];
  slots: number;
  runners?: number;
  heartbeatMs?: number;
  /** Off-peak windows: `22-06,12-14` as the flag takes them, or the windows themselves. */
  offpeak?: string | readonly OffPeakWindow[];
  tz?: string;
  offpeakPrice?: number;
  logLevel: string;
}

/** The command line (after the CLI script) for {@link WorkerArgs}: one spelling of the worker's flags. */
export function workerArgv(a: WorkerArgs): string[] {
  return [
    'worker',
    ...['--name', a.name, '--nats', a.nats, '--data-dir', a.dataDir],
    ...['--executor', a.executor, '--slots', String(a.slots)],
    ...(a.runners !== undefined ? ['--runners', String(a.runners)] : []),
    ...(a.heartbeatMs !== undefined ? ['--heartbeat-ms', String(a.heartbeatMs)] : []),
    // No windows is the flag's default, and `none` no window it reads.
    ...(a.offpeak !== undefined && a.offpeak.length > 0
      ? ['--offpeak', typeof a.offpeak === 'string' ? a.offpeak : formatWindows(a.offpeak)]
      : []),
    ...(a.tz !== undefined ? ['--tz', a.tz] : []),
    ...(a.offpeakPrice !== undefined ? ['--offpeak-price', String(a.offpeakPrice)] : []),
    ...['--log-level', a.logLevel],
  ];
}

function labelsOption(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of value.split(',').filter(Boolean)) {
    const [k, v] = pair.split('=');
    if (!k || v === undefined)
      throw new InvalidArgumentError(`--labels: expected key=value[,key=value], got "${pair}"`);
    out[k.trim()] = v.trim();
  }
  return out;
}

/** A commander parser for a price flag: SIM per CPU-second, ≥ 0. */
function priceOption(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n) || n < 0)
      throw new InvalidArgumentError(`${flag}: expected a number ≥ 0, got "${value}"`);
    return n;
  };
}

/** Turns offpeak.ts's refusals into usage errors (exit 2) that name the flag. */
function offpeakFlag<T>(flag: string, parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (e) {
      if (e instanceof OffPeakError) throw new InvalidArgumentError(`${flag}: ${e.message}`);
      throw e;
    }
  };
}

/** `--offpeak 22-06,12-14`: windows on this machine's clock. */
export const offpeakOption = offpeakFlag('--offpeak', parseWindows);
/** `--tz Europe/Berlin`: the IANA zone the windows are in. */
export const tzOption = offpeakFlag('--tz', checkTimeZone);
/** `--offpeak-price 0.0005`. */
export const offpeakPriceOption = priceOption('--offpeak-price');

/** This machine's zone, as Intl sees it (undefined when TZ names none Intl knows). */
const machineTimeZone = (): string =>
  (Intl.DateTimeFormat().resolvedOptions().timeZone as string | undefined) ?? 'UTC';

/** `off-peak 22:00-06:00 Europe/Berlin at 0.0005 SIM/CPU-s`, or '' without windows. */
function describeOffpeak(opts: Pick<Options, 'offpeak' | 'tz' | 'offpeakPrice' | 'price'>): string {
  if (opts.offpeak.length === 0) return '';
  return `off-peak ${formatWindows(opts.offpeak)} ${opts.tz} at ${opts.offpeakPrice ?? opts.price} SIM/CPU-s`;
}

/** Docker when an engine answers (unless told otherwise), else warm child processes with a warning. */
export async function chooseExecutor(
  kind: Options['executor'],
  slots: number,
  runners: number,
  warm: boolean,
  warn: (line: string) => void,
): Promise<Executor> {
  const processExecutor = () =>
    warm
      ? createWarmProcessExecutor({ prewarm: Math.min(slots, runners), maxRunners: runners })
      : createProcessExecutor();
  if (kind === 'process') return processExecutor();
  if (await dockerAvailable()) return createDockerExecutor();
  if (kind === 'docker') {
    throw new Error('--executor docker: no Docker engine is reachable (is dockerd running?)');
  }
  warn(
    'no Docker engine reachable: running jobs as child processes (process executor), without container isolation',
  );
  return processExecutor();
}

export interface RunningWorker {
  agent: WorkerAgent;
  stop(graceMs?: number): Promise<void>;
}

export async function startWorker(opts: Options): Promise<RunningWorker> {
  const log = createLogger(`worker:${opts.name}`, opts.logLevel);
  const dir = join(resolve(opts.dataDir), 'workers', opts.name);
  const keyPair = await loadOrCreateKeyPair(dir);
  const identity = identityFrom(keyPair);
  const saved = workerCredsFile(dir);
  if (opts.enroll) {
    const reply = await enroll(opts.enroll, clientUrl(opts), keyPair, saved, tlsFiles(opts));
    log.info({ worker_id: reply.key, creds: saved }, 'enrolled: credentials saved');
  }
  const executor = await chooseExecutor(
    opts.executor,
    opts.slots,
    opts.runners ?? opts.slots,
    opts.warm,
    (line) => log.warn(line),
  );
  // A worker's NATS user is its worker key: a result signed by one key cannot arrive on another's connection.
  let transport: Connection;
  try {
    transport = await openClient(opts, `plurigrid-worker-${opts.name}`, { role: 'worker', keyPair, saved });
  } catch (err) {
    // Its warm runners would keep the process alive after the error is reported.
    await executor.close();
    throw err;
  }
  if (transport.creds && transport.creds.key !== identity.workerId) {
    await transport.close();
    await executor.close();
    throw new Error(
      `--creds are for ${transport.creds.key}, but this worker's key is ${identity.workerId}: a worker connects as itself`,
    );
  }
  const agent = new WorkerAgent({
    nc: transport.nc,
    bus: workerBus(transport.nc, identity.workerId),
    identity,
    executor,
    log,
    config: {
      name: opts.name,
      slots: opts.slots,
      cpus: availableParallelism(),
      memory_mb: Math.floor(totalmem() / 2 ** 20),
      gpus: 0,
      labels: opts.labels,
      price_per_cpu_s: opts.price,
      offpeak: opts.offpeak,
      tz: opts.tz,
      offpeak_price_per_cpu_s: opts.offpeakPrice ?? null,
      heartbeatMs: opts.heartbeatMs,
      version: VERSION,
    },
  });
  await agent.start();
  if (opts.offpeak.length > 0)
    log.info(
      { offpeak: formatWindows(opts.offpeak), tz: opts.tz, offpeak_price: opts.offpeakPrice ?? opts.price },
      'off-peak windows offered',
    );
  else if (opts.offpeakPrice !== undefined)
    log.warn('--offpeak-price without --offpeak: no off-peak windows, so it is never charged');
  return {
    agent,
    stop: async (graceMs = opts.drainS * 1000) => {
      await agent.stop(graceMs);
      await executor.close();
      await transport.close();
    },
  };
}

export function registerWorker(program: Command): void {
  addConnectionOptions(
    program
      .command('worker')
      .description("run a provider's worker: take jobs from the coordinator and run them in containers")
      .option('--name <name>', 'worker name (its key lives in <data-dir>/workers/<name>)', hostname())
      .addOption(executorOption())
      .option(
        '--slots <n>',
        'jobs run at once',
        intOption('--slots', 1, 1024),
        Math.max(1, availableParallelism() - 1),
      )
      .option(
        '--runners <n>',
        'process executor: child processes running jobs at once (default: --slots); more slots than runners queue',
        intOption('--runners', 1, 1024),
      )
      .option(
        '--no-warm',
        'process executor: a fresh process per job instead of warm runners (slower, nothing shared)',
      )
      .option('--price <sim>', 'asking price in SIM per CPU-second', priceOption('--price'), 0.001)
      .option('--labels <k=v,...>', 'labels advertised to the scheduler', labelsOption, {})
      .addOption(
        new Option(
          '--offpeak <windows>',
          'hours this machine is idle for public-goods work, on its clock: 22-06, 22:30-06:15,12-14, 0-24',
        )
          .argParser(offpeakOption)
          .default([], 'none'),
      )
      .option('--tz <iana>', 'time zone of --offpeak (e.g. Europe/Berlin)', tzOption, machineTimeZone())
      .option(
        '--offpeak-price <sim>',
        'asking price in SIM per CPU-second inside --offpeak (default: --price)',
        offpeakPriceOption,
      )
      .option('--heartbeat-ms <n>', 'heartbeat interval', intOption('--heartbeat-ms', 100, 60_000), 1000)
      .option(
        '--enroll <token>',
        "a one-time token from `plurigrid enroll-token`: get this worker's credentials, then start",
      )
      .option(
        '--drain-s <n>',
        'on SIGTERM, how long running jobs may finish before being handed back',
        intOption('--drain-s', 0, 3600),
        30,
      )
      .addOption(logLevelOption()),
  ).action(async (opts: Options) => {
    const running = await startWorker(opts);
    const offpeak = describeOffpeak(opts);
    process.stdout.write(
      `worker ${opts.name} ready (${running.agent.workerId})${offpeak ? `, ${offpeak}` : ''}\n`,
    );
    onShutdown(() => running.stop());
    await new Promise(() => {});
  });
}
