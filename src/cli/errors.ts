import { CommanderError } from 'commander';
import { ApiError } from '../coordinator/errors.ts';
import { InputError } from '../models/errors.ts';
import { NatsUnreachableError } from '../transport/connect.ts';

/**
 * Exit codes, so a script can tell apart what it should fix, retry or report. The last two are sysexits.h's:
 * EX_NOINPUT for a named thing (a study) that does not exist, EX_UNAVAILABLE for a bus or coordinator that does not
 * answer — starting it, not changing the command, fixes that.
 */
export const EXIT_OK = 0;
/** A study that failed or was cancelled, an internal error. */
export const EXIT_FAILURE = 1;
/** Anything the user can fix in their input or command line. */
export const EXIT_USAGE = 2;
export const EXIT_NOT_FOUND = 66;
export const EXIT_UNAVAILABLE = 69;

/** No NATS server to talk to: none named and no local coordinator's, or the one named does not answer. */
export class BusUnavailableError extends Error {
  readonly code = 'unavailable';
  readonly hints: readonly string[];
  constructor(message: string, hints: readonly string[] = [], options?: ErrorOptions) {
    super(message, options);
    this.name = 'BusUnavailableError';
    this.hints = hints;
  }
}

/** The exit code for an error thrown by a command. */
export function exitCode(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  if (err instanceof InputError) return EXIT_USAGE;
  if (err instanceof BusUnavailableError || err instanceof NatsUnreachableError) return EXIT_UNAVAILABLE;
  if (err instanceof ApiError) {
    if (err.code === 'unavailable') return EXIT_UNAVAILABLE;
    if (err.code === 'not_found') return EXIT_NOT_FOUND;
    if (err.code === 'invalid') return EXIT_USAGE;
  }
  return EXIT_FAILURE;
}

/** Prints an error the way a user needs it (a stack trace only for the unexpected) and returns the exit code. */
export function reportError(err: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  const code = exitCode(err);
  // Commander has already printed its message.
  if (err instanceof CommanderError) return code;
  const e = err as Error;
  const details = err instanceof BusUnavailableError ? err.hints : err instanceof ApiError ? err.issues : [];
  stderr.write(`error: ${e?.message ?? String(err)}${details.map((d) => `\n  ${d}`).join('')}\n`);
  if (code !== EXIT_USAGE && process.env.PLURIGRID_DEBUG) stderr.write(`${e?.stack ?? ''}\n`);
  return code;
}
