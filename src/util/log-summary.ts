import type { Logger } from './log.js';

// Third-party log lines (kafkajs) through our logger (issue 14): every line at debug, with all its
// fields, for whoever turns debug on; at warn only a summary, one line per kind of message per
// window, without stack traces or the library's JSON: "<library>: <message> (<n> times in the last
// 60 s; log.level debug shows each)". Our own code reports what the trouble means for the pipeline
// (an error with a next step); the library's retries are context, not news.

export interface Summarizer {
  /** One library log line; `important` lines (the library's errors and warnings) count toward a summary. */
  (important: boolean, message: string, fields: Record<string, unknown>): void;
  /** Writes the pending summaries now (tests, shutdown). */
  flush(): void;
}

export function logSummarizer(log: Logger, library: string, windowMs = 60_000, now: () => number = Date.now): Summarizer {
  const pending = new Map<string, { count: number; first: number; detail: string | undefined }>();
  const lastWarned = new Map<string, number>();
  const emit = (key: string) => {
    const p = pending.get(key);
    if (!p || p.count === 0) return;
    pending.delete(key);
    lastWarned.set(key, now());
    const tail =
      p.count > 1 ? `${p.count} times in the last ${Math.round(windowMs / 1000)} s; log.level debug shows each` : 'log.level debug shows the details';
    log.warn({ library, repeats: p.count }, `${library}: ${key}${p.detail ? `: ${p.detail}` : ''} (${tail})`);
  };
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      for (const key of [...pending.keys()]) emit(key);
    }, windowMs);
    timer.unref();
  };
  const fn = ((important: boolean, message: string, fields: Record<string, unknown>) => {
    log.debug({ library, ...fields }, `${library}: ${message}`);
    if (!important) return;
    // The message text without numbers (correlation ids, retry counts, ports) is the kind.
    const key = message.replace(/\s+/g, ' ').trim().slice(0, 200);
    const err = typeof fields.error === 'string' ? fields.error : undefined;
    const p = pending.get(key) ?? { count: 0, first: now(), detail: err };
    p.count += 1;
    pending.set(key, p);
    // The first of a kind is said at once (an operator sees the trouble start); repeats wait for
    // the window's summary.
    const last = lastWarned.get(key);
    if (last === undefined || now() - last >= windowMs) emit(key);
    else schedule();
  }) as Summarizer;
  fn.flush = () => {
    for (const key of [...pending.keys()]) emit(key);
  };
  return fn;
}
