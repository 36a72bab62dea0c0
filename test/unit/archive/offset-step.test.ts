import { describe, expect, it } from 'vitest';
import { offsetStep } from '../../../src/archive/lanes.js';

// The archiver's per-record decision: a segment must never span offsets its lane did not receive
// (a segment [C..N, X..] read, in offset order, before the one holding N+1..X-1 would make restore
// drop those as duplicates of nothing: silent loss).
describe('archiver offsetStep', () => {
  it('appends to an empty lane from any offset, and the exact next offset', () => {
    expect(offsetStep(undefined, 0n)).toBe('next');
    expect(offsetStep(undefined, 1234n)).toBe('next');
    expect(offsetStep(10n, 10n)).toBe('next');
  });
  it('skips re-delivered offsets the lane already holds', () => {
    expect(offsetStep(10n, 9n)).toBe('held');
    expect(offsetStep(10n, 0n)).toBe('held');
  });
  it('reports a forward jump (another owner committed past the open records): the open segment is cut, not continued', () => {
    expect(offsetStep(10n, 11n)).toBe('jump');
    expect(offsetStep(10n, 5000n)).toBe('jump');
  });
});
