import { Writable } from 'node:stream';
import type { Admin } from 'kafkajs';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { checkArchivePartitions } from '../../../src/capture/archive-check.js';
import { checkRecordSize } from '../../../src/capture/record-size.js';
import { readTopic } from '../../../src/capture/topic-check.js';
import { archiveRoot, loadConfig } from '../../../src/config/config.js';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import { emptyEvent } from '../../../src/format/change-event.js';

// The checks a capture session runs before it streams, each given what it reads (no Kafka, S3 or
// Postgres). They were private methods of the session before, reached only by the integration tests.

function logger() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

function thrown(fn: () => unknown): CdpError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CdpError);
    return err as CdpError;
  }
  throw new Error('expected a CdpError');
}

describe('checkRecordSize', () => {
  const ev = emptyEvent({ op: 'INSERT', database: 'shop', schema: 'public', table: 'docs', xid: 7, commitLsn: 0x1_0000_0010 });

  it('passes records below the limit, and everything when the limit is unknown', () => {
    const value = Buffer.alloc(10_000);
    expect(() => checkRecordSize(ev, Buffer.from('k'), value, 1_000_000, 't')).not.toThrow();
    expect(() => checkRecordSize(ev, Buffer.from('k'), value, null, 't')).not.toThrow();
  });

  it('refuses a record whose batch exceeds max.message.bytes, naming the table, size and limit (not retryable)', () => {
    const e = thrown(() => checkRecordSize(ev, Buffer.from('k'), Buffer.alloc(5_000), 4_096, 'cdp.shop'));
    expect(e.code).toBe(ErrorCodes.KAFKA);
    expect(e.canRetry).toBe(false);
    expect(e.details).toMatchObject({ kafkaError: 'MESSAGE_TOO_LARGE', schema: 'public', table: 'docs', maxMessageBytes: 4_096, commitLsn: '1/10' });
    expect(e.message).toMatch(
      /^a INSERT on table public\.docs \(commit LSN 1\/10, xid 7\) is \d+ bytes as a Kafka record, more than max\.message\.bytes = 4096 of topic cdp\.shop/,
    );
    expect(e.details.bytes as number).toBeGreaterThan(5_000);
  });
});

describe('checkArchivePartitions', () => {
  const base = { signal: new AbortController().signal, topic: 'cdp.shop' };
  // One configuration per case: archive.json's partition count is remembered per configuration.
  const cfg = () => loadConfig({ env: { CDP_SOURCE_URL: 'postgres://u@h:5432/shop', CDP_S3_BUCKET: 'cdp-archive' } });

  it('accepts the count archive.json records, and remembers it (no second read)', async () => {
    const c = cfg();
    const roots: string[] = [];
    const readManifest = (root: string) => {
      roots.push(root);
      return Promise.resolve({ partitions: 3 });
    };
    await checkArchivePartitions({ ...base, cfg: c, log: logger().log, partitions: 3, readManifest });
    await checkArchivePartitions({ ...base, cfg: c, log: logger().log, partitions: 3, readManifest });
    expect(roots).toEqual([archiveRoot(c)]);
  });

  it('refuses a topic with another partition count (exit 2, before anything is produced)', async () => {
    const err = await checkArchivePartitions({
      ...base,
      cfg: cfg(),
      log: logger().log,
      partitions: 4,
      readManifest: () => Promise.resolve({ partitions: 3 }),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).code).toBe(ErrorCodes.SOURCE_NOT_READY);
    expect((err as CdpError).details).toEqual({ topic: 'cdp.shop', topicPartitions: 4, archivePartitions: 3 });
  });

  it('only warns when there is no archive.json, S3 fails or does not answer in time', async () => {
    const cases: Array<[() => Promise<{ partitions: number } | undefined>, RegExp]> = [
      [() => Promise.resolve(undefined), /^no archive\.json/],
      [() => Promise.reject(new Error('connect ECONNREFUSED')), /^cannot read archive\.json/],
      [() => new Promise(() => {}), /^cannot read archive\.json/],
    ];
    for (const [readManifest, msg] of cases) {
      const { log, lines } = logger();
      await checkArchivePartitions({ ...base, cfg: cfg(), log, partitions: 4, readManifest, timeoutMs: 50 });
      expect(lines.map((l) => l.msg)).toEqual([expect.stringMatching(msg)]);
    }
  });
});

describe('readTopic', () => {
  function admin(over: Partial<Record<'connect' | 'fetchTopicMetadata' | 'describeConfigs', () => Promise<unknown>>>) {
    const calls: string[] = [];
    const a = {
      connect: over.connect ?? (() => Promise.resolve()),
      disconnect: () => {
        calls.push('disconnect');
        return Promise.resolve();
      },
      fetchTopicMetadata: over.fetchTopicMetadata ?? (() => Promise.resolve({ topics: [{ partitions: [{}, {}] }] })),
      describeConfigs:
        over.describeConfigs ?? (() => Promise.resolve({ resources: [{ configEntries: [{ configName: 'max.message.bytes', configValue: '67108864' }] }] })),
    };
    return { admin: a as unknown as Admin, calls };
  }

  it('reads the partition count and max.message.bytes, then disconnects', async () => {
    const { admin: a, calls } = admin({});
    await expect(readTopic(a, 'cdp.shop', logger().log)).resolves.toEqual({ partitions: 2, maxMessageBytes: 67108864 });
    expect(calls).toEqual(['disconnect']);
  });

  it('goes on without max.message.bytes when it cannot be read', async () => {
    const { log, lines } = logger();
    const { admin: a } = admin({ describeConfigs: () => Promise.reject(new Error('TOPIC_AUTHORIZATION_FAILED')) });
    await expect(readTopic(a, 'cdp.shop', log)).resolves.toEqual({ partitions: 2, maxMessageBytes: null });
    expect(lines.map((l) => l.msg)).toEqual([expect.stringMatching(/cannot read the topic max\.message\.bytes/)]);
  });

  it('says a missing topic needs setup (exit 2) and an unreachable Kafka is retryable', async () => {
    const missing = admin({ fetchTopicMetadata: () => Promise.reject(new Error('This server does not host this topic-partition')) });
    const e1 = (await readTopic(missing.admin, 'cdp.shop', logger().log).catch((e: unknown) => e)) as CdpError;
    expect([e1.code, e1.message]).toEqual([ErrorCodes.SOURCE_NOT_READY, 'Kafka topic cdp.shop does not exist: run `cdp setup` first']);
    expect(missing.calls).toEqual(['disconnect']);
    const down = admin({ connect: () => Promise.reject(new Error('Connection timeout')) });
    const e2 = (await readTopic(down.admin, 'cdp.shop', logger().log).catch((e: unknown) => e)) as CdpError;
    expect([e2.code, e2.canRetry, e2.message]).toEqual([ErrorCodes.KAFKA, true, 'Kafka is not reachable: Connection timeout']);
  });
});
