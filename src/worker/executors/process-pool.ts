// The process executor with warm runners: each job runs in a child process that stays alive between jobs, so a
// short job costs an IPC round trip rather than a Node start-up (~150 ms). A child is dedicated to one job at a
// time and is killed — never reused — when a job overruns its time or memory or is cancelled; a fresh one takes its
// place on demand. Limits are those of the one-shot executor: V8 heap via --max-old-space-size, and the resident
// set sampled from /proc, because the engine keeps its bulk data in typed arrays outside the heap.
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ExecStatus } from '../../models/execution.ts';
import { LIFELINE_ENV, type ServeReply } from '../epoch-runner.ts';
import { abortReason, heapLimitMb, isHeapOutOfMemory, lastLine, residentMb, TailBuffer } from './process.ts';
import { type ExecOutcome, type ExecRequest, type Executor, tail } from './types.ts';

export interface WarmProcessOptions {
  nodePath?: string;
  runnerPath?: string;
  /** Children started ahead of the first job (for the default 512 MiB limit). */
  prewarm?: number;
  /** An idle child exits after this long. */
  idleMs?: number;
  /**
   * Children running at once; further jobs wait for one (default: unbounded, one child per concurrent job). Accepting
   * more jobs than children keeps a short job's next input already at hand when it finishes.
   */
  maxRunners?: number;
}

const DEFAULT_RUNNER = fileURLToPath(new URL('../epoch-runner.ts', import.meta.url));
const RSS_SAMPLE_MS = 50;
const DEFAULT_MEMORY_MB = 512;

interface Runner {
  proc: ChildProcess;
  heapMb: number;
  stderr: TailBuffer;
  idleTimer: NodeJS.Timeout | undefined;
  ready: Promise<void>;
}

export function createWarmProcessExecutor(options: WarmProcessOptions = {}): Executor {
  const nodePath = options.nodePath ?? process.execPath;
  const runnerPath = options.runnerPath ?? DEFAULT_RUNNER;
  const idleMs = options.idleMs ?? 60_000;
  const idle: Runner[] = [];
  const all = new Set<Runner>();
  let nextId = 1;
  let closed = false;
  const maxRunners = options.maxRunners ?? Number.POSITIVE_INFINITY;
  let busy = 0;
  const waiting: (() => void)[] = [];
  const slot = async () => {
    while (busy >= maxRunners) await new Promise<void>((r) => waiting.push(r));
    busy++;
  };
  const freeSlot = () => {
    busy--;
    waiting.shift()?.();
  };

  function spawnRunner(heapMb: number): Runner {
    const proc = fork(runnerPath, ['--serve'], {
      execPath: nodePath,
      execArgv: [`--max-old-space-size=${heapMb}`],
      // A clean environment: nothing from ours (NODE_OPTIONS, test loaders, secrets) leaks into the job.
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TZ: 'UTC', [LIFELINE_ENV]: 'stdin' },
      // stdin is the runner's lifeline (see epoch-runner): the IPC channel's 'disconnect' reaches only an idle
      // runner, while the end of this pipe is seen mid-job too, so a runner dies with this process however it dies.
      stdio: ['pipe', 'ignore', 'pipe', 'ipc'],
      serialization: 'json',
    });
    const runner: Runner = {
      proc,
      heapMb,
      stderr: new TailBuffer(),
      idleTimer: undefined,
      ready: new Promise((resolve) => proc.once('spawn', () => resolve())),
    };
    proc.stderr!.on('data', (c: Buffer) => runner.stderr.push(c));
    proc.once('exit', () => {
      all.delete(runner);
      const i = idle.indexOf(runner);
      if (i >= 0) idle.splice(i, 1);
      clearTimeout(runner.idleTimer);
    });
    all.add(runner);
    return runner;
  }

  function release(runner: Runner): void {
    if (closed || runner.proc.exitCode !== null || runner.proc.signalCode !== null) return;
    runner.idleTimer = setTimeout(() => runner.proc.kill(), idleMs);
    runner.idleTimer.unref();
    idle.push(runner);
  }

  function acquire(heapMb: number): Runner {
    const i = idle.findIndex((r) => r.heapMb === heapMb);
    if (i >= 0) {
      const [runner] = idle.splice(i, 1);
      clearTimeout(runner!.idleTimer);
      return runner!;
    }
    return spawnRunner(heapMb);
  }

  for (let i = 0; i < (options.prewarm ?? 0); i++) {
    release(spawnRunner(heapLimitMb({ memory_mb: DEFAULT_MEMORY_MB })));
  }

  async function run(request: ExecRequest): Promise<ExecOutcome> {
    await slot();
    try {
      return await runOne(request);
    } finally {
      freeSlot();
    }
  }

  async function runOne(request: ExecRequest): Promise<ExecOutcome> {
    const { limits, signal } = request;
    const started = performance.now();
    const base = (
      status: ExecStatus,
      reason: string | null,
      extra: Partial<ExecOutcome> = {},
    ): ExecOutcome => ({
      status,
      reason,
      exit_code: null,
      output: null,
      usage: { wall_ms: Math.round(performance.now() - started), cpu_ms: null, max_memory_mb: null },
      stdout_tail: '',
      stderr_tail: '',
      ...extra,
    });
    if (signal?.aborted) return base('cancelled', abortReason(signal));
    if (closed) return base('failed', 'executor closed');
    const heap = heapLimitMb(limits);
    const runner = acquire(heap);
    runner.stderr = new TailBuffer();
    await runner.ready;
    const id = nextId++;
    let peakRss = 0;

    type End =
      | { kind: 'reply'; reply: ServeReply }
      | { kind: 'exit'; code: number | null; signal: NodeJS.Signals | null }
      | { kind: 'stopped'; why: 'timeout' | 'cancelled' | 'oom' };
    const ended = await new Promise<End>((resolve) => {
      let done = false;
      const finish = (e: End) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearInterval(sampler);
        signal?.removeEventListener('abort', onAbort);
        runner.proc.off('message', onMessage);
        runner.proc.off('exit', onExit);
        resolve(e);
      };
      const stop = (why: 'timeout' | 'cancelled' | 'oom') => {
        runner.proc.kill('SIGKILL');
        finish({ kind: 'stopped', why });
      };
      const onMessage = (m: ServeReply) => {
        if (m.id === id) finish({ kind: 'reply', reply: m });
      };
      const onExit = (code: number | null, sig: NodeJS.Signals | null) =>
        finish({ kind: 'exit', code, signal: sig });
      const onAbort = () => stop('cancelled');
      const timer = setTimeout(() => stop('timeout'), limits.timeout_s * 1000);
      const sampler = setInterval(async () => {
        const rss = runner.proc.pid === undefined ? null : await residentMb(runner.proc.pid);
        if (rss === null) return;
        peakRss = Math.max(peakRss, rss);
        if (rss > limits.memory_mb) stop('oom');
      }, RSS_SAMPLE_MS);
      runner.proc.on('message', onMessage);
      runner.proc.once('exit', onExit);
      signal?.addEventListener('abort', onAbort, { once: true });
      runner.proc.send({ id, input: request.input }, (err) => {
        if (err) finish({ kind: 'exit', code: null, signal: null });
      });
    });

    const stderr = runner.stderr.toString();
    const tails = { stderr_tail: tail(stderr), stdout_tail: '' };
    const memory = peakRss > 0 ? Math.round(peakRss * 10) / 10 : null;
    if (ended.kind === 'reply') {
      release(runner);
      const r = ended.reply;
      const usage = {
        wall_ms: Math.round(performance.now() - started),
        cpu_ms: r.ok ? r.cpu_ms : null,
        max_memory_mb: memory,
      };
      if (r.ok) return base('ok', null, { ...tails, usage, exit_code: 0, output: r.output });
      return base('failed', `runner: ${r.message.split('\n').join(' ')}`, {
        ...tails,
        usage,
        exit_code: r.code,
        stderr_tail: tail(`${stderr}error: ${r.message}\n`),
      });
    }
    if (ended.kind === 'stopped') {
      if (ended.why === 'timeout') return base('timeout', `timed out after ${limits.timeout_s} s`, tails);
      if (ended.why === 'cancelled') return base('cancelled', abortReason(signal!), tails);
      return base(
        'oom',
        `exceeded ${limits.memory_mb} MiB memory limit (resident ${Math.round(peakRss)} MiB)`,
        tails,
      );
    }
    if (isHeapOutOfMemory(stderr)) {
      return base('oom', `exceeded ${limits.memory_mb} MiB memory limit (JS heap ${heap} MiB)`, tails);
    }
    const how =
      ended.code === null ? `was killed by ${ended.signal ?? 'an error'}` : `exited with code ${ended.code}`;
    const detail = lastLine(stderr);
    return base('failed', `runner ${how}${detail ? `: ${detail}` : ''}`, { ...tails, exit_code: ended.code });
  }

  return {
    kind: 'process',
    run,
    cachedImages: async () => [],
    close: async () => {
      closed = true;
      const exits = [...all].map(
        (r) => new Promise((res) => (r.proc.exitCode !== null ? res(null) : r.proc.once('exit', res))),
      );
      for (const r of all) r.proc.kill();
      await Promise.all(exits);
    },
  };
}
