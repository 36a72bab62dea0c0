import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { listSegments, type ListedSegment } from '../../../src/archive/catalog.js';
import { segmentKey } from '../../../src/archive/layout.js';
import { SegmentWriter } from '../../../src/archive/segment.js';
import { storeSegment } from '../../../src/archive/upload.js';
import { CdpError, ErrorCodes, IntegrityError } from '../../../src/errors.js';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { Limiter, partitionChunks } from '../../../src/restore/archive-source.js';
import { createStore, getObject, putOnce, type Store } from '../../../src/s3/client.js';
import { rand, silentLog, stackEnvironment, testConfig } from './helpers.js';

// Restore prefetches each partition's first segments and decodes the first block while the base
// loads (archive-source.ts partitionChunks). What the replay then reads must be exactly what it
// reads without the prefetch, and a segment that fails its check must still stop the read at the
// point where it is consumed, with its own error, not vanish or surface as an unhandled rejection.

const REL: RelationInfo = { oid: 1, replicaIdentity: 'd', columns: ['id', 'v'], types: ['bigint', 'text'], key: [0] };
const SEGMENTS = 3;
const PER_SEGMENT = 5_000;

function events(seg: number): ChangeEvent[] {
  const out: ChangeEvent[] = [];
  for (let k = 0; k < PER_SEGMENT; k++) {
    const x = seg * PER_SEGMENT + k;
    const lsn = 1_000 + 100 * x;
    out.push(
      emptyEvent({
        database: 'd',
        schema: 'public',
        table: 't',
        relation: REL,
        commitLsn: lsn,
        xid: x,
        commitTime: 1,
        position: 0,
        op: 'INSERT',
        new: [String(x), `v${x}`],
      }),
      emptyEvent({ op: 'COMMIT', database: 'd', commitLsn: lsn, xid: x, commitTime: 1, position: 1, endLsn: lsn + 1 }),
    );
  }
  return out;
}

/** Writes SEGMENTS segments of partition 0 under root; `corrupt`: that one's stored bytes are altered. */
async function writePartition(store: Store, root: string, corrupt?: number): Promise<ListedSegment[]> {
  let offset = 0;
  for (let s = 0; s < SEGMENTS; s++) {
    const w = new SegmentWriter({ partition: 0, codec: 'zstandard', blockBytes: 64 * 1024 });
    for (const ev of events(s)) w.appendEvent(ev, String(offset++));
    const seg = w.finish();
    const key = segmentKey(root, seg.name);
    if (s === corrupt) {
      const bytes = Buffer.from(seg.bytes);
      bytes[bytes.length - 20] ^= 0xff;
      await putOnce(store, key, bytes);
    } else {
      await storeSegment(store, key, seg.bytes, seg.name.sha256);
    }
  }
  const listed: ListedSegment[] = [];
  for await (const s of listSegments(store, root, 0, 0)) listed.push(s);
  return listed;
}

async function readAll(chunks: AsyncIterable<ChangeEvent[]>): Promise<string[]> {
  const out: string[] = [];
  for await (const chunk of chunks) for (const ev of chunk) out.push(`${ev.commitLsn}/${ev.position}/${ev.op}/${ev.new?.join(',') ?? ''}`);
  return out;
}

describe('restore prefetch of the first segments', () => {
  let store: Store;
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => unhandled.push(err);
  beforeAll(() => {
    stackEnvironment();
    store = createStore(testConfig({ CDP_S3_PREFIX: `test-prefetch-${rand()}` }), silentLog);
    process.on('unhandledRejection', onUnhandled);
  });
  beforeEach(() => {
    unhandled.length = 0;
  });
  afterAll(() => {
    process.off('unhandledRejection', onUnhandled);
    store.client.destroy();
  });

  const open = (segs: ListedSegment[]) => partitionChunks(store, segs, { readAhead: 2, limiter: new Limiter(4), stats: { segments: 0, bytes: 0 } });

  it('reads the same events, in the same order, prefetched or not', async () => {
    const segs = await writePartition(store, `test-prefetch-${rand()}/same`);
    expect(segs).toHaveLength(SEGMENTS);
    const plain = await readAll(open(segs).chunks);
    const p = open(segs);
    p.prefetch();
    // The base would load here; the first block is decoded meanwhile.
    await new Promise((r) => setTimeout(r, 200));
    p.prefetch();
    const prefetched = await readAll(p.chunks);
    expect(plain).toHaveLength(SEGMENTS * PER_SEGMENT * 2);
    expect(prefetched).toEqual(plain);
  });

  it('a corrupt first segment stops the read when it is consumed, with its own error', async () => {
    const segs = await writePartition(store, `test-prefetch-${rand()}/bad0`, 0);
    const p = open(segs);
    const told: unknown[] = [];
    p.prefetch((e) => told.push(e));
    await new Promise((r) => setTimeout(r, 300));
    expect(unhandled).toEqual([]);
    // Told at once too (restore stops the base load for it).
    expect(told).toHaveLength(1);
    expect(told[0]).toBeInstanceOf(IntegrityError);
    const err = await readAll(p.chunks).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(IntegrityError);
    expect(String((err as Error).message)).toContain(segs[0]!.key);
  });

  it('a corrupt later segment still fails after the first ones are read', async () => {
    const segs = await writePartition(store, `test-prefetch-${rand()}/bad2`, 2);
    const p = open(segs);
    p.prefetch();
    const seen: string[] = [];
    const err = await (async () => {
      for await (const chunk of p.chunks) for (const ev of chunk) seen.push(ev.op);
    })().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(IntegrityError);
    expect(String((err as Error).message)).toContain(segs[2]!.key);
    expect(seen).toHaveLength(2 * PER_SEGMENT * 2);
    expect(unhandled).toEqual([]);
  });

  it('a download that failed while the base loaded is asked for again when the replay reads it', async () => {
    const root = `test-prefetch-${rand()}/s3down`;
    const segs = await writePartition(store, root);
    const plain = await readAll(open(segs).chunks);
    // The first segment unavailable during the prefetch: the object is away, and S3's 404 is a
    // CDP_S3 error that is not retried (isPermanent), so this stands for any S3 failure whose
    // retries are spent; the short budget only bounds what a slow server would retry.
    const bytes = await getObject(store, segs[0]!.key);
    await store.client.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: segs[0]!.key }));
    const shortRetries = createStore(testConfig({ CDP_S3_PREFIX: 'unused' }), silentLog, { maxElapsedMs: 300 });
    try {
      const stats = { segments: 0, bytes: 0 };
      const p = partitionChunks(shortRetries, segs, { readAhead: 2, limiter: new Limiter(4), stats });
      const told: unknown[] = [];
      p.prefetch((e) => told.push(e));
      // S3 unavailable is not the replay's end (it asks again): not told as fatal.
      const stopped = new AbortController();
      stopped.abort(new CdpError(ErrorCodes.SHUTDOWN, 'stopped by SIGTERM'));
      const shut = partitionChunks({ ...shortRetries, signal: stopped.signal }, segs, { readAhead: 2, limiter: new Limiter(4) });
      shut.prefetch((e) => told.push(e));
      const failed = await partitionChunks(shortRetries, segs, { readAhead: 2, limiter: new Limiter(4) })
        .chunks[Symbol.asyncIterator]()
        .next()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(failed).toBeInstanceOf(CdpError);
      expect((failed as CdpError).code).toBe(ErrorCodes.S3);
      await new Promise((r) => setTimeout(r, 1_000));
      // Nor is a shutdown (a read under an aborted signal): a SIGTERM must stay an interruption.
      expect(told).toEqual([]);
      // Back before the replay starts: the read succeeds, whole and in order.
      await storeSegment(store, segs[0]!.key, bytes, segs[0]!.sha256);
      expect(await readAll(p.chunks)).toEqual(plain);
      // Each segment counted once in the report, though the second was fetched twice.
      expect(stats).toEqual({ segments: segs.length, bytes: segs.reduce((n, s) => n + s.size, 0) });
      expect(unhandled).toEqual([]);
    } finally {
      shortRetries.client.destroy();
    }
  });

  it('a read closed while a failed prefetch is taken is not asked for again', async () => {
    const root = `test-prefetch-${rand()}/closedretry`;
    const segs = await writePartition(store, root);
    const bytes = await getObject(store, segs[0]!.key);
    await store.client.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: segs[0]!.key }));
    const shortRetries = createStore(testConfig({ CDP_S3_PREFIX: 'unused' }), silentLog, { maxElapsedMs: 300 });
    try {
      const p = partitionChunks(shortRetries, segs, { readAhead: 2, limiter: new Limiter(4) });
      p.prefetch();
      await new Promise((r) => setTimeout(r, 1_000));
      await storeSegment(store, segs[0]!.key, bytes, segs[0]!.sha256);
      const it = p.chunks[Symbol.asyncIterator]();
      // The consumer takes the failed block and closes the read at once (the merge does when
      // another partition fails): the failure is its answer, not a new download handed out late.
      const taken = it.next().then(
        () => 'handed out',
        (e: unknown) => (e instanceof CdpError ? e.code : e),
      );
      await it.return?.();
      expect(await taken).toBe(ErrorCodes.S3);
      expect(unhandled).toEqual([]);
    } finally {
      shortRetries.client.destroy();
    }
  });

  it('a prefetched read that is never consumed can be closed, and stays closed', async () => {
    const segs = await writePartition(store, `test-prefetch-${rand()}/closed`);
    const p = open(segs);
    p.prefetch();
    const it = p.chunks[Symbol.asyncIterator]();
    await it.return?.();
    // Closed means closed: the block decoded ahead is not handed out afterwards.
    expect(await it.next()).toMatchObject({ done: true });
    expect(unhandled).toEqual([]);
  });
});
