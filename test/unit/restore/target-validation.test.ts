import { describe, expect, it } from 'vitest';
import { CdpError } from '../../../src/errors.js';
import { makeCut, parseTarget, parseTimeMicros, xidMatches } from '../../../src/restore/target.js';

function usage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).exitCode).toBe(2);
    return (err as Error).message;
  }
  throw new Error('expected a usage error');
}

describe('--time refuses dates that do not exist', () => {
  it('2026-02-30 is refused (Date.parse would take it as March 2)', () => {
    expect(usage(() => parseTarget({ time: '2026-02-30T10:00:00Z' }))).toMatch(/day 30 \(2026-02 has 28 days\) does not exist/);
  });

  it('refuses month 13, day 0, hour 24, minute 60, second 60, and a zone beyond 15 hours', () => {
    for (const t of [
      '2026-13-01T00:00:00Z',
      '2026-04-00T00:00:00Z',
      '2026-04-31T00:00:00Z',
      '2026-04-01T24:00:00Z',
      '2026-04-01T10:60:00Z',
      '2026-04-01T10:00:60Z',
      '2026-04-01T10:00:00+16:00',
    ]) {
      expect(usage(() => parseTimeMicros(t))).toMatch(/is not a valid timestamp/);
    }
  });

  it('accepts leap days and the last day of each month', () => {
    expect(parseTimeMicros('2028-02-29T00:00:00Z')).toBe(Date.UTC(2028, 1, 29) * 1000);
    expect(usage(() => parseTimeMicros('2027-02-29T00:00:00Z'))).toMatch(/2027-02 has 28 days/);
    expect(parseTimeMicros('2026-12-31 23:59:59.999999+00')).toBe(Date.UTC(2026, 11, 31, 23, 59, 59) * 1000 + 999999);
    expect(parseTimeMicros('2026-06-30T12:00:00+05:30')).toBe(Date.UTC(2026, 5, 30, 6, 30) * 1000);
  });
});

describe('--xid after 2^32 transactions', () => {
  const epoch1 = 2 ** 32 + 1234; // pg_current_xact_id() in epoch 1; the stream carries xid 1234
  it('a 64-bit target matches the stream 32-bit xid with the same low bits', () => {
    expect(xidMatches(1234, epoch1)).toBe(true);
    expect(xidMatches(1235, epoch1)).toBe(false);
    expect(xidMatches(1234, 1234)).toBe(true);
    const cut = makeCut({ kind: 'xid', xid: epoch1 }, 1e12);
    expect(cut({ commitLsn: 10, commitTime: 0, xid: 1233 })).toBe('apply');
    expect(cut({ commitLsn: 11, commitTime: 0, xid: 1234 })).toBe('apply-and-stop');
  });
});
