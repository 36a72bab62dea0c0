import type { Config } from './config/config.js';
import type { Logger } from './util/log.js';

// What every command of the library receives: the validated configuration, a logger and the
// shutdown signal. It lives below the CLI so that library modules depend on it,
// not on src/cli/main.ts; the CLI builds one per command.

export interface CommandContext {
  cfg: Config;
  log: Logger;
  /** Aborted on the first SIGTERM/SIGINT: daemons flush, acknowledge and return. */
  signal: AbortSignal;
}
