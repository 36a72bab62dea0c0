import { describe, expect, it } from 'vitest';
import { gapCoveredBy, gapsCrossed, uncoveredGaps, type StoredGap } from '../../../src/archive/chain.js';
import { parseSegmentKey, segmentKey } from '../../../src/archive/layout.js';
import { planRestore } from '../../../src/restore/restore.js';
import type { BaseManifestExt } from '../../../src/base/basebackup.js';
import { IntegrityError } from '../../../src/errors.js';

// The chain of custody's pure rules (src/archive/chain.ts): segment keys with and without a topic
// epoch, when a base covers a gap, and which replays cross one.

const sha = 'a'.repeat(64);

describe('segment keys and topic epochs', () => {
  it('epoch 0 keeps the original key form, so keys of earlier versions parse as epoch 0', () => {
    const legacy = `r/segments/p0001/0000000001000000-${'5'.padStart(20, '0')}-${'9'.padStart(20, '0')}-${sha}.avro`;
    expect(parseSegmentKey(legacy)).toEqual({ partition: 1, epoch: 0, maxLsn: 0x1000000, firstOffset: '5', lastOffset: '9', sha256: sha });
    expect(segmentKey('r', { partition: 1, epoch: 0, maxLsn: 0x1000000, firstOffset: '5', lastOffset: '9', sha256: sha })).toBe(legacy);
  });
  it('a later epoch is in the key and round-trips; keys still sort by LSN first', () => {
    const k = segmentKey('r', { partition: 2, epoch: 3, maxLsn: 0x2000000, firstOffset: '0', lastOffset: '4', sha256: sha });
    expect(k).toBe(`r/segments/p0002/0000000002000000-e000003-${'0'.padStart(20, '0')}-${'4'.padStart(20, '0')}-${sha}.avro`);
    expect(parseSegmentKey(k)).toMatchObject({ partition: 2, epoch: 3, firstOffset: '0', lastOffset: '4' });
  });
});

const gap = (afterLsn: number, untilLsn: number, detectedAtMicros: number, afterTime = afterLsn * 10): StoredGap => ({
  version: 1,
  kind: 'retention',
  generation: 0,
  topicEpoch: 0,
  partition: 0,
  fromOffset: '10',
  toOffset: '19',
  afterLsn,
  afterTime,
  untilLsn,
  detectedAt: new Date(detectedAtMicros / 1000).toISOString(),
  detectedAtMicros,
  detail: 'test',
  key: `r/gaps/${afterLsn}-retention-x.json`,
});

const base = (lsn: number, timeMicros: number): BaseManifestExt =>
  ({
    version: 1,
    database: 'd',
    lsn,
    lsnText: `0/${lsn.toString(16)}`,
    time: new Date(timeMicros / 1000).toISOString(),
    timeMicros,
    key: `b${lsn}`,
    size: 1,
    sha256: sha,
    serverVersion: '15',
    serverVersionNum: 150000,
    pgDumpVersion: '15',
    encryption: null,
  }) as BaseManifestExt;

describe('gaps and bases', () => {
  const g = gap(1000, 2000, 5_000_000);
  it('a base covers a gap only when taken after it by LSN and by time', () => {
    expect(gapCoveredBy(g, base(2001, 5_000_001))).toBe(true);
    expect(gapCoveredBy(g, base(2000, 5_000_001))).toBe(false);
    expect(gapCoveredBy(g, base(3000, 4_000_000))).toBe(false);
    expect(uncoveredGaps([g], [base(500, 1), base(2001, 5_000_001)])).toEqual([]);
    expect(uncoveredGaps([g], [base(500, 1)])).toEqual([g]);
  });
  it('a replay crosses a gap when it starts before it and reaches past afterLsn (or afterTime)', () => {
    expect(gapsCrossed([g], base(500, 1), { lsn: 1000 })).toEqual([]);
    expect(gapsCrossed([g], base(500, 1), { lsn: 1001 })).toEqual([g]);
    expect(gapsCrossed([g], base(500, 1), { time: 10_000 })).toEqual([]);
    expect(gapsCrossed([g], base(500, 1), { time: 10_001 })).toEqual([g]);
    expect(gapsCrossed([g], base(2001, 5_000_001), { lsn: 9999 })).toEqual([]);
  });
  it('planRestore refuses a target across an uncovered gap (exit 3) and uses a base after it when there is one', () => {
    const point = { lsn: 9000, time: 90_000 };
    const early = base(500, 1);
    expect(planRestore({ kind: 'lsn', lsn: 900 }, [early], point, [g]).base).toBe(early);
    const err = (() => {
      try {
        planRestore({ kind: 'latest' }, [early], point, [g]);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as IntegrityError).exitCode).toBe(3);
    expect((err as Error).message).toMatch(/crosses a break in the archive: retention gap partition 0 offsets 10\.\.19/);
    expect((err as Error).message).toContain(g.key);
    const later = base(2001, 5_000_001);
    expect(planRestore({ kind: 'latest' }, [early, later], point, [g]).base).toBe(later);
    // A target between the gap and the later base: no base restores it exactly.
    expect(() => planRestore({ kind: 'lsn', lsn: 1500 }, [early, later], point, [g])).toThrow(IntegrityError);
  });
});
