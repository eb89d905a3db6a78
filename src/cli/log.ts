import { Option } from 'commander';
import { type Logger, pino } from 'pino';

export const LOG_LEVEL_ENV = 'PLURIGRID_LOG';
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** `--log-level`, from the command line or PLURIGRID_LOG; an unknown level is a usage error. */
export function logLevelOption(): Option {
  return new Option('--log-level <level>', 'log level').choices(LEVELS).env(LOG_LEVEL_ENV);
}

/** JSON-lines logs on stderr (stdout stays for results). */
export function createLogger(name: string, level?: string): Logger {
  // The environment is read here too for callers outside the CLI (benchmarks, tests).
  return pino(
    { name, level: level ?? process.env[LOG_LEVEL_ENV] ?? 'info' },
    pino.destination({ dest: 2, sync: true }),
  );
}
