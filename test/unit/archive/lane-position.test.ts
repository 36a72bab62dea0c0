import { describe, expect, it } from 'vitest';
import type { Admin, Consumer } from 'kafkajs';
import { kafkaLaneConsumer } from '../../../src/archive/archiver.js';

// A broker restart can outlast the admin client's own retries while a lane starts (no group
// coordinator yet). kafkajs stops a consumer for good when eachBatch throws an error whose deepest
// cause is not marked retriable (consumer/index.js, onCrash); `cdp run` then exits. The lane-start
// read must fail in a way kafkajs restarts from, and connect again on the next try.

const consumer = { commitOffsets: async () => {}, pause: () => {}, resume: () => {} } as unknown as Pick<Consumer, 'commitOffsets' | 'pause' | 'resume'>;

function deepest(e: Error & { cause?: unknown }): Error & { retriable?: boolean } {
  return e.cause instanceof Error ? deepest(e.cause) : e;
}

describe('lane-start position during a broker restart', () => {
  it('fails retriable for kafkajs (no non-retriable cause), then connects again and reads', async () => {
    let connects = 0;
    let fail = true;
    const coordinatorGone = Object.assign(new Error('Failed to find group coordinator'), { name: 'KafkaJSNonRetriableError', retriable: false });
    const admin = {
      connect: async () => void connects++,
      fetchOffsets: async () => {
        if (fail) throw coordinatorGone;
        return [{ topic: 't', partitions: [{ partition: 0, offset: '41' }] }];
      },
      fetchTopicOffsets: async () => [{ partition: 0, offset: '50', low: '0', high: '50' }],
    } as unknown as Pick<Admin, 'connect' | 'fetchOffsets' | 'fetchTopicOffsets'>;
    const lane = kafkaLaneConsumer(consumer, admin, 't', 'g');
    const err = await lane.position(0).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toMatch(/Failed to find group coordinator/);
    expect(deepest(err!).retriable).toBe(true);
    fail = false;
    await expect(lane.position(0)).resolves.toEqual({ committed: 41n, low: '0', high: '50' });
    expect(connects).toBe(2);
  });
});
