import { describe, expect, it } from 'vitest';
import type { BaseManifestExt } from '../../../src/base/basebackup.js';
import { replayFraction } from '../../../src/restore/replay.js';
import { restoreReport, type ReportInput } from '../../../src/restore/report.js';

// The report a finished restore returns (src/restore/report.ts; the CLI prints it as JSON, tests
// and cdp compact read its fields), assembled from plain inputs: before the split it existed only
// at the end of a whole restore.

const base = {
  lsn: 0x3000000,
  lsnText: '0/3000000',
  time: '2026-01-01T00:00:00.000000Z',
  timeMicros: 1_767_225_600_000_000,
  key: 'r/bases/0000000003000000/base.dump',
  size: 4096,
} as BaseManifestExt;

const input = (over: Partial<ReportInput> = {}): ReportInput => ({
  mode: { dryRun: false },
  base,
  targetText: '--latest',
  point: { lsn: 0x3001000, time: 1_767_225_660_000_000 },
  segLists: [[1, 2], [3]],
  segStats: { segments: 3, bytes: 3000 },
  mergeStats: { duplicates: 1 },
  maxCommitTime: 1_767_225_630_000_000,
  stats: { transactions: 7, changes: 700, targetCommits: 2, last: { commitLsn: 0x3000800, commitTime: 1_767_225_630_000_000, xid: 901 } },
  resumed: undefined,
  baseFile: undefined,
  started: 10_000,
  replayStarted: 12_000,
  now: 14_500,
  ...over,
});

describe('restore report', () => {
  it('has the fields, in the order, the CLI prints', () => {
    const r = restoreReport(input());
    expect(Object.keys(r)).toEqual([
      'ok',
      'mode',
      'base',
      'target',
      'restorablePoint',
      'segments',
      'segmentsRead',
      'bytesRead',
      'duplicatesDropped',
      'maxCommitTime',
      'maxCommitTimeMicros',
      'lsn',
      'time',
      'xid',
      'transactions',
      'changes',
      'targetCommits',
      'seconds',
      'replaySeconds',
      'replayChangesPerSecond',
      'resumed',
      'sqlFile',
      'baseFile',
    ]);
    expect(r).toEqual({
      ok: true,
      mode: 'apply',
      base: { lsn: '0/3000000', time: base.time, key: base.key, size: 4096, synthetic: false },
      target: '--latest',
      restorablePoint: { lsn: '0/3001000', time: '2026-01-01T00:01:00.000000Z' },
      segments: 3,
      segmentsRead: 3,
      bytesRead: 3000,
      duplicatesDropped: 1,
      maxCommitTime: '2026-01-01T00:00:30.000000Z',
      maxCommitTimeMicros: 1_767_225_630_000_000,
      lsn: '0/3000800',
      time: '2026-01-01T00:00:30.000000Z',
      xid: 901,
      transactions: 7,
      changes: 700,
      targetCommits: 2,
      seconds: 4.5,
      replaySeconds: 2.5,
      replayChangesPerSecond: 280,
      resumed: false,
      sqlFile: null,
      baseFile: null,
    });
  });

  it('reports where the target stands: the last applied transaction, the resumed cursor, or the base', () => {
    const resumed = { commit_lsn: String(0x3000400), commit_time: '1767225615000000', xid: '850' };
    const r = restoreReport(input({ stats: { transactions: 0, changes: 0, targetCommits: 0, last: undefined }, resumed, maxCommitTime: 0 }));
    expect([r.lsn, r.time, r.xid, r.resumed, r.maxCommitTime]).toEqual(['0/3000400', '2026-01-01T00:00:15.000000Z', 850, true, null]);
    const none = restoreReport(input({ stats: { transactions: 0, changes: 0, targetCommits: 0, last: undefined } }));
    expect([none.lsn, none.time, none.xid]).toEqual(['0/3000000', base.time, null]);
  });

  it('names the mode and the --sql files', () => {
    expect(restoreReport(input({ mode: { dryRun: true } })).mode).toBe('dry-run');
    const sql = restoreReport(input({ mode: { dryRun: false, sqlFile: '/tmp/r.sql' }, baseFile: '/tmp/r.sql.base.dump' }));
    expect([sql.mode, sql.sqlFile, sql.baseFile]).toEqual(['sql', '/tmp/r.sql', '/tmp/r.sql.base.dump']);
    // A replay that took no measurable time does not divide by zero.
    expect(restoreReport(input({ replayStarted: 14_500 })).replayChangesPerSecond).toBe(700_000);
  });
});

describe('restore progress fraction', () => {
  const point = { lsn: 2000, time: 20_000 };
  it('goes by LSN from the start to the limit, or to the commit of an --xid target', () => {
    const position = { lsn: 1000, time: 0 };
    expect(replayFraction({ target: { kind: 'latest' }, point, limitLsn: 2000, xidCommitLsn: undefined }, position, { lsn: 0, time: 0 })()).toBe(0.5);
    const xid = replayFraction({ target: { kind: 'xid', xid: 7 }, point, limitLsn: 2000, xidCommitLsn: 1500 }, position, { lsn: 500, time: 0 });
    expect(xid()).toBe(0.5);
    position.lsn = 1500;
    expect(xid()).toBe(1);
  });
  it('goes by commit time for a --time target, up to the restorable point at most', () => {
    const position = { lsn: 0, time: 15_000 };
    const f = replayFraction({ target: { kind: 'time', micros: 50_000, text: 't' }, point, limitLsn: 2000, xidCommitLsn: undefined }, position, {
      lsn: 0,
      time: 10_000,
    });
    expect(f()).toBe(0.5);
  });
});
