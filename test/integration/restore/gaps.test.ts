import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { advancePartitionState } from '../../../src/archive/catalog.js';
import { archiveManifestKey, segmentKey, type ArchiveManifest } from '../../../src/archive/layout.js';
import { SegmentWriter } from '../../../src/archive/segment.js';
import { storeSegment } from '../../../src/archive/upload.js';
import { takeBaseBackup } from '../../../src/base/basebackup.js';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { IntegrityError } from '../../../src/errors.js';
import { listPartitionSegments } from '../../../src/restore/archive-source.js';
import { createStore, putOnce, type Store } from '../../../src/s3/client.js';
import { createDatabase, dropDatabase, rand, runCli, silentLog, stackEnvironment, testConfig, testContext, withClient } from './helpers.js';

// Offset continuity of a partition's segments at restore: a segment missing in the middle of a
// partition must stop the restore with exit 3 naming the hole (else its transactions vanish with
// exit 0); overlapping segments (duplicates written after crashes and rebalances) are not holes,
// nor is a segment left out of the listing because all its records are older than the base.

const id = rand();
const SRC = `cdp_gap_src_${id}`;
const PARTITIONS = 2;
const TXNS = 60;
const REL: RelationInfo = { oid: 1, replicaIdentity: 'd', columns: ['id', 'v'], types: ['bigint', 'text'], key: [0] };

type Placed = { ev: ChangeEvent; offset: number };

/**
 * Per partition, the archive's records with their Kafka offsets: TXNS transactions of 5 inserts and
 * a COMMIT marker, each transaction wholly in partition x % PARTITIONS, so that a lost segment of
 * 24 records loses 4 whole transactions and nothing else notices (no half transaction to trip on).
 */
function records(baseLsn: number): { perPartition: Placed[][]; lastLsn: number; t0: number } {
  const perPartition: Placed[][] = Array.from({ length: PARTITIONS }, () => []);
  const place = (ev: ChangeEvent, p: number) => perPartition[p]!.push({ ev, offset: perPartition[p]!.length });
  const t0 = Date.now() * 1000;
  let lsn = baseLsn;
  for (let x = 1; x <= TXNS; x++) {
    lsn += 100;
    for (let k = 0; k < 5; k++) {
      const rowId = x * 10 + k;
      place(
        emptyEvent({
          database: SRC,
          schema: 'public',
          table: 't',
          relation: REL,
          commitLsn: lsn,
          xid: 1000 + x,
          commitTime: t0 + x,
          position: k,
          op: 'INSERT',
          new: [String(rowId), `r${x}`],
        }),
        x % PARTITIONS,
      );
    }
    place(emptyEvent({ op: 'COMMIT', database: SRC, commitLsn: lsn, xid: 1000 + x, commitTime: t0 + x, position: 5, endLsn: lsn + 50 }), x % PARTITIONS);
  }
  for (let p = 0; p < PARTITIONS; p++)
    place(emptyEvent({ op: 'WATERMARK', database: SRC, commitLsn: lsn, commitTime: t0 + TXNS, content: JSON.stringify({ partition: p }) }), p);
  return { perPartition, lastLsn: lsn, t0 };
}

async function writeSegment(store: Store, root: string, p: number, recs: Placed[]): Promise<string> {
  const w = new SegmentWriter({ partition: p, codec: 'zstandard' });
  for (const r of recs) w.appendEvent(r.ev, String(r.offset));
  const seg = w.finish();
  const key = segmentKey(root, seg.name);
  await storeSegment(store, key, seg.bytes, seg.name.sha256);
  return key;
}

/** Writes the archive in segments of 24 records (4 transactions); `extra` adds overlapping duplicate ranges. */
async function writeArchive(store: Store, root: string, baseLsn: number, extra: Array<[number, number]> = []): Promise<string[][]> {
  const { perPartition, lastLsn, t0 } = records(baseLsn);
  const keys: string[][] = [];
  for (let p = 0; p < PARTITIONS; p++) {
    const recs = perPartition[p]!;
    const ks: string[] = [];
    for (let i = 0; i < recs.length; i += 24) ks.push(await writeSegment(store, root, p, recs.slice(i, i + 24)));
    for (const [a, b] of extra) await writeSegment(store, root, p, recs.slice(a, b + 1));
    keys.push(ks);
    await advancePartitionState(store, root, {
      partition: p,
      watermarkLsn: lastLsn,
      watermarkTime: t0 + TXNS,
      lastOffset: String(recs.length - 1),
      lastKey: ks.at(-1)!,
    });
  }
  const m: ArchiveManifest = { version: 1, database: SRC, systemId: 'test', topic: 'none', partitions: PARTITIONS, createdAt: new Date().toISOString() };
  await putOnce(store, archiveManifestKey(root), Buffer.from(JSON.stringify(m)));
  return keys;
}

describe('restore: offset continuity of the archive', () => {
  const dbs: string[] = [];
  let srcUrl: string;
  beforeAll(async () => {
    stackEnvironment();
    srcUrl = await createDatabase(SRC);
    dbs.push(SRC);
    await withClient(srcUrl, (c) => c.query('CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL)'));
  });
  afterAll(async () => {
    for (const d of dbs) await dropDatabase(d);
  });

  async function setup(extra: Array<[number, number]> = []) {
    const prefix = `test-gaps-${rand()}`;
    const env = { CDP_S3_PREFIX: prefix, CDP_LOG_FORMAT: 'json', CDP_SOURCE_URL: srcUrl };
    const cfg = testConfig(env);
    const store = createStore(cfg, silentLog);
    const base = await takeBaseBackup(testContext(cfg));
    const keys = await writeArchive(store, `${prefix}/${SRC}`, base.lsn, extra);
    const target = `cdp_gap_t_${rand()}`;
    dbs.push(target);
    const into = await createDatabase(target);
    return { env, store, keys, into };
  }

  it('overlapping duplicate segments restore exactly (exit 0)', async () => {
    const { env, into } = await setup([
      [10, 60],
      [20, 30],
    ]);
    const r = await runCli(['restore', '--into', into, '--latest'], env);
    expect(r.code, r.stderr).toBe(0);
    const n = await withClient(into, async (c) => Number((await c.query('SELECT count(*) AS n FROM t')).rows[0].n));
    expect(n).toBe(TXNS * 5);
  });

  it('a segment missing in the middle of a partition stops the restore with exit 3 naming the hole', async () => {
    const { env, store, keys, into } = await setup();
    const victim = keys[1]![1]!; // partition 1, offsets 24..47: transactions 9, 11, 13, 15
    await store.client.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: victim }));
    const r = await runCli(['restore', '--into', into, '--latest'], env);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/partition 1: offsets 24\.\.47 are in no stored segment/);
    expect(r.stderr).toMatch(/cdp verify/);
    expect(r.stderr).toMatch(/cdp replicate/);
  });

  it('verify finds a segment lost at the very end of a partition (the state pointer names it)', async () => {
    const { env, store, keys } = await setup();
    const before = await runCli(['verify'], env);
    expect(before.code, before.stdout + before.stderr).toBe(0);
    await store.client.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: keys[0]!.at(-1)! }));
    const r = await runCli(['verify'], env);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stdout).toMatch(/partition 0.*newest archived segment .* \(state pointer\) is not stored/s);
  });

  it("verify follows each segment's predecessor: a segment swapped for other records under the same offsets breaks the chain", async () => {
    const prefix = `test-gaps-${rand()}`;
    const env = { CDP_S3_PREFIX: prefix, CDP_LOG_FORMAT: 'json', CDP_SOURCE_URL: srcUrl };
    const cfg = testConfig(env);
    const store = createStore(cfg, silentLog);
    const root = `${prefix}/${SRC}`;
    await takeBaseBackup(testContext(cfg));
    const m: ArchiveManifest = { version: 1, database: SRC, systemId: 'test', topic: 'none', partitions: 1, createdAt: new Date().toISOString() };
    await putOnce(store, archiveManifestKey(root), Buffer.from(JSON.stringify(m)));
    const ev = (offset: number, lsn: number, v: string): Placed => ({
      offset,
      ev: emptyEvent({
        database: SRC,
        schema: 'public',
        table: 't',
        relation: REL,
        commitLsn: lsn,
        xid: lsn,
        commitTime: lsn,
        position: 0,
        op: 'INSERT',
        new: [String(offset), v],
      }),
    });
    // What the archiver writes: each segment names the SHA-256 of the one before it.
    const chained = async (recs: Placed[], prev?: string) => {
      const w = new SegmentWriter({ partition: 0, codec: 'zstandard', generation: 0, epoch: 0, prevSha256: prev });
      for (const r of recs) w.appendEvent(r.ev, String(r.offset));
      const seg = w.finish();
      const key = segmentKey(root, seg.name);
      await storeSegment(store, key, seg.bytes, seg.name.sha256);
      return { key, sha: seg.name.sha256 };
    };
    const run = (from: number, v: string) => Array.from({ length: 5 }, (_, i) => ev(from + i, 1000 + from + i, v));
    const s1 = await chained(run(0, 'a'));
    const s2 = await chained(run(5, 'a'), s1.sha);
    const s3 = await chained(run(10, 'a'), s2.sha);
    await advancePartitionState(store, root, { partition: 0, watermarkLsn: 0, watermarkTime: 0, lastOffset: '14', lastKey: s3.key });
    const ok = await runCli(['verify'], env);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    // The middle segment replaced by other rows under the same offsets (a valid segment of its own).
    await chained(run(5, 'forged'), s1.sha);
    await store.client.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: s2.key }));
    const r = await runCli(['verify'], env);
    expect(r.code, r.stdout + r.stderr).toBe(3);
    expect(r.stdout).toContain(`the segment before it in the chain (SHA-256 ${s2.sha}) is not stored`);
  });

  it('a segment left out by the LSN filter is not a hole; the same segment deleted is', async () => {
    const prefix = `test-gaps-${rand()}`;
    const cfg = testConfig({ CDP_S3_PREFIX: prefix });
    const store = createStore(cfg, silentLog);
    const root = `${prefix}/${SRC}`;
    // Offsets 10..19 hold a capture restart's replay of old transactions (LSN 50..59), between
    // segments of newer ones: a restore from LSN 500 does not list it, and needs nothing in it.
    const ev = (offset: number, lsn: number): Placed => ({
      offset,
      ev: emptyEvent({ op: 'COMMIT', database: SRC, commitLsn: lsn, xid: lsn, commitTime: lsn, position: 0, endLsn: lsn + 1 }),
    });
    await writeSegment(
      store,
      root,
      0,
      Array.from({ length: 10 }, (_, i) => ev(i, 1000 + i)),
    );
    const old = await writeSegment(
      store,
      root,
      0,
      Array.from({ length: 10 }, (_, i) => ev(10 + i, 50 + i)),
    );
    await writeSegment(
      store,
      root,
      0,
      Array.from({ length: 10 }, (_, i) => ev(20 + i, 2000 + i)),
    );
    const [listed] = await listPartitionSegments(store, root, 1, 500);
    expect(listed!.map((s) => `${s.firstOffset}-${s.lastOffset}`)).toEqual(['0-9', '20-29']);
    await store.client.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: old }));
    const err = await listPartitionSegments(store, root, 1, 500).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as Error).message).toMatch(/partition 0: offsets 10\.\.19 are in no stored segment/);
  });
});
