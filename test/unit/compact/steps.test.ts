import { describe, expect, it } from 'vitest';
import type { ListedSegment } from '../../../src/archive/catalog.js';
import { keyringOf, parseMasterKey } from '../../../src/archive/crypto.js';
import type { BaseManifestExt } from '../../../src/base/basebackup.js';
import { staleDebris } from '../../../src/compact/debris.js';
import { fingerprintDigest } from '../../../src/compact/fingerprint.js';
import { compactionPlan, compactionStart, segmentsUsed } from '../../../src/compact/plan.js';
import { replayedBy, restoreWithRoles } from '../../../src/compact/replay.js';
import { syntheticManifest } from '../../../src/compact/synthetic.js';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import { createLogger } from '../../../src/util/log.js';
import { formatLsn } from '../../../src/util/lsn.js';

// The steps of cdp compact that decide without a server (compact.ts runs them against S3 and a
// scratch PostgreSQL; test/integration/compact covers that): the choice of the point, the segments
// the replay needed, the debris old enough to delete, the restore loop that creates missing roles,
// and the synthetic base's manifest.

const log = createLogger('silent');

function base(lsn: number, opts: { synthetic?: boolean; timeMicros?: number } = {}): BaseManifestExt {
  return {
    version: 1,
    database: 'db',
    lsn,
    lsnText: formatLsn(lsn),
    time: '',
    timeMicros: opts.timeMicros ?? 1_000,
    key: `p/db/bases/${lsn}/base.dump`,
    size: 1,
    sha256: 'sha',
    serverVersion: '15.4',
    serverVersionNum: 150004,
    pgDumpVersion: 'pg_dump (PostgreSQL) 15.4',
    encryption: null,
    ...(opts.synthetic ? { synthetic: { rootBase: { lsn: 7, lsnText: formatLsn(7), timeMicros: 5, key: 'root' } } as BaseManifestExt['synthetic'] } : {}),
  };
}

function seg(partition: number, maxLsn: number, size = 10): ListedSegment {
  return { partition, epoch: 0, maxLsn, firstOffset: '0', lastOffset: '0', sha256: 'x', key: `s${partition}-${maxLsn}`, size };
}

describe('compact: choosing the point', () => {
  it('refuses without a base or a restorable point', () => {
    expect(() => compactionStart([], { lsn: 5 })).toThrow(/needs a base to start from/);
    expect(() => compactionStart([base(10)], undefined)).toThrow(/no restorable point yet/);
  });

  it('skips when nothing follows the newest base or a base is at the point already', () => {
    expect(compactionStart([base(10)], { lsn: 9 }).skip).toBe('nothing archived after the newest base');
    expect(compactionStart([base(100), base(10)], { lsn: 99 }).skip).toBe('a base at the restorable point exists already');
    expect(compactionStart([base(100), base(200)], { lsn: 199 }).skip).toBe('nothing archived after the newest base');
    expect(compactionStart([base(10), base(50)], { lsn: 60 })).toEqual({ newest: base(50), throughLsn: 60 });
  });

  it('skips below compact.minSegmentBytes, else plans from the newest base and its root', () => {
    const newest = base(50);
    expect(compactionPlan(newest, 60, [[seg(0, 55, 10)], []], 11)).toMatchObject({
      skip: 'only 10 bytes of segments follow the newest base (compact.minSegmentBytes 11)',
    });
    const plan = compactionPlan(newest, 60, [[seg(0, 55, 10)], [seg(1, 70, 5)]], 15);
    expect(plan).toMatchObject({ segBytes: 15, major: 15, rootBase: { lsn: 50, key: newest.key, timeMicros: 1_000 } });
    expect(compactionPlan(base(50, { synthetic: true }), 60, [[seg(0, 55)]], 0)).toMatchObject({ rootBase: { lsn: 7, key: 'root' } });
  });

  it('names the segments each partition needed: up to the first reaching the point', () => {
    expect(segmentsUsed([[seg(0, 55), seg(0, 60), seg(0, 70)], [seg(1, 58)], []], 60)).toEqual([
      { partition: 0, count: 2, first: 's0-55', last: 's0-60' },
      { partition: 1, count: 1, first: 's1-58', last: 's1-58' },
      { partition: 2, count: 0, first: null, last: null },
    ]);
  });
});

describe('compact: debris of killed compactions', () => {
  it('is deleted only once the grace period passed since its newest object', () => {
    const d = [
      { dir: 'a/', keys: ['a/base.dump'], newest: 1_000 },
      { dir: 'b/', keys: ['b/base.dump'], newest: 9_000 },
    ];
    expect(staleDebris(d, 5_000, 10_000).map((x) => x.dir)).toEqual(['a/']);
    expect(staleDebris(d, 1_000, 10_000).map((x) => x.dir)).toEqual(['a/', 'b/']);
  });
});

describe('compact: the restore into the scratch database', () => {
  const roleError = (role: string) => new CdpError(ErrorCodes.UNSUPPORTED, `role ${role} missing`, { details: { role } });

  it('creates each role restore stops on, then restores again into a fresh database', async () => {
    const calls: string[] = [];
    const errors = [roleError('app'), roleError('ops')];
    const report = await restoreWithRoles({
      restore: async () => {
        calls.push('restore');
        const e = errors.shift();
        if (e) throw e;
        return { transactions: 3 };
      },
      createRole: async (r) => void calls.push(`role ${r}`),
      freshDatabase: async () => void calls.push('fresh'),
      log,
    });
    expect(report).toEqual({ transactions: 3 });
    expect(calls).toEqual(['restore', 'role app', 'fresh', 'restore', 'role ops', 'fresh', 'restore']);
  });

  it('never replays legacy DDL, and passes other errors through', async () => {
    const legacy = new CdpError(ErrorCodes.UNSUPPORTED, 'legacy', { details: { legacyDdl: true } });
    const fail = (err: Error) => restoreWithRoles({ restore: () => Promise.reject(err), createRole: async () => {}, freshDatabase: async () => {}, log });
    await expect(fail(legacy)).rejects.toThrow(/cdp compact does not replay DDL captured by an earlier version.*The restore said: legacy/);
    const other = new CdpError(ErrorCodes.PG_ERROR, 'boom');
    await expect(fail(other)).rejects.toBe(other);
  });

  it('gives up after 50 roles', async () => {
    let n = 0;
    const p = restoreWithRoles({ restore: () => Promise.reject(roleError(`r${n++}`)), createRole: async () => {}, freshDatabase: async () => {}, log });
    await expect(p).rejects.toThrow(/role r50 missing/);
  });

  it("reads the counts of restore's report, from the newest base only", () => {
    const newest = base(50, { timeMicros: 2_000 });
    expect(replayedBy({ base: { lsn: newest.lsnText }, transactions: 4, changes: 9, maxCommitTimeMicros: 1_500 }, newest)).toEqual({
      transactions: 4,
      changes: 9,
      maxCommit: 2_000,
    });
    expect(replayedBy({ base: { lsn: newest.lsnText }, maxCommitTimeMicros: 3_000 }, newest)).toEqual({ transactions: 0, changes: 0, maxCommit: 3_000 });
    expect(() => replayedBy({ base: { lsn: formatLsn(10) } }, newest)).toThrow(/restore started from base .* expected the newest base/);
  });
});

describe('compact: the synthetic manifest', () => {
  it('is at the point + 1, timed by the highest commit, sealed when a key is configured', () => {
    const newest = base(50);
    const plan = compactionPlan(newest, 60, [[seg(0, 55), seg(0, 65)]], 0);
    if ('skip' in plan) throw new Error('planned');
    const keyring = keyringOf(parseMasterKey('11'.repeat(32), 'test'), { archive: 'p/db' });
    const fingerprints = { 'public.t': '3:abc' };
    const input = {
      database: 'db',
      plan,
      replayed: { transactions: 2, changes: 5, maxCommit: 1_700_000_000_000_000 },
      fingerprints,
      key: 'p/db/bases/x/base.dump',
      size: 123,
      sha256: 'digest',
      pgDumpVersion: 'pg_dump (PostgreSQL) 15.4',
      scratch: 'embedded 15',
    };
    const { manifest, info } = syntheticManifest({ ...input, keyring });
    expect(manifest).toMatchObject({
      lsn: 61,
      lsnText: formatLsn(61),
      timeMicros: 1_700_000_000_000_000,
      time: '2023-11-14T22:13:20.000000Z',
      key: input.key,
      size: 123,
      sha256: 'digest',
      serverVersionNum: 150004,
      encryption: { keyId: keyring.current.id, envelope: 2 },
    });
    expect(manifest.synthetic).toBe(info);
    expect(info).toMatchObject({
      fromBase: { lsn: 50, key: newest.key, synthetic: false },
      throughLsn: 60,
      segments: [{ partition: 0, count: 2, first: 's0-55', last: 's0-65' }],
      fingerprintDigest: fingerprintDigest(fingerprints),
      scratch: 'embedded 15',
      seconds: 0,
    });
    expect(syntheticManifest({ ...input, keyring: undefined }).manifest.encryption).toBeNull();
  });
});
