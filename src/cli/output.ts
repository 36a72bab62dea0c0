import type { RestoreDisplay } from '../restore/restore.js';

// What the commands print, in one place: the library returns results (src/ops, src/restore, ...)
// and only the CLI writes them to stdout/stderr (issue 12, item 4).

/** One JSON document on stdout: `indent` 2 for the multi-line reports (prune, verify), 0 for one line. */
export function printJson(value: unknown, indent = 0): void {
  process.stdout.write((indent ? JSON.stringify(value, null, indent) : JSON.stringify(value)) + '\n');
}

/** The problems that made setup refuse, one per line on stderr. */
export function printSetupRefused(problems: string[]): void {
  process.stderr.write(`cdp setup: cannot proceed; nothing was created:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
}

/** On a terminal, where restore draws its progress line (rewritten in place); elsewhere none (the log has it). */
export function restoreDisplay(): RestoreDisplay | undefined {
  return process.stderr.isTTY ? process.stderr : undefined;
}
