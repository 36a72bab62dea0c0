import { pino, type Logger } from 'pino';

// JSON logs for machines; readable lines when a person watches a terminal. Logs go to stderr so
// that commands printing results (status --json, restore --dry-run) keep stdout clean.
export type { Logger };

/** `format` (log.format): auto is readable lines on a terminal and JSON otherwise; json is always JSON. */
export function createLogger(level = 'info', format: 'auto' | 'json' = 'auto'): Logger {
  const pretty = process.stderr.isTTY && format !== 'json';
  if (pretty) {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: false }));
}
