import { PassThrough } from 'node:stream';
import { CommanderError, InvalidArgumentError } from 'commander';
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
