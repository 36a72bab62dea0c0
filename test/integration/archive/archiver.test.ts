import { afterAll, describe, expect, it } from 'vitest';
import { fetchSegment, readSegment } from '../../../src/archive/segment.js';
import { listSegments, readPartitionStates, restorablePoint } from '../../../src/archive/catalog.js';
import { keyringOf, parseMasterKey } from '../../../src/archive/crypto.js';
import { startArchiver } from '../../../src/archive/archiver.js';
import { MULTIPART_THRESHOLD, storeSegment } from '../../../src/archive/upload.js';
import { registry } from '../../../src/util/metrics.js';
import { randomBytes } from 'node:crypto';
import { parseSegmentKey } from '../../../src/archive/layout.js';
import { archiveRoot } from '../../../src/config/config.js';
import { CdpError, IntegrityError } from '../../../src/errors.js';
import { getObject, putOnce, sha256 } from '../../../src/s3/client.js';
import type { ChangeEvent } from '../../../src/format/change-event.js';
import {
  committedOffsets,
  createTopic,
  deleteTopic,
  endOffsets,
  membersWithPartitions,
  FakeCapture,
  kafkaClient,
  rand,
  readArchiveWithAvsc,
  silentLog,
  sortedById,
  spawnArchiver,
  startFaultyProxy,
  testConfig,
  testStore,
  uniqueChanges,
  waitFor,
  writeArchiveManifest,
} from './helpers.js';

// The archiver on the real stack (Kafka, S3 server), driven by a producer that behaves like capture.
// Every test has its own topic, consumer group and S3 prefix. The archive is read back with avsc's
// own container decoder, and its deduplicated union must equal what was produced, exactly.

const PARTITIONS = 4;
const kafka = kafkaClient();
const topics: string[] = [];

afterAll(async () => {
  for (const t of topics) await deleteTopic(kafka, t);
});

async function fixture(extra: Record<string, unknown> = {}) {
  const id = rand();
  const topic = `it-archive-${id}`;
  topics.push(topic);
  await createTopic(kafka, topic, PARTITIONS);
  const cfg = testConfig({
    'kafka.topic': topic,
    's3.prefix': `it-archive/${id}`,
    'archive.groupId': `it-archive-${id}`,
    'archive.segmentMaxAgeMs': 500,
    ...extra,
  });
  const store = testStore(cfg);
  const root = archiveRoot(cfg);
  await writeArchiveManifest(store, root, topic, PARTITIONS);
  const capture = new FakeCapture(kafka, topic, PARTITIONS);
  await capture.connect();
  const env = {
    CDP_TOPIC: topic,
    CDP_S3_PREFIX: `it-archive/${id}`,
    CDP_ARCHIVE_GROUP_ID: `it-archive-${id}`,
    CDP_SEGMENT_MAX_AGE_MS: '500',
  };
  return { id, topic, cfg, store, root, capture, env, groupId: `it-archive-${id}` };
}

async function pointReaches(store: ReturnType<typeof testStore>, root: string, lsn: number) {
  return waitFor(`restorable point >= ${lsn.toString(16)}`, async () => {
    const p = await restorablePoint(store, root);
    return p && p.lsn >= lsn ? p : undefined;
  });
}

function expectExactlyOnce(archived: ChangeEvent[], produced: ChangeEvent[]) {
  const got = uniqueChanges(archived);
  const want = sortedById(produced);
  expect(got.length).toBe(want.length);
  expect(got).toEqual(want);
}

describe('cdp archive', () => {
  it('archives every change exactly once (after dedup), cuts by age and size, commits offsets after upload, reports the restorable point', async () => {
    // Small segmentMaxBytes so that size cuts happen too.
    const f = await fixture({ 'archive.segmentMaxBytes': 64 * 1024 });
    const controller = new AbortController();
    const { done } = await startArchiver({ cfg: f.cfg, log: silentLog, signal: controller.signal }, { clientSuffix: f.id });
    try {
      for (let round = 0; round < 5; round++) await f.capture.transactions(300, 6, 60);
      const point = await pointReaches(f.store, f.root, f.capture.lastWatermark);
      expect(point.lsn).toBe(f.capture.lastWatermark);
      expect(point.partitions).toHaveLength(PARTITIONS);
    } finally {
      controller.abort();
      await done;
      await f.capture.disconnect();
    }
    const archive = await readArchiveWithAvsc(f.store, f.root);
    expectExactlyOnce(archive.events, f.capture.produced);
    // Size cuts: far more segments than partitions x age cuts could make from 5 bursts.
    expect(archive.segments).toBeGreaterThan(PARTITIONS * 2);
    // After a clean stop every record is stored and committed.
    const [committed, end] = await Promise.all([committedOffsets(kafka, f.groupId, f.topic), endOffsets(kafka, f.topic)]);
    expect(committed).toEqual(end);
    // Catalog listing is in offset order and contiguous per partition.
    for (let p = 0; p < PARTITIONS; p++) {
      let next = 0n;
      for await (const s of listSegments(f.store, f.root, p, 0)) {
        expect(BigInt(s.firstOffset)).toBeLessThanOrEqual(next);
        next = BigInt(s.lastOffset) + 1n;
      }
      expect(next).toBe(end.get(p));
    }
    const states = await readPartitionStates(f.store, f.root);
    expect(states.map((s) => s.watermarkLsn)).toEqual(Array(PARTITIONS).fill(f.capture.lastWatermark));
    // /metrics carries what the archiver did.
    const text = await registry.metrics();
    expect(text).toMatch(/cdp_archive_segments_total\{partition="0"\} [1-9]/);
    expect(text).toMatch(/cdp_archive_compression_ratio [1-9]/);
    expect(text).toMatch(/cdp_archive_upload_seconds_count [1-9]/);
  });

  it('survives kill -9 between upload and offset commit: nothing lost, the restorable point catches up', async () => {
    const f = await fixture();
    const log = `/tmp/it-archive-${f.id}-crash.log`;
    await f.capture.transactions(400, 4);
    // Dies right after storing its 3rd segment, before the pointer and the offset commit.
    const a = spawnArchiver({ ...f.env, CDP_TEST_FAULTS: 'crash-after-upload:3' }, log);
    const first = await a.exited;
    expect(first.signal).toBe('SIGKILL');
    // The fault hit the window that matters: a stored segment whose offsets were never committed.
    const committedAtCrash = await committedOffsets(kafka, f.groupId, f.topic);
    let uncommittedStored = 0;
    for (let p = 0; p < PARTITIONS; p++) {
      for await (const s of listSegments(f.store, f.root, p, 0)) if (BigInt(s.lastOffset) >= (committedAtCrash.get(p) ?? -1n)) uncommittedStored++;
    }
    expect(uncommittedStored).toBeGreaterThan(0);
    await f.capture.transactions(400, 4);
    const b = spawnArchiver(f.env, log);
    try {
      await f.capture.transactions(200, 4);
      await pointReaches(f.store, f.root, f.capture.lastWatermark);
    } finally {
      b.kill('SIGTERM');
    }
    expect((await b.exited).code).toBe(0);
    await f.capture.disconnect();
    const archive = await readArchiveWithAvsc(f.store, f.root);
    expectExactlyOnce(archive.events, f.capture.produced);
  });

  it('rides out S3 503 SlowDown and dropped connections: nothing lost, the restorable point catches up', async () => {
    const f = await fixture();
    const proxy = await startFaultyProxy(new URL(f.cfg.s3.endpoint!));
    const log = `/tmp/it-archive-${f.id}-s3.log`;
    const a = spawnArchiver({ ...f.env, CDP_S3_ENDPOINT: proxy.url }, log);
    try {
      await f.capture.transactions(200, 4);
      await pointReaches(f.store, f.root, f.capture.lastWatermark);
      proxy.setMode('slowdown');
      await f.capture.transactions(300, 4);
      await waitFor('the archiver to hit SlowDown for a while', async () => proxy.faults() >= 12);
      proxy.setMode('drop');
      const before = proxy.faults();
      await f.capture.transactions(300, 4);
      await waitFor('the archiver to hit dropped connections for a while', async () => proxy.faults() >= before + 12);
      // During the outage the archive must not claim the new changes.
      const during = await restorablePoint(f.store, f.root);
      expect(during!.lsn).toBeLessThan(f.capture.lastWatermark);
      proxy.setMode('pass');
      await f.capture.transactions(100, 4);
      await pointReaches(f.store, f.root, f.capture.lastWatermark);
    } finally {
      proxy.setMode('pass');
      a.kill('SIGTERM');
    }
    expect((await a.exited).code).toBe(0);
    await proxy.close();
    await f.capture.disconnect();
    const archive = await readArchiveWithAvsc(f.store, f.root);
    expectExactlyOnce(archive.events, f.capture.produced);
  });

  it('keeps memory bounded while S3 is down: fetching pauses, buffered bytes stay under the bound, nothing lost', async () => {
    const segmentMaxBytes = 32 * 1024;
    const f0 = await fixture({ 'archive.segmentMaxBytes': segmentMaxBytes });
    const proxy = await startFaultyProxy(new URL(f0.cfg.s3.endpoint!));
    const cfg = testConfig({
      ...Object.fromEntries([
        ['kafka.topic', f0.topic],
        ['s3.prefix', `it-archive/${f0.id}`],
        ['archive.groupId', f0.groupId],
      ]),
      'archive.segmentMaxAgeMs': 500,
      'archive.segmentMaxBytes': segmentMaxBytes,
      's3.endpoint': proxy.url,
    });
    const controller = new AbortController();
    const { done } = await startArchiver({ cfg, log: silentLog, signal: controller.signal }, { clientSuffix: f0.id });
    const gaugeValue = async (name: string) => (await registry.getSingleMetric(name)!.get()).values[0]?.value ?? 0;
    let maxBuffered = 0;
    const sampler = setInterval(() => {
      void Promise.all([gaugeValue('cdp_archive_pending_bytes'), gaugeValue('cdp_archive_open_bytes')]).then(
        ([a, b]) => (maxBuffered = Math.max(maxBuffered, a + b)),
      );
    }, 20);
    try {
      proxy.setMode('slowdown');
      for (let i = 0; i < 8; i++) await f0.capture.transactions(500, 4, 200);
      await waitFor('the archiver to keep hitting SlowDown', async () => proxy.faults() >= 20);
      proxy.setMode('pass');
      await pointReaches(f0.store, f0.root, f0.capture.lastWatermark);
    } finally {
      clearInterval(sampler);
      proxy.setMode('pass');
      controller.abort();
      await done;
      await proxy.close();
      await f0.capture.disconnect();
    }
    // Bound: 2 x segmentMaxBytes of cut segments waiting (+ at most one cut per partition past the
    // check) and one open segment per partition: far below what was produced during the outage.
    const bound = 2 * segmentMaxBytes + 2 * PARTITIONS * (segmentMaxBytes + 64 * 1024);
    expect(maxBuffered).toBeGreaterThan(0);
    expect(maxBuffered).toBeLessThanOrEqual(bound);
    expect(f0.capture.producedBytes).toBeGreaterThan(5 * bound);
    const archive = await readArchiveWithAvsc(f0.store, f0.root);
    expectExactlyOnce(archive.events, f0.capture.produced);
  });

  it('two archivers, rebalances and a kill -9 of one member: nothing lost', async () => {
    const f = await fixture();
    const log = `/tmp/it-archive-${f.id}-group.log`;
    const twoMembers = () => waitFor('two archivers sharing the partitions', async () => (await membersWithPartitions(kafka, f.groupId, f.topic)) === 2);
    const a = spawnArchiver(f.env, log);
    let b: ReturnType<typeof spawnArchiver> | undefined;
    let c: ReturnType<typeof spawnArchiver> | undefined;
    try {
      await f.capture.transactions(300, 4);
      await pointReaches(f.store, f.root, f.capture.lastWatermark);
      // A second member joins: A gives up partitions it holds open segments for.
      b = spawnArchiver(f.env, log);
      await f.capture.transactions(300, 4);
      await twoMembers();
      await f.capture.transactions(300, 4);
      await pointReaches(f.store, f.root, f.capture.lastWatermark);
      // A dies mid-stream; its partitions move to B once its session expires; then C joins.
      await f.capture.transactions(300, 4);
      a.kill('SIGKILL');
      await a.exited;
      await f.capture.transactions(300, 4);
      c = spawnArchiver(f.env, log);
      await f.capture.transactions(300, 4);
      await twoMembers();
      await f.capture.transactions(300, 4);
      await pointReaches(f.store, f.root, f.capture.lastWatermark);
    } finally {
      a.kill('SIGKILL');
      b?.kill('SIGTERM');
      c?.kill('SIGTERM');
    }
    expect((await b!.exited).code).toBe(0);
    expect((await c!.exited).code).toBe(0);
    await f.capture.disconnect();
    const archive = await readArchiveWithAvsc(f.store, f.root);
    expectExactlyOnce(archive.events, f.capture.produced);
  });

  it('stores large segments by multipart upload with SHA-256 part checksums, write-once and idempotent', async () => {
    const f = await fixture();
    await f.capture.disconnect();
    for (const size of [1024, MULTIPART_THRESHOLD + 3 * 1024 * 1024]) {
      const bytes = randomBytes(size);
      const key = `${f.root}/upload-test/${size}.bin`;
      expect(await storeSegment(f.store, key, bytes, sha256(bytes))).toBe('created');
      expect(await storeSegment(f.store, key, bytes, sha256(bytes))).toBe('exists');
      const back = await getObject(f.store, key);
      expect(sha256(back)).toBe(sha256(bytes));
    }
  });

  it('encrypts segments client-side; the right key reads them, a wrong key is CDP_ENCRYPTION, altered bytes are an IntegrityError', async () => {
    const key = '5a'.repeat(32);
    process.env.IT_ARCHIVE_KEY = key;
    const f = await fixture({ 'archive.encryptionKeyEnv': 'IT_ARCHIVE_KEY' });
    const controller = new AbortController();
    const { done } = await startArchiver({ cfg: f.cfg, log: silentLog, signal: controller.signal }, { clientSuffix: f.id });
    try {
      await f.capture.transactions(200, 4);
      await pointReaches(f.store, f.root, f.capture.lastWatermark);
    } finally {
      controller.abort();
      await done;
      await f.capture.disconnect();
    }
    const right = keyringOf(parseMasterKey(key, 'test'), { archive: f.root });
    const wrong = keyringOf(parseMasterKey('a5'.repeat(32), 'test'), { archive: f.root });
    const events: ChangeEvent[] = [];
    let firstKey: string | undefined;
    for (let p = 0; p < PARTITIONS; p++) {
      for await (const s of listSegments(f.store, f.root, p, 0)) {
        firstKey ??= s.key;
        const seg = await fetchSegment(f.store, s.key, s.sha256, right);
        expect(seg.manifest.partition).toBe(p);
        for await (const ev of seg.events()) events.push(ev);
      }
    }
    expectExactlyOnce(events, f.capture.produced);

    const name = parseSegmentKey(firstKey!)!;
    const err = await fetchSegment(f.store, firstKey!, name.sha256, wrong).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).code).toBe('CDP_ENCRYPTION');
    expect((err as Error).message).toContain(right.current.id);

    // An altered copy, stored under a segment name that carries the original checksum.
    const bytes = await getObject(f.store, firstKey!);
    bytes[bytes.length >> 1] ^= 0x20;
    const alteredKey = firstKey!.replace(`${f.root}/`, `${f.root}-altered/`);
    await putOnce(f.store, alteredKey, bytes);
    const bad = await fetchSegment(f.store, alteredKey, name.sha256, right).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(IntegrityError);
    expect((bad as IntegrityError).exitCode).toBe(3);
    expect((bad as Error).message).toContain(alteredKey);
    expect(() => readSegment(bytes, { expectedSha256: name.sha256, keyring: right })).toThrow(IntegrityError);
  });
});
