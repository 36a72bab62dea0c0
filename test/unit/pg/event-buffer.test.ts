import { describe, expect, it } from 'vitest';
import { EventBuffer } from '../../../src/pg/event-buffer.js';

// The replication stream's back-pressure (G4) without a socket: the flow control is a recorder.
// Before event-buffer.ts it lived inside ReplicationStream and was only reached through a real
// walsender (test/integration/pg/replication-stream.test.ts).

function recorder() {
  const calls: string[] = [];
  return { calls, flow: { pause: () => calls.push('pause'), resume: () => calls.push('resume') } };
}

describe('EventBuffer', () => {
  it('pauses at highWaterMark events and resumes once at or below half', () => {
    const { calls, flow } = recorder();
    const b = new EventBuffer<number>(4, 1_000_000, flow);
    for (let i = 0; i < 3; i++) b.push(i, 1);
    expect(b.paused).toBe(false);
    b.push(3, 1);
    expect([b.paused, b.length, calls]).toEqual([true, 4, ['pause']]);
    b.push(4, 1); // what the socket chunk still holds after the pause is queued, not paused again
    expect(calls).toEqual(['pause']);
    expect([b.take(), b.take()]).toEqual([0, 1]);
    expect(b.paused).toBe(true); // 3 left, low water mark is 2
    expect(b.take()).toBe(2);
    expect([b.paused, b.length, calls]).toEqual([false, 2, ['pause', 'resume']]);
    expect([b.take(), b.take(), b.length, b.bytes]).toEqual([3, 4, 0, 0]);
  });

  it('pauses at highWaterBytes whatever the count, and resumes only when both are at or below half', () => {
    const { calls, flow } = recorder();
    const b = new EventBuffer<string>(100, 1000, flow);
    b.push('small', 10);
    b.push('large', 990);
    expect([b.paused, b.bytes, calls]).toEqual([true, 1000, ['pause']]);
    expect(b.take()).toBe('small');
    expect([b.paused, b.bytes]).toEqual([true, 990]); // one event, but 990 bytes > 500
    expect(b.take()).toBe('large');
    expect([b.paused, b.bytes, calls]).toEqual([false, 0, ['pause', 'resume']]);
  });

  it('hands an event straight to a waiting consumer without queueing it', async () => {
    const { calls, flow } = recorder();
    const b = new EventBuffer<number>(1, 1, flow);
    const next = b.wait();
    expect(b.waiting).toBe(true);
    b.push(7, 100);
    await expect(next).resolves.toEqual({ value: 7, done: false });
    expect([b.waiting, b.length, b.bytes, calls]).toEqual([false, 0, 0, []]);
  });

  it('settles a waiting consumer as done, or with the failure', async () => {
    const b = new EventBuffer<number>(10, 10, recorder().flow);
    const done = b.wait();
    b.wake(null);
    await expect(done).resolves.toEqual({ value: undefined, done: true });
    const failed = b.wait();
    b.wake(new Error('gone'));
    await expect(failed).rejects.toThrow('gone');
    b.wake(new Error('nobody waits')); // no-op
    expect(b.waiting).toBe(false);
  });

  it('keeps order across compaction of a long queue', () => {
    const b = new EventBuffer<number>(100_000, 1e12, recorder().flow);
    const n = 10_000;
    for (let i = 0; i < n; i++) b.push(i, 3);
    const out: number[] = [];
    for (let i = 0; i < n / 2 + 10; i++) out.push(b.take());
    for (let i = n; i < n + 100; i++) b.push(i, 3);
    while (b.length > 0) out.push(b.take());
    expect(out).toEqual(Array.from({ length: n + 100 }, (_, i) => i));
    expect(b.bytes).toBe(0);
  });

  it('clear() drops the events and unpause() resumes a paused feed once', () => {
    const { calls, flow } = recorder();
    const b = new EventBuffer<number>(2, 100, flow);
    b.push(1, 1);
    b.push(2, 1);
    b.clear();
    expect([b.length, b.bytes, b.paused]).toEqual([0, 0, true]);
    b.unpause();
    b.unpause();
    expect([b.paused, calls]).toEqual([false, ['pause', 'resume']]);
  });
});
