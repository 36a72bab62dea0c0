import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import { beforeEach, describe, expect, it, vi } from 'vitest';

// The archiver's lanes across a rebalance, with kafkajs, S3 and the catalog replaced by fakes: the
// scenario is member A evicted (coordinator outage > session timeout) while holding open records
// C..N of partition p, member B archiving and committing up to X-1, and A rejoining with p again;
// kafkajs then fetches p from X. No stored segment may span the hole N+1..X-1 (restore reads a
// partition's segments in offset order and drops by identity what it has seen: a segment
// [C..N, X..] would hide B's N+1..X-1).

const commits: Array<{ partition: number; offset: string }> = [];

vi.mock('../../../src/archive/upload.js', () => ({ storeSegment: vi.fn(async () => 'created') }));
vi.mock('../../../src/archive/catalog.js', () => ({
  advancePartitionState: vi.fn(async () => ({})),
  readArchiveManifest: vi.fn(async () => undefined),
  readPartitionState: vi.fn(async () => undefined),
  restorablePoint: vi.fn(async () => undefined),
}));
const gaps: Array<{ partition?: number; fromOffset?: string; toOffset?: string }> = [];
vi.mock('../../../src/archive/chain.js', () => ({
  currentGeneration: vi.fn(async () => ({ generation: 0, topicEpoch: 0 })),
  archiveGroupId: () => 'cdp-archive.db',
  describeGap: () => 'gap',
  recordGap: vi.fn(async (_s: unknown, _r: unknown, g: { partition?: number; fromOffset?: string; toOffset?: string }) => {
    gaps.push(g);
    return { ...g, key: 'k' };
  }),
}));
vi.mock('../../../src/s3/client.js', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../../src/s3/client.js')>()),
  createStore: () => ({ log: pino({ level: 'silent' }) }),
}));

type EachBatch = (p: unknown) => Promise<void>;
const fake = { eachBatch: undefined as EachBatch | undefined, events: new EventEmitter(), committed: '-1' };

vi.mock('../../../src/kafka/client.js', () => ({
  createKafka: () => ({
    admin: () => ({
      connect: async () => {},
      disconnect: async () => {},
      fetchTopicMetadata: async () => ({ topics: [{ partitions: [{ partitionId: 0 }] }] }),
      fetchOffsets: async () => [{ topic: 't', partitions: [{ partition: 0, offset: fake.committed }] }],
      fetchTopicOffsets: async () => [{ partition: 0, low: '0', high: '1000' }],
    }),
    consumer: () => ({
      events: { GROUP_JOIN: 'group_join', CRASH: 'crash' },
      on: (ev: string, fn: (e: unknown) => void) => fake.events.on(ev, fn),
      connect: async () => {},
      subscribe: async () => {},
      run: async (o: { eachBatch: EachBatch }) => {
        fake.eachBatch = o.eachBatch;
      },
      pause: () => {},
      resume: () => {},
      disconnect: async () => {},
      commitOffsets: async (offs: Array<{ partition: number; offset: string }>) => {
        commits.push(...offs.map(({ partition, offset }) => ({ partition, offset })));
      },
    }),
  }),
}));

const { startArchiver } = await import('../../../src/archive/archiver.js');
const { loadConfig } = await import('../../../src/config/config.js');
const { emptyEvent, encodeChange } = await import('../../../src/events/change-event.js');

function batch(offsets: number[]) {
  const resolved: string[] = [];
  return {
    batch: {
      topic: 't',
      partition: 0,
      highWatermark: String(offsets.at(-1)! + 1),
      messages: offsets.map((o) => ({ offset: String(o), value: encodeChange(emptyEvent({ op: 'COMMIT', database: 'db', commitLsn: 1000 + o, xid: o, commitTime: o, position: 0, endLsn: 1001 + o })) })),
    },
    resolveOffset: (o: string) => resolved.push(o),
    heartbeat: async () => {},
    isRunning: () => true,
    isStale: () => false,
  };
}

async function archiver() {
  const cfg = loadConfig({ env: { CDP_SOURCE_URL: 'postgres://u@127.0.0.1:1/db', CDP_KAFKA_BROKERS: '127.0.0.1:1', CDP_S3_BUCKET: 'cdp-test' }, flags: { 'metrics.port': 0, 'archive.segmentMaxAgeMs': 3_600_000 } });
  const abort = new AbortController();
  const segs: Array<{ first: bigint; last: bigint; count: number }> = [];
  const { done } = await startArchiver({ cfg, log: pino({ level: 'silent' }), signal: abort.signal }, {
    onSegmentStored: (seg) => segs.push({ first: BigInt(seg.name.firstOffset), last: BigInt(seg.name.lastOffset), count: seg.manifest.count }),
  });
  return { segs, stop: async () => (abort.abort(), done) };
}

const contiguous = (s: { first: bigint; last: bigint; count: number }) => BigInt(s.count) === s.last - s.first + 1n;

describe('archiver lanes across a rebalance', () => {
  beforeEach(() => {
    commits.length = 0;
    gaps.length = 0;
    fake.events.removeAllListeners();
  });

  it('after a rejoin that keeps the partition, open records are not glued to the fetch from the new committed offset', async () => {
    const a = await archiver();
    fake.committed = '5';
    fake.events.emit('group_join', { payload: { memberAssignment: { [`cdp.db`]: [0] } } });
    await fake.eachBatch!(batch([5, 6, 7, 8, 9])); // open C..N = 5..9, not cut (large size and age limits)
    // evicted; B archives 10..19 and commits 20; A rejoins with partition 0 again, kafkajs fetches from 20
    fake.committed = '20';
    fake.events.emit('group_join', { payload: { memberAssignment: { [`cdp.db`]: [0] } } });
    await fake.eachBatch!(batch([20, 21, 22]));
    await a.stop();
    expect(a.segs.length).toBeGreaterThan(0);
    for (const s of a.segs) expect(contiguous(s), `segment ${s.first}..${s.last} holds ${s.count} records`).toBe(true);
    expect(a.segs.map((s) => `${s.first}-${s.last}`)).toEqual(['20-22']);
    expect(gaps).toEqual([]); // the group's committed offset says where the partition continues
  });

  it('a forward jump within one membership cuts the open segment before it', async () => {
    const a = await archiver();
    fake.committed = '5';
    fake.events.emit('group_join', { payload: { memberAssignment: { [`cdp.db`]: [0] } } });
    await fake.eachBatch!(batch([5, 6, 7]));
    await fake.eachBatch!(batch([12, 13]));
    await a.stop();
    for (const s of a.segs) expect(contiguous(s), `segment ${s.first}..${s.last} holds ${s.count} records`).toBe(true);
    expect(a.segs.map((s) => `${s.first}-${s.last}`)).toEqual(['5-7', '12-13']);
    expect(gaps.map((g) => `${g.partition}:${g.fromOffset}-${g.toOffset}`)).toEqual(['0:8-11']);
  });

  it('a first offset past the committed one (records deleted before archiving) is recorded as a gap before anything is stored', async () => {
    const a = await archiver();
    fake.committed = '5';
    fake.events.emit('group_join', { payload: { memberAssignment: { [`cdp.db`]: [0] } } });
    await fake.eachBatch!(batch([40, 41]));
    await a.stop();
    expect(gaps.map((g) => `${g.partition}:${g.fromOffset}-${g.toOffset}`)).toEqual(['0:5-39']);
    expect(a.segs.map((s) => `${s.first}-${s.last}`)).toEqual(['40-41']);
  });
});
