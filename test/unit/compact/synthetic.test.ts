import { describe, expect, it } from 'vitest';
import { gapCoveredBy } from '../../../src/archive/chain.js';
import { parseBaseKey, syntheticBaseDir, type GapRecord } from '../../../src/archive/layout.js';
import type { BaseManifestExt } from '../../../src/base/basebackup.js';
import { dumpRoles } from '../../../src/compact/compact.js';
import { fingerprintDiff, fingerprintDigest } from '../../../src/compact/fingerprint.js';
import { planRestore } from '../../../src/restore/restore.js';
import { parseTarget } from '../../../src/restore/target.js';
import { formatLsn } from '../../../src/util/lsn.js';

// Synthetic bases (cdp compact): their keys, the gap rule (a synthetic base covers exactly what
// its root source base covers), restore's choice of base, the roles a dump names.

function base(lsn: number, timeMicros: number, synthetic?: { rootLsn: number; rootTime: number }): BaseManifestExt {
  return {
    version: 1,
    database: 'db',
    lsn,
    lsnText: formatLsn(lsn),
    time: new Date(timeMicros / 1000).toISOString(),
    timeMicros,
    key: synthetic ? `${syntheticBaseDir('p/db', lsn, 'abc12')}base.dump` : `p/db/bases/${lsn}/base.dump`,
    size: 1,
    sha256: 'x',
    serverVersion: '15',
    serverVersionNum: 150000,
    pgDumpVersion: 'pg_dump (PostgreSQL) 15.2',
    encryption: null,
    ...(synthetic
      ? {
          synthetic: {
            version: 1,
            fromBase: { lsn: synthetic.rootLsn, lsnText: formatLsn(synthetic.rootLsn), key: 'k', sha256: 'x', synthetic: false },
            rootBase: { lsn: synthetic.rootLsn, lsnText: formatLsn(synthetic.rootLsn), timeMicros: synthetic.rootTime, key: 'k' },
            throughLsn: lsn - 1,
            throughLsnText: formatLsn(lsn - 1),
            segments: [],
            transactions: 1,
            changes: 1,
            fingerprints: {},
            fingerprintDigest: '',
            verified: { restoredFingerprintsMatch: true, readBack: true },
            scratch: 'test',
            createdAt: '',
            seconds: 0,
          },
        }
      : { snapshotXmax: 100 }),
  } as BaseManifestExt;
}

const gap = (afterLsn: number, untilLsn: number, detectedAtMicros: number): GapRecord & { key: string } => ({
  version: 1,
  kind: 'retention',
  generation: 0,
  topicEpoch: 0,
  partition: 0,
  fromOffset: '10',
  toOffset: '20',
  afterLsn,
  afterTime: afterLsn * 10,
  untilLsn,
  detectedAt: '',
  detectedAtMicros,
  detail: 'test',
  key: `gaps/${afterLsn}`,
});

describe('synthetic base keys', () => {
  it('live in a folder of their own per run, parsed back with their LSN', () => {
    const dir = syntheticBaseDir('cdp/db', 0x1234, 'a1b2c3');
    expect(dir).toBe('cdp/db/bases/0000000000001234-synthetic-a1b2c3/');
    expect(parseBaseKey(`${dir}base.dump`)).toEqual({ dir, lsn: 0x1234, synthetic: true, file: 'base.dump' });
    expect(parseBaseKey('cdp/db/bases/0000000000001234/manifest.json')).toMatchObject({ lsn: 0x1234, synthetic: false, file: 'manifest.json' });
    expect(parseBaseKey('cdp/db/segments/p0000/x.avro')).toBeUndefined();
  });
});

describe('a synthetic base never hides a gap', () => {
  it('covers a gap exactly when its root source base does', () => {
    const g = gap(1000, 1100, 5_000);
    // Made after the gap (by LSN and clock) but from a source base before it: not covered.
    expect(gapCoveredBy(g, base(3000, 9_000, { rootLsn: 500, rootTime: 1_000 }))).toBe(false);
    // From a source base that covers it: covered.
    expect(gapCoveredBy(g, base(3000, 9_000, { rootLsn: 2000, rootTime: 6_000 }))).toBe(true);
    expect(gapCoveredBy(g, base(2000, 6_000))).toBe(true);
  });

  it('restore refuses a replay from a synthetic base whose root is before an uncovered gap', () => {
    const bases = [base(500, 1_000), base(3000, 9_000, { rootLsn: 500, rootTime: 1_000 })];
    expect(() => planRestore(parseTarget({ lsn: formatLsn(4000) }), bases, { lsn: 5000, time: 20_000 }, [gap(1000, 1100, 5_000)])).toThrow(/crosses a break/);
  });
});

describe('restore chooses the newest base at or before the target, synthetic or not', () => {
  const bases = [base(500, 1_000), base(3001, 9_000, { rootLsn: 500, rootTime: 1_000 }), base(6001, 15_000, { rootLsn: 500, rootTime: 1_000 })];
  const point = { lsn: 9000, time: 30_000 };
  it('by LSN: the synthetic base at L holds commits < L', () => {
    expect(planRestore(parseTarget({ lsn: formatLsn(2999) }), bases, point).base.lsn).toBe(500);
    expect(planRestore(parseTarget({ lsn: formatLsn(3000) }), bases, point).base.lsn).toBe(3001);
    expect(planRestore(parseTarget({ lsn: formatLsn(7000) }), bases, point).base.lsn).toBe(6001);
    expect(planRestore(parseTarget({ latest: true }), bases, point).base.lsn).toBe(6001);
  });
  it('by time: only when every commit it holds is at or before the target', () => {
    expect(planRestore(parseTarget({ time: new Date(8.999).toISOString() }), bases, point).base.lsn).toBe(500);
    expect(planRestore(parseTarget({ time: new Date(9).toISOString() }), bases, point).base.lsn).toBe(3001);
  });
  it('by xid: a synthetic base has no snapshot xmax, so the xid is looked up from a source base', () => {
    expect(planRestore(parseTarget({ xid: 200 }), bases, point).base.lsn).toBe(500);
  });
});

describe('roles a dump names', () => {
  it('owners from the listing, grantees and default-privilege roles from the script; not PUBLIC or pg_ roles', () => {
    const listing = '215; 1259 16390 TABLE public acct app_owner\n216; 1259 16391 TABLE public ev postgres\n';
    const script = [
      'ALTER TABLE public.acct OWNER TO app_owner;',
      'GRANT SELECT ON TABLE public.acct TO reader;',
      'GRANT ALL ON SCHEMA public TO "Mixed Case";',
      'REVOKE ALL ON TABLE public.ev FROM PUBLIC;',
      'GRANT SELECT ON TABLE public.ev TO pg_read_all_data;',
      'ALTER DEFAULT PRIVILEGES FOR ROLE etl IN SCHEMA public GRANT SELECT ON TABLES TO reader;',
    ].join('\n');
    expect([...dumpRoles(listing, script)].sort()).toEqual(['Mixed Case', 'app_owner', 'etl', 'postgres', 'reader']);
  });
});

describe('fingerprints', () => {
  it('one digest over sorted entries; the differing tables named', () => {
    expect(fingerprintDigest({ 'a.b': '1:x', 'c.d': '2:y' })).toBe(fingerprintDigest({ 'c.d': '2:y', 'a.b': '1:x' }));
    expect(fingerprintDigest({ 'a.b': '1:x' })).not.toBe(fingerprintDigest({ 'a.b': '1:z' }));
    expect(fingerprintDiff({ 'a.b': '1:x', 'c.d': '2:y' }, { 'a.b': '1:x', 'e.f': '0:z' })).toEqual(['c.d: 2:y vs (absent)', 'e.f: (absent) vs 0:z']);
  });
});
