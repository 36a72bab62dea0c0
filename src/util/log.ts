import { pino, type Logger } from 'pino';

// JSON logs for machines; readable lines when a person watches a terminal. Logs go to stderr so
// that commands printing results (status --json, restore --dry-run) keep stdout clean.
export type { Logger };

export function createLogger(level = process.env.CDP_LOG_LEVEL ?? 'info'): Logger {
  const pretty = process.stderr.isTTY && process.env.CDP_LOG_FORMAT !== 'json';
  if (pretty) {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' } },
    });
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: false }));
}
