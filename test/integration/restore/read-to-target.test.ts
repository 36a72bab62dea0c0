import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { advancePartitionState } from '../../../src/archive/catalog.js';
import { archiveManifestKey, segmentKey, type ArchiveManifest } from '../../../src/archive/layout.js';
import { SegmentWriter } from '../../../src/archive/segment.js';
import { storeSegment } from '../../../src/archive/upload.js';
import { takeBaseBackup } from '../../../src/base/basebackup.js';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { createStore, putOnce, type Store } from '../../../src/s3/client.js';
import { formatLsn, microsToIso } from '../../../src/util/lsn.js';
import { createDatabase, dropDatabase, rand, runCli, silentLog, stackEnvironment, testConfig, testContext, withClient } from './helpers.js';

// Restore reads the segments its target needs, not every segment up to the restorable point
// (issue 14 item 5). The archive is laid out as capture writes it: per transaction its records in
// one partition and a WATERMARK in every partition, one segment per partition each time; then a
// long idle stretch of heartbeat-only segments (a heartbeat transaction leaves only watermarks).
// The replay stops at the first watermark past the target, after its bounded sequence scan
// (restore.ts: max(5 min, 4 x capture.sequenceIntervalMs) of commit time): segmentsRead in the
// restore report stays small for an early target, whatever follows it.

const id = rand();
const SRC = `cdp_rtt_src_${id}`;
const PARTITIONS = 2;
const TXNS = 30;
const HEARTBEATS = 120;
const GAP_US = 20_000_000; // 20 s of commit time between transactions, and between heartbeats
const REL: RelationInfo = { oid: 1, replicaIdentity: 'd', columns: ['id', 'v'], types: ['bigint', 'text'], key: [0] };

interface Layout {
  lsnOf: (x: number) => number;
  timeOf: (x: number) => number;
  segments: number;
}

async function writeArchive(store: Store, root: string, baseLsn: number): Promise<Layout> {
  const t0 = Date.now() * 1000;
  const lsnOf = (x: number) => baseLsn + 100 * x;
  const timeOf = (x: number) => t0 + x * GAP_US;
  const offsets = Array.from({ length: PARTITIONS }, () => 0);
  const lastKey: string[] = Array.from({ length: PARTITIONS }, () => '');
  let segments = 0;
  const write = async (p: number, evs: ChangeEvent[]) => {
    const w = new SegmentWriter({ partition: p, codec: 'zstandard' });
    for (const ev of evs) w.appendEvent(ev, String(offsets[p]!++));
    const seg = w.finish();
    lastKey[p] = segmentKey(root, seg.name);
    await storeSegment(store, lastKey[p], seg.bytes, seg.name.sha256);
    segments++;
  };
  const wm = (lsn: number, time: number, p: number) =>
    emptyEvent({ op: 'WATERMARK', database: SRC, commitLsn: lsn, commitTime: time, content: JSON.stringify({ partition: p }) });
  for (let x = 1; x <= TXNS; x++) {
    const lsn = lsnOf(x);
    const recs = [0, 1].map((k) =>
      emptyEvent({
        database: SRC,
        schema: 'public',
        table: 't',
        relation: REL,
        commitLsn: lsn,
        xid: 1000 + x,
        commitTime: timeOf(x),
        position: k,
        op: 'INSERT',
        new: [String(x * 10 + k), `r${x}`],
      }),
    );
    recs.push(emptyEvent({ op: 'COMMIT', database: SRC, commitLsn: lsn, xid: 1000 + x, commitTime: timeOf(x), position: 2, endLsn: lsn + 50 }));
    for (let p = 0; p < PARTITIONS; p++) await write(p, [...(x % PARTITIONS === p ? recs : []), wm(lsn, timeOf(x), p)]);
  }
  let lsn = lsnOf(TXNS);
  let time = timeOf(TXNS);
  for (let h = 1; h <= HEARTBEATS; h++) {
    lsn += 100;
    time += GAP_US;
    for (let p = 0; p < PARTITIONS; p++) await write(p, [wm(lsn, time, p)]);
  }
  for (let p = 0; p < PARTITIONS; p++) {
    await advancePartitionState(store, root, {
      partition: p,
      watermarkLsn: lsn,
      watermarkTime: time,
      lastOffset: String(offsets[p]! - 1),
      lastKey: lastKey[p]!,
    });
  }
  const m: ArchiveManifest = { version: 1, database: SRC, systemId: 'test', topic: 'none', partitions: PARTITIONS, createdAt: new Date().toISOString() };
  await putOnce(store, archiveManifestKey(root), Buffer.from(JSON.stringify(m)));
  return { lsnOf, timeOf, segments };
}

describe('restore reads only the segments its target needs', () => {
  const dbs: string[] = [];
  let env: Record<string, string>;
  let layout: Layout;
  beforeAll(async () => {
    stackEnvironment();
    const srcUrl = await createDatabase(SRC);
    dbs.push(SRC);
    await withClient(srcUrl, (c) => c.query('CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL)'));
    const prefix = `test-rtt-${rand()}`;
    env = { CDP_S3_PREFIX: prefix, CDP_LOG_FORMAT: 'json', CDP_SOURCE_URL: srcUrl };
    const cfg = testConfig(env);
    const store = createStore(cfg, silentLog);
    const base = await takeBaseBackup(testContext(cfg));
    layout = await writeArchive(store, `${prefix}/${SRC}`, base.lsn);
    store.client.destroy();
  }, 120_000);
  afterAll(async () => {
    for (const d of dbs) await dropDatabase(d);
  });

  async function restore(target: string[]) {
    const name = `cdp_rtt_t_${rand()}`;
    dbs.push(name);
    const into = await createDatabase(name);
    const r = await runCli(['restore', '--into', into, ...target], env);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { segments: number; segmentsRead: number; transactions: number };
    const rows = await withClient(into, async (c) => (await c.query<{ id: string; v: string }>('SELECT t.id::text AS id, v FROM t ORDER BY t.id')).rows);
    return { report, rows };
  }
  const expected = (upTo: number) => Array.from({ length: upTo }, (_, i) => [0, 1].map((k) => ({ id: String((i + 1) * 10 + k), v: `r${i + 1}` }))).flat();

  it('an early LSN target reads few segments; the latest point reads them all', async () => {
    const early = await restore(['--lsn', formatLsn(layout.lsnOf(5))]);
    expect(early.rows).toEqual(expected(5));
    expect(early.report.transactions).toBe(5);
    // 5 transactions' segments, the sequence scan's 5 minutes (15 segments 20 s apart), read-ahead.
    const perPartition = 5 + 300 / 20 + 4;
    expect(early.report.segmentsRead).toBeLessThanOrEqual(PARTITIONS * perPartition);

    const latest = await restore(['--latest']);
    expect(latest.rows).toEqual(expected(TXNS));
    expect(latest.report.segmentsRead).toBe(layout.segments);
    expect(early.report.segmentsRead * 4).toBeLessThan(latest.report.segmentsRead);
  }, 180_000);

  it('an early time target reads few segments too', async () => {
    const early = await restore(['--time', microsToIso(layout.timeOf(7))]);
    expect(early.rows).toEqual(expected(7));
    expect(early.report.segmentsRead).toBeLessThanOrEqual(PARTITIONS * (7 + 300 / 20 + 4));
  }, 180_000);
});
