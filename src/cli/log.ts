import { type Logger, pino } from 'pino';

/** JSON-lines logs on stderr (stdout stays for results); level from --log-level or PLURIGRID_LOG. */
export function createLogger(name: string, level?: string): Logger {
  return pino(
    { name, level: level ?? process.env.PLURIGRID_LOG ?? 'info' },
    pino.destination({ dest: 2, sync: true }),
  );
}
