import { describe, expect, it } from 'vitest';
import { etaSeconds, formatBytes, formatDuration, fractionOf, Progress, progressLine, progressRecord } from '../../../src/restore/progress.js';

describe('restore progress: estimates and formatting', () => {
  it('fraction of a range, clamped; none for an empty range', () => {
    expect(fractionOf(150, 100, 200)).toBe(0.5);
    expect(fractionOf(50, 100, 200)).toBe(0);
    expect(fractionOf(250, 100, 200)).toBe(1);
    expect(fractionOf(100, 100, 100)).toBeUndefined();
  });

  it('ETA from the average pace, only once it means something', () => {
    expect(etaSeconds(10, 0.25)).toBe(30);
    expect(etaSeconds(10, 0.005)).toBeUndefined();
    expect(etaSeconds(1, 0.5)).toBeUndefined();
    expect(etaSeconds(10, 1)).toBeUndefined();
    expect(etaSeconds(10, undefined)).toBeUndefined();
  });

  it('durations and sizes', () => {
    expect([formatDuration(5.4), formatDuration(75), formatDuration(3 * 3600 + 7 * 60)]).toEqual(['5s', '1m15s', '3h07m']);
    expect([formatBytes(512), formatBytes(1536), formatBytes(200 * 1024 * 1024), formatBytes(3 * 1024 ** 3)]).toEqual([
      '512 B',
      '1.5 KiB',
      '200 MiB',
      '3.0 GiB',
    ]);
  });

  it('one line per phase: percent, rate, ETA', () => {
    expect(
      progressLine({ phase: 'replay', elapsed: 10, fraction: 0.25, changes: 1_000_000, transactions: 10, at: Date.UTC(2026, 10, 29, 10, 0, 0) * 1000 }),
    ).toBe('restore: replay 25.0%: 1000k changes, 100k changes/s, at 2026-11-29T10:00:00Z, elapsed 10s, ETA 30s');
    expect(progressLine({ phase: 'download', elapsed: 4, fraction: 0.5, bytes: 8 * 1024 * 1024, totalBytes: 16 * 1024 * 1024 })).toBe(
      'restore: downloading base 50.0%: 8.0 MiB of 16 MiB, 2.0 MiB/s, elapsed 4s, ETA 4s',
    );
    expect(progressLine({ phase: 'base', elapsed: 65, bytes: 3 * 1024 ** 3 })).toBe('restore: loading base (pg_restore): database 3.0 GiB, elapsed 1m05s');
  });

  it('the log record carries the same facts as numbers', () => {
    expect(progressRecord({ phase: 'replay', elapsed: 10, fraction: 0.25, changes: 1000, transactions: 3 })).toEqual({
      phase: 'replay',
      elapsedSeconds: 10,
      percent: 25,
      etaSeconds: 30,
      changes: 1000,
      transactions: 3,
      changesPerSecond: 100,
    });
  });

  it('on a terminal redraws one line in place and ends it; otherwise logs at its interval only', () => {
    let t = 0;
    const written: string[] = [];
    const tty = new Progress({ tty: { write: (s: string) => written.push(s) }, log: () => {}, now: () => t });
    tty.begin('replay', () => ({ fraction: 0.5, changes: 10 }));
    t = 3000;
    tty.tick(false);
    tty.tick(false);
    tty.end();
    expect(written.length).toBe(3);
    expect(written.every((w) => w.startsWith('\r') && w.includes('\x1b[K'))).toBe(true);
    expect(written.at(-1)!.endsWith('\n')).toBe(true);

    const logged: Array<Record<string, unknown>> = [];
    const ci = new Progress({ log: (r) => logged.push(r), logEveryMs: 30_000, now: () => t });
    t = 0;
    ci.begin('replay', () => ({ fraction: t / 100_000, changes: t }));
    for (t = 1000; t <= 65_000; t += 1000) ci.tick(false);
    expect(logged.length).toBe(2); // at 30 s and 60 s
    ci.end();
    expect(logged.length).toBe(3); // the final state
    expect(logged.at(-1)).toMatchObject({ phase: 'replay', percent: 66 }); // t = 66 s after the loop
    // A phase shorter than 2 s leaves no record.
    ci.begin('download', () => ({ bytes: 1 }));
    t += 500;
    ci.end();
    expect(logged.length).toBe(3);
  });
});
