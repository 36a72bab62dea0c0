import { describe, expect, it } from 'vitest';
import { AckTracker } from '../../../src/capture/ack-tracker.js';

const tx = (n: number) => ({ commitLsn: n * 100, endLsn: n * 100 + 8, commitTime: n });

describe('AckTracker', () => {
  it('starts at the slot position and never moves back', () => {
    const t = new AckTracker(5_000);
    expect(t.confirmed).toBe(5_000);
    t.produce();
    t.commit(tx(1)); // endLsn 108 < 5000: a replayed old transaction
    t.ack(1);
    expect(t.confirmed).toBe(5_000);
  });

  it('confirms a transaction only once every record of it is acknowledged', () => {
    const t = new AckTracker(0);
    const a = t.produce();
    const b = t.produce();
    t.produce(); // the COMMIT marker
    expect(t.commit(tx(1))).toBe(false);
    expect(t.confirmed).toBe(0);
    t.ack(a);
    t.ack(b);
    expect(t.confirmed).toBe(0);
    expect(t.ack(3)).toBe(true);
    expect(t.confirmed).toBe(108);
    expect(t.lastAcked).toEqual(tx(1));
    expect(t.idle()).toBe(true);
  });

  it('confirms in commit order: a later transaction waits for an earlier one', () => {
    const t = new AckTracker(0);
    t.produce();
    t.produce();
    t.commit(tx(1)); // records 1..2
    t.produce();
    t.commit(tx(2)); // record 3
    t.ack(2);
    expect(t.confirmed).toBe(108);
    expect(t.pendingCount).toBe(1);
    t.ack(3);
    expect(t.confirmed).toBe(208);
    expect(t.lastAcked?.commitLsn).toBe(200);
  });

  it('a transaction without records (heartbeat) is confirmed once everything before it is', () => {
    const t = new AckTracker(0);
    t.produce();
    t.commit(tx(1));
    t.commit(tx(2)); // heartbeat: no records, but record 1 precedes it
    expect(t.confirmed).toBe(0);
    t.ack(1);
    expect(t.confirmed).toBe(208);
    // With nothing in flight, a heartbeat is confirmed at once.
    expect(t.commit(tx(3))).toBe(true);
    expect(t.confirmed).toBe(308);
    expect(t.lastAcked?.commitTime).toBe(3);
  });

  it('confirms a keepalive position only when idle', () => {
    const t = new AckTracker(10);
    expect(t.confirmIdle(50)).toBe(true);
    expect(t.confirmed).toBe(50);
    expect(t.confirmIdle(40)).toBe(false);
    expect(t.confirmed).toBe(50);
    t.produce();
    expect(t.idle()).toBe(false);
    expect(() => t.confirmIdle(60)).toThrow(/in flight/);
  });

  it('refuses an acknowledgement of something never produced', () => {
    const t = new AckTracker(0);
    expect(() => t.ack(1)).toThrow(/never produced/);
  });

  it('keeps memory flat over many transactions', () => {
    const t = new AckTracker(0);
    for (let i = 1; i <= 100_000; i++) {
      const s = t.produce();
      t.commit(tx(i));
      t.ack(s);
    }
    expect(t.confirmed).toBe(100_000 * 100 + 8);
    expect(t.pendingCount).toBe(0);
    expect((t as unknown as { pending: unknown[] }).pending.length).toBeLessThan(2_100);
  });
});
