import { describe, expect, it } from 'vitest';
import type { StoredGap } from '../../../src/archive/chain.js';
import type { BaseManifestExt } from '../../../src/base/basebackup.js';
import { CdpError, ErrorCodes, IntegrityError } from '../../../src/errors.js';
import { baseForCommit, planRestore, xidNotFound } from '../../../src/restore/plan.js';

// restore's plan step (src/restore/plan.ts) on plain lists of bases and gaps: which base an --xid
// target uses once its commit LSN is known (before the split, only reachable through a whole
// restore against S3), and the refusal an unknown xid gets.

const base = (lsn: number, timeMicros: number, snapshotXmax?: number): BaseManifestExt =>
  ({
    version: 1,
    database: 'd',
    lsn,
    lsnText: `0/${lsn.toString(16).toUpperCase()}`,
    time: new Date(timeMicros / 1000).toISOString(),
    timeMicros,
    key: `b${lsn}`,
    size: 1,
    sha256: 'a'.repeat(64),
    serverVersion: '15',
    serverVersionNum: 150000,
    pgDumpVersion: '15',
    encryption: null,
    snapshotXmax,
  }) as BaseManifestExt;

// The replication slot was recreated after 0/2500: what committed until 0/2600 may be missing.
const slotBreak: StoredGap = {
  version: 1,
  kind: 'slot-recreated',
  generation: 1,
  topicEpoch: 0,
  afterLsn: 0x2500,
  afterTime: 2_500_000,
  untilLsn: 0x2600,
  detectedAt: new Date(5000).toISOString(),
  detectedAtMicros: 5_000_000,
  detail: 'slot cdp_test recreated',
  key: 'r/gaps/0000000000002500-slot-recreated.json',
};

const point = { lsn: 0x9000, time: 90_000_000 };

describe('restore plan: an --xid target', () => {
  const early = base(0x100, 1_000_000, 500);
  const middle = base(0x2000, 2_000_000, 900);
  const late = base(0x5000, 6_000_000, 1200);

  it('first plans from the newest base whose snapshot had not yet assigned the xid, up to the restorable point', () => {
    expect(planRestore({ kind: 'xid', xid: 1000 }, [early, middle, late], point)).toEqual({ base: middle, limitLsn: point.lsn });
    // Without snapshotXmax nothing is known: the earliest base is the only safe choice.
    expect(planRestore({ kind: 'xid', xid: 1000 }, [base(0x100, 1), base(0x2000, 2)], point).base.lsn).toBe(0x100);
  });

  it('once its commit LSN is found, uses the newest base before that commit', () => {
    expect(baseForCommit([early, middle, late], early, 0x6000, [])).toBe(late);
    expect(baseForCommit([early, middle, late], early, 0x3000, [])).toBe(middle);
    // A base contains the commits below its LSN: a commit at base.lsn - 1 is in it.
    expect(baseForCommit([early, middle, late], early, 0x4fff, [])).toBe(late);
    // No base before the commit: the planned one stays.
    expect(baseForCommit([middle, late], middle, 0x50, [])).toBe(middle);
  });

  it('refuses the commit when the replay from the chosen base to it crosses a recorded gap', () => {
    expect(() => baseForCommit([early, middle, late], early, 0x3000, [slotBreak])).toThrow(/crosses a break in the archive: slot-recreated/);
    expect(() => baseForCommit([early, middle, late], early, 0x3000, [slotBreak])).toThrow(IntegrityError);
    // A newer base taken after the gap (by LSN and by time) covers it.
    expect(baseForCommit([early, middle, late], early, 0x6000, [slotBreak])).toBe(late);
  });

  it('an xid that is not archived is out of range, with the available range and nothing written', () => {
    const err = xidNotFound(4242, middle, [early, middle, late], point);
    expect(err).toBeInstanceOf(CdpError);
    expect(err.code).toBe(ErrorCodes.TARGET_OUT_OF_RANGE);
    expect(err.exitCode).toBe(2);
    expect(err.message).toBe(
      '--xid 4242 is not among the archived transactions after base 0/2000 up to the restorable point (a transaction that changed nothing has no record); ' +
        `available range: 0/100 (${early.time}) .. 0/9000 (1970-01-01T00:01:30.000000Z). Nothing was written.`,
    );
    expect(err.details).toEqual({ earliest: { lsn: '0/100', time: early.time }, latest: { lsn: '0/9000', time: '1970-01-01T00:01:30.000000Z' } });
  });
});
