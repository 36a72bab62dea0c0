import { spawn } from 'node:child_process';
import { CdpError, ErrorCodes } from '../errors.js';

// Running the PostgreSQL client programs cdp compact needs (pg_dump, pg_restore): stdout returned as
// text or piped into a file, stderr kept for the error, the child stopped when the signal aborts.

/** Runs `cmd`; resolves with its stdout (empty when piped to `stdoutTo`), rejects with its exit code and stderr's last lines. */
export function runTool(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv | undefined,
  signal: AbortSignal,
  stdoutTo?: NodeJS.WritableStream,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    if (stdoutTo) p.stdout.pipe(stdoutTo);
    else p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.length > 64_000) err = err.slice(-32_000);
    });
    const onAbort = () => p.kill('SIGTERM');
    signal.addEventListener('abort', onAbort, { once: true });
    p.on('error', (e) => reject(new CdpError(ErrorCodes.USAGE, `cannot run ${cmd}: ${e.message}`, { cause: e })));
    p.on('close', (code) => {
      signal.removeEventListener('abort', onAbort);
      if (code === 0) resolve(out);
      else reject(new CdpError(ErrorCodes.PG_ERROR, `${cmd} failed (exit ${code}): ${err.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}
