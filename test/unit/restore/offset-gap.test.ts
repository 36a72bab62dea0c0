import { describe, expect, it } from 'vitest';
import { findOffsetGap } from '../../../src/restore/archive-source.js';

const seg = (first: number, last: number) => ({ firstOffset: String(first), lastOffset: String(last), key: `k${first}-${last}` });

describe('findOffsetGap', () => {
  it('accepts contiguous and overlapping (duplicate) segments', () => {
    expect(findOffsetGap([seg(0, 9), seg(10, 19), seg(20, 29)], 0n, 29n)).toBeUndefined();
    expect(findOffsetGap([seg(0, 9), seg(5, 14), seg(8, 12), seg(15, 29)], 0n, 29n)).toBeUndefined();
    expect(findOffsetGap([seg(0, 29), seg(3, 4), seg(10, 20)], 0n, 29n)).toBeUndefined();
  });
  it('names the first missing range and its neighbours', () => {
    expect(findOffsetGap([seg(0, 9), seg(20, 29)], 0n, 29n)).toEqual({ from: 10n, to: 19n, before: 'k0-9', after: 'k20-29' });
    expect(findOffsetGap([seg(0, 9), seg(5, 12), seg(14, 29)], 0n, 29n)).toEqual({ from: 13n, to: 13n, before: 'k5-12', after: 'k14-29' });
  });
  it('only looks inside [lo, hi]', () => {
    expect(findOffsetGap([seg(0, 9), seg(20, 29), seg(30, 39)], 20n, 39n)).toBeUndefined();
    expect(findOffsetGap([seg(0, 9), seg(20, 29)], 0n, 35n)).toEqual({ from: 10n, to: 19n, before: 'k0-9', after: 'k20-29' });
    expect(findOffsetGap([seg(0, 9)], 0n, 15n)).toEqual({ from: 10n, to: 15n, before: 'k0-9' });
  });
});
