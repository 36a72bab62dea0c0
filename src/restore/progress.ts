// Restore progress: what fraction of each phase is done, how fast, how long until it ends. On a
// terminal (stderr is a TTY) one line rewritten in place; otherwise a JSON log record (pino) at a
// modest interval, so CI logs and journald get a heartbeat, not a flood.
//
// Phases and their measure:
//   download  - bytes of the base written to the temporary file / the base's stored size
//   base      - pg_restore: no fraction (it reports none); elapsed time and the target database's
//               size as it grows, so the line is not frozen on a large base
//   replay    - position in the stream between the base and the target: by LSN (an LSN is a byte
//               position in the source's WAL, so the fraction follows the volume of WAL replayed,
//               watermarks included: it moves through idle stretches too), or by commit time for a
//               --time target
// The formatting and estimates are pure functions (unit-tested); Progress only samples and prints.

export type Phase = 'download' | 'base' | 'replay';

export interface Sample {
  phase: Phase;
  /** Seconds since the phase began. */
  elapsed: number;
  /** 0..1 when known. */
  fraction?: number;
  /** Bytes done and total (download), or the target's size (base). */
  bytes?: number;
  totalBytes?: number;
  /** Replay counters. */
  changes?: number;
  transactions?: number;
  /** Where the replay stands (source commit time, µs). */
  at?: number;
}

/** Fraction of [from, to] covered by `at`, clamped to [0, 1]; undefined when the range is empty. */
export function fractionOf(at: number, from: number, to: number): number | undefined {
  if (!(to > from)) return undefined;
  return Math.min(1, Math.max(0, (at - from) / (to - from)));
}

/**
 * Seconds left, from the average pace so far: elapsed x (1 - f) / f. Undefined until 1% is done
 * and 2 s have passed (the first samples say little), or once it is done.
 */
export function etaSeconds(elapsed: number, fraction: number | undefined): number | undefined {
  if (fraction === undefined || fraction < 0.01 || elapsed < 2 || fraction >= 1) return undefined;
  return (elapsed * (1 - fraction)) / fraction;
}

export function formatDuration(s: number): string {
  const t = Math.max(0, Math.round(s));
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

function formatCount(n: number): string {
  if (n < 10_000) return String(Math.round(n));
  if (n < 10_000_000) return `${Math.round(n / 1000)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

/** The terminal line for a sample (no line break). */
export function progressLine(s: Sample): string {
  const pct = s.fraction !== undefined ? ` ${(s.fraction * 100).toFixed(1)}%` : '';
  const eta = etaSeconds(s.elapsed, s.fraction);
  let head: string;
  const parts: string[] = [];
  switch (s.phase) {
    case 'download':
      head = `restore: downloading base${pct}`;
      if (s.bytes !== undefined) parts.push(`${formatBytes(s.bytes)}${s.totalBytes ? ` of ${formatBytes(s.totalBytes)}` : ''}`);
      if (s.bytes !== undefined && s.elapsed > 0) parts.push(`${formatBytes(s.bytes / s.elapsed)}/s`);
      break;
    case 'base':
      head = 'restore: loading base (pg_restore)';
      if (s.bytes !== undefined) parts.push(`database ${formatBytes(s.bytes)}`);
      break;
    case 'replay': {
      head = `restore: replay${pct}`;
      const changes = s.changes ?? 0;
      parts.push(`${formatCount(changes)} changes`);
      if (s.elapsed > 0) parts.push(`${formatCount(changes / s.elapsed)} changes/s`);
      if (s.at) parts.push(`at ${new Date(s.at / 1000).toISOString().replace(/\.\d+Z$/, 'Z')}`);
      break;
    }
  }
  parts.push(`elapsed ${formatDuration(s.elapsed)}`);
  if (eta !== undefined) parts.push(`ETA ${formatDuration(eta)}`);
  return `${head}: ${parts.join(', ')}`;
}

/** The JSON log record's fields for a sample. */
export function progressRecord(s: Sample): Record<string, unknown> {
  const eta = etaSeconds(s.elapsed, s.fraction);
  const rec: Record<string, unknown> = { phase: s.phase, elapsedSeconds: Math.round(s.elapsed) };
  if (s.fraction !== undefined) rec.percent = Math.round(s.fraction * 1000) / 10;
  if (eta !== undefined) rec.etaSeconds = Math.round(eta);
  if (s.bytes !== undefined) rec.bytes = s.bytes;
  if (s.totalBytes !== undefined) rec.totalBytes = s.totalBytes;
  if (s.changes !== undefined) {
    rec.changes = s.changes;
    rec.transactions = s.transactions ?? 0;
    rec.changesPerSecond = Math.round(s.changes / Math.max(s.elapsed, 0.001));
  }
  if (s.at) rec.at = new Date(s.at / 1000).toISOString();
  return rec;
}

/** A terminal to rewrite one line on (the CLI passes stderr when it is a TTY). */
export interface ProgressTerminal {
  write(s: string): unknown;
  columns?: number;
}

export interface ProgressOutput {
  /** A terminal to rewrite a line on, or undefined. */
  tty?: ProgressTerminal;
  log: (rec: Record<string, unknown>, msg: string) => void;
  /** Non-TTY: one record per this many ms (default 30 s). */
  logEveryMs?: number;
  /** TTY: redraw every this many ms (default 500). */
  drawEveryMs?: number;
  now?: () => number;
}

/**
 * Samples a phase's state on a timer and prints it. One phase at a time: begin() ends the
 * previous one (its final state is printed), stop() ends the last.
 */
export class Progress {
  private timer: NodeJS.Timeout | undefined;
  private phase: Phase | undefined;
  private began = 0;
  private lastLog = 0;
  private get: (() => Omit<Sample, 'phase' | 'elapsed'>) | undefined;
  private drawn = false;
  private readonly now: () => number;

  constructor(private readonly out: ProgressOutput) {
    this.now = out.now ?? Date.now;
  }

  begin(phase: Phase, get: () => Omit<Sample, 'phase' | 'elapsed'>): void {
    this.end();
    this.phase = phase;
    this.get = get;
    this.began = this.now();
    this.lastLog = this.began;
    const every = this.out.tty ? (this.out.drawEveryMs ?? 500) : Math.min(this.out.logEveryMs ?? 30_000, 5_000);
    this.timer = setInterval(() => this.tick(false), every);
    this.timer.unref();
  }

  /** The sample now (for tests and the final record). */
  sample(): Sample | undefined {
    if (!this.phase || !this.get) return undefined;
    return { phase: this.phase, elapsed: (this.now() - this.began) / 1000, ...this.get() };
  }

  tick(final: boolean): void {
    const s = this.sample();
    if (!s) return;
    if (this.out.tty) {
      let line = progressLine(s);
      const cols = this.out.tty.columns;
      if (cols && line.length > cols - 1) line = line.slice(0, cols - 1);
      // \r and erase-to-end-of-line: one line, redrawn in place.
      this.out.tty.write(`\r${line}\x1b[K${final ? '\n' : ''}`);
      this.drawn = !final;
    } else if (final || this.now() - this.lastLog >= (this.out.logEveryMs ?? 30_000)) {
      this.lastLog = this.now();
      this.out.log(progressRecord(s), 'restore: progress');
    }
  }

  /** Ends the current phase; its last state is printed unless it lasted under 2 s (no log noise). */
  end(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const s = this.sample();
    if (s && (this.drawn || s.elapsed >= 2)) this.tick(true);
    else if (this.drawn && this.out.tty) this.out.tty.write('\r\x1b[K');
    this.phase = undefined;
    this.get = undefined;
    this.drawn = false;
  }
}

/** Calls `read` every `ms` (never two at once) and keeps its last answer; errors are ignored. */
export function pollEvery(ms: number, read: () => Promise<number>): { readonly value: number; stop(): void } {
  let value = 0;
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    read()
      .then((v) => void (value = v))
      .catch(() => {})
      .finally(() => void (busy = false));
  }, ms);
  timer.unref();
  return {
    get value() {
      return value;
    },
    stop: () => clearInterval(timer),
  };
}
