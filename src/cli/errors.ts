import { CommanderError } from 'commander';
import { InputError } from '../models/errors.ts';

/** Exit codes: 2 for anything the user can fix in their input or command line, 1 for everything else. */
export const EXIT_USAGE = 2;
export const EXIT_FAILURE = 1;

/** Prints an error the way a user needs it (no stack trace for bad input) and returns the exit code. */
export function reportError(err: unknown, stderr: NodeJS.WritableStream = process.stderr): number {
  if (err instanceof InputError) {
    stderr.write(`error: ${err.message}\n`);
    return EXIT_USAGE;
  }
  if (err instanceof CommanderError) {
    // Commander has already printed its message.
    return err.exitCode === 0 ? 0 : EXIT_USAGE;
  }
  const e = err as Error;
  stderr.write(`error: ${e?.message ?? String(err)}\n`);
  if (process.env.PLURIGRID_DEBUG) stderr.write(`${e?.stack ?? ''}\n`);
  return EXIT_FAILURE;
}
