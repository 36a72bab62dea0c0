import { CdpError, ErrorCodes, toError } from '../errors.js';
import type { Logger } from './log.js';

// Exponential backoff with full jitter (the AWS Architecture Blog's "Exponential Backoff And
// Jitter"): a daemon facing an outage of minutes keeps trying at a bounded rate instead of crashing
// or hammering the service, and stops promptly when asked to.

export interface RetryOptions {
  what: string;
  log: Logger;
  signal?: AbortSignal;
  baseMs?: number;
  capMs?: number;
  /** Give up after this long (default: never; daemons wait out outages). */
  maxElapsedMs?: number;
  /** Decide whether an error is worth retrying (default: every error but CdpError with canRetry false). */
  retryable?: (err: Error) => boolean;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new CdpError(ErrorCodes.SHUTDOWN, 'aborted'));
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason ?? new CdpError(ErrorCodes.SHUTDOWN, 'aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export async function withRetry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const base = opts.baseMs ?? 200;
  const cap = opts.capMs ?? 30_000;
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (raw) {
      const err = toError(raw);
      if (opts.signal?.aborted) throw opts.signal.reason ?? err;
      const retry = opts.retryable ? opts.retryable(err) : !(err instanceof CdpError) || err.canRetry;
      if (!retry) throw err;
      if (opts.maxElapsedMs !== undefined && Date.now() - started > opts.maxElapsedMs) throw err;
      const delay = Math.floor(Math.random() * Math.min(cap, base * 2 ** Math.min(attempt, 20)));
      opts.log.warn({ err: err.message, attempt, delayMs: delay }, `${opts.what} failed; retrying`);
      await sleep(delay, opts.signal);
    }
  }
}
