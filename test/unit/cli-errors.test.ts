import { PassThrough } from 'node:stream';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import { natsUrlOption } from '../../src/cli/connection.ts';
import {
  BusUnavailableError,
  EXIT_FAILURE,
  EXIT_NOT_FOUND,
  EXIT_OK,
  EXIT_UNAVAILABLE,
  EXIT_USAGE,
  exitCode,
  reportError,
} from '../../src/cli/errors.ts';
import { registerWorker, workerArgv } from '../../src/cli/worker.ts';
import {
  ApiError,
  ConflictError,
  CoordinatorUnavailableError,
  NotFoundError,
} from '../../src/coordinator/errors.ts';
import { InputError } from '../../src/models/errors.ts';

describe('exit codes', () => {
  it('tells bad input, a missing study, an unreachable bus or coordinator and other failures apart', () => {
    expect(exitCode(new InputError('bad', ['x: wrong']))).toBe(EXIT_USAGE);
    expect(exitCode(new CommanderError(1, 'commander.invalidArgument', 'bad'))).toBe(EXIT_USAGE);
    expect(exitCode(new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)'))).toBe(EXIT_OK);
    expect(exitCode(new NotFoundError('no study x'))).toBe(EXIT_NOT_FOUND);
    expect(exitCode(new CoordinatorUnavailableError('no coordinator'))).toBe(EXIT_UNAVAILABLE);
    // The code decides, not the subclass: a coordinator's own `unavailable` reply arrives as a plain ApiError.
    expect(exitCode(new ApiError('unavailable', 'shutting down'))).toBe(EXIT_UNAVAILABLE);
    expect(exitCode(new BusUnavailableError('no NATS server to talk to'))).toBe(EXIT_UNAVAILABLE);
    expect(exitCode(new ConflictError('key in use'))).toBe(EXIT_FAILURE);
    expect(exitCode(new ApiError('internal', 'boom'))).toBe(EXIT_FAILURE);
    expect(exitCode(new Error('boom'))).toBe(EXIT_FAILURE);
    expect(new Set([EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNAVAILABLE]).size).toBe(5);
  });

  it('prints the hints and issues under the message, without a stack trace', () => {
    const out = new PassThrough();
    const code = reportError(new BusUnavailableError('no NATS server to talk to', ['start one']), out);
    expect(code).toBe(EXIT_UNAVAILABLE);
    expect(out.read().toString()).toBe('error: no NATS server to talk to\n  start one\n');
  });
});

describe('--nats', () => {
  it('accepts NATS URLs and host:port lists, blank as unset', () => {
    expect(natsUrlOption('nats://127.0.0.1:4222')).toBe('nats://127.0.0.1:4222');
    expect(natsUrlOption(' nats://a:1 , b:2 ')).toBe('nats://a:1,b:2');
    expect(natsUrlOption('  ')).toBeUndefined();
  });

  it('rejects what is not one, naming it', () => {
    expect(() => natsUrlOption('http://a:1')).toThrow(InvalidArgumentError);
    expect(() => natsUrlOption('nats://a:1,nats://[::')).toThrow(/"nats:\/\/\[::" is not a NATS URL/);
  });
});

/**
 * `plurigrid worker <args>` parsed as main() parses it, its action replaced so nothing starts: the options it would
 * run with, or the exit code and what commander printed.
 */
async function parseWorker(args: readonly string[]) {
  const program = new Command('plurigrid').exitOverride();
  registerWorker(program);
  let stderr = '';
  let opts: Record<string, unknown> | undefined;
  const worker = program.commands[0]!;
  worker
    .exitOverride()
    .configureOutput({ writeErr: (s) => (stderr += s) })
    .action((o: Record<string, unknown>) => {
      opts = o;
    });
  try {
    await program.parseAsync(['worker', ...args], { from: 'user' });
    return { code: EXIT_OK, stderr, opts };
  } catch (err) {
    return { code: exitCode(err), stderr, opts };
  }
}

describe('worker --offpeak, --tz, --offpeak-price', () => {
  it('offer no off-peak capacity by default, in this machine’s zone, at the usual price', async () => {
    const { opts } = await parseWorker([]);
    expect(opts).toMatchObject({
      offpeak: [],
      tz: Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'UTC',
    });
    expect(opts?.offpeakPrice).toBeUndefined();
  });

  it('take windows, a zone and a price, also as workerArgv spells them', async () => {
    const { opts } = await parseWorker([
      ...['--offpeak', '22-06,12:30-14', '--tz', 'Europe/Berlin', '--offpeak-price', '0.0005'],
    ]);
    expect(opts).toMatchObject({
      offpeak: [
        { from_hour: 22, to_hour: 6 },
        { from_hour: 12.5, to_hour: 14 },
      ],
      tz: 'Europe/Berlin',
      offpeakPrice: 0.0005,
    });
    const base = {
      name: 'w',
      nats: 'nats://127.0.0.1:4222',
      dataDir: 'd',
      executor: 'process',
      slots: 1,
    } as const;
    expect(workerArgv({ ...base, offpeak: [], logLevel: 'warn' })).not.toContain('--offpeak');
    for (const offpeak of ['22:30-06:15', [{ from_hour: 22.5, to_hour: 6.25 }]]) {
      const argv = workerArgv({ ...base, offpeak, tz: 'Asia/Kolkata', offpeakPrice: 0, logLevel: 'warn' });
      const parsed = await parseWorker(argv.slice(1));
      expect(parsed.opts).toMatchObject({
        offpeak: [{ from_hour: 22.5, to_hour: 6.25 }],
        tz: 'Asia/Kolkata',
        offpeakPrice: 0,
      });
    }
  });

  it('refuse bad values as usage errors (exit 2) that name the flag and the bad part', async () => {
    for (const [args, says] of [
      [['--offpeak', '25-06'], '--offpeak: "25-06": 25 is past 24:00'],
      [['--offpeak', '22-06,night'], '--offpeak: "night" is not a window'],
      [['--offpeak', '22:60-06'], '--offpeak: "22:60-06": :60 is not a minute (00-59)'],
      [['--offpeak', '10-10'], '--offpeak: "10-10" starts where it ends; write 0-24 for all day'],
      [['--tz', 'Mars/Olympus'], '--tz: unknown time zone "Mars/Olympus"'],
      [['--tz', '+02:00'], '--tz: "+02:00" is a fixed UTC offset'],
      [['--offpeak-price', '-1'], '--offpeak-price: expected a number ≥ 0, got "-1"'],
      [['--offpeak-price', 'cheap'], '--offpeak-price: expected a number ≥ 0, got "cheap"'],
      [['--price', ''], '--price: expected a number ≥ 0, got ""'],
    ] as const) {
      const r = await parseWorker(args);
      expect(r.code, args.join(' ')).toBe(EXIT_USAGE);
      expect(r.stderr, args.join(' ')).toContain(says);
      expect(r.opts).toBeUndefined();
    }
  });
});
