import { describe, expect, it } from 'vitest';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import { AckTracker } from '../../../src/capture/ack-tracker.js';
import type { OutRecord } from '../../../src/kafka/producer.js';
import { ProducePipeline } from '../../../src/capture/pipeline.js';

// The pipeline's batching by bytes, with a send that resolves when the test says so.

function pipeline(maxBytes: number, fail?: Error) {
  const sent: OutRecord[][] = [];
  const pending: (() => void)[] = [];
  const errors: CdpError[] = [];
  const p = new ProducePipeline({
    send: (records) => {
      sent.push(records);
      if (fail) return Promise.reject(fail);
      return new Promise<void>((resolve) => pending.push(resolve));
    },
    topic: 't',
    tracker: new AckTracker(0),
    maxRecords: 1_000,
    maxBytes,
    maxAgeMs: 60_000,
    onAcked: () => {},
    onError: (e) => errors.push(e),
  });
  return { p, sent, pending, errors };
}

const rec = (bytes: number) => [Buffer.from('k'), Buffer.alloc(bytes - 1)] as const;

describe('ProducePipeline batch bytes', () => {
  it('sends a record larger than maxBytes alone, as a batch of one', async () => {
    const { p, sent, pending } = pipeline(1_000);
    p.add(...rec(5_000), true);
    expect(sent.map((b) => b.length)).toEqual([1]);
    pending.shift()!();
    await p.flush();
    expect(p.busy).toBe(false);
  });

  it('does not let a large record join a batch it would take past maxBytes', async () => {
    const { p, sent, pending } = pipeline(1_000);
    p.add(...rec(100), true); // nothing in flight: it waits for the linger
    expect(sent).toHaveLength(0);
    expect(p.fits(100)).toBe(true);
    expect(p.fits(950)).toBe(false);
    const room = p.room(950);
    expect(sent.map((b) => b.length)).toEqual([1]); // the small batch went first
    await room;
    expect(p.fits(950)).toBe(true);
    p.add(...rec(950), true);
    pending.shift()!();
    await new Promise((r) => setImmediate(r));
    expect(sent.map((b) => b.length)).toEqual([1, 1]);
    pending.shift()!();
    await p.flush();
  });

  it('makes MESSAGE_TOO_LARGE non-retryable, other Kafka errors retryable', async () => {
    const tooLarge = new CdpError(ErrorCodes.KAFKA, 'refused', { canRetry: false, details: { kafkaError: 'MESSAGE_TOO_LARGE' } });
    for (const [raw, retry] of [
      [tooLarge, false],
      [Object.assign(new Error('too big'), { type: 'MESSAGE_TOO_LARGE', retriable: false }), false],
      [Object.assign(new Error('not leader'), { type: 'NOT_LEADER_FOR_PARTITION', retriable: true }), true],
    ] as const) {
      const { p, errors } = pipeline(10, raw);
      p.add(...rec(20), true);
      await expect(p.flush()).rejects.toBeInstanceOf(CdpError);
      expect(errors).toHaveLength(1);
      expect(errors[0]!.canRetry).toBe(retry);
      expect(errors[0]!.details.kafkaError === 'MESSAGE_TOO_LARGE').toBe(!retry);
    }
  });
});
