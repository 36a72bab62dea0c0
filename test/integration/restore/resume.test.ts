import { spawn, type ChildProcess } from 'node:child_process';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { advancePartitionState } from '../../../src/archive/catalog.js';
import { archiveManifestKey, segmentKey, type ArchiveManifest } from '../../../src/archive/layout.js';
import { SegmentWriter } from '../../../src/archive/segment.js';
import { storeSegment } from '../../../src/archive/upload.js';
import { takeBaseBackup } from '../../../src/base/basebackup.js';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { createStore, putOnce, type Store } from '../../../src/s3/client.js';
import { formatLsn } from '../../../src/util/lsn.js';
import { createDatabase, dropDatabase, rand, REPO, runCli, silentLog, stackEnvironment, testConfig, testContext, waitFor, withClient } from './helpers.js';

// Restore's own failure model, independent of capture: an archive written with the archive's
// SegmentWriter (transactions with COMMIT markers spread over partitions, watermarks, state
// pointers) on top of a real base. A restore killed with SIGKILL in the middle of its replay must
// resume, when run again, exactly where its cursor says: every transaction inserts rows, so one
// applied twice fails on the primary key, and one skipped leaves rows missing; a corrupted segment
// must stop the restore with exit 3.

const id = rand();
const SRC = `cdp_rs_src_${id}`;
const PREFIX = `test-resume-${id}`;
const PARTITIONS = 3;
const TXNS = 4000;
const REL: RelationInfo = { oid: 1, replicaIdentity: 'd', columns: ['id', 'v'], types: ['bigint', 'text'], key: [0] };
// Target transactions of at most ~20,000 changes (the default lets one span the whole replay while
// its coalescing buffer holds rows): the tests interrupt between groups.
const env: Record<string, string> = { CDP_S3_PREFIX: PREFIX, CDP_LOG_FORMAT: 'json', CDP_RESTORE_COALESCE_MAX_CHANGES: '20000' };

/** Transaction x inserts 100 rows; from x = 11 on it also updates 50 rows of transaction x - 10. */
function txnChanges(x: number): Array<Partial<ChangeEvent>> {
  const out: Array<Partial<ChangeEvent>> = [];
  for (let j = 0; j < 100; j++) out.push({ op: 'INSERT', new: [String(x * 1000 + j), `r${x}`] });
  if (x > 10) for (let j = 0; j < 50; j++) out.push({ op: 'UPDATE', new: [String((x - 10) * 1000 + j), `r${x - 10}+${x}`] });
  return out;
}

function expectedRows(): Map<string, string> {
  const rows = new Map<string, string>();
  for (let x = 1; x <= TXNS; x++) for (const c of txnChanges(x)) rows.set(c.new![0]!, c.new![1]!);
  return rows;
}

async function writeArchive(store: Store, root: string, baseLsn: number): Promise<string[]> {
  const keys: string[] = [];
  const writers = Array.from({ length: PARTITIONS }, (_, p) => ({ w: new SegmentWriter({ partition: p, codec: 'zstandard' }), offset: 0, lastKey: '' }));
  const flush = async (p: number) => {
    const s = writers[p]!;
    if (s.w.count === 0) return;
    const seg = s.w.finish();
    const key = segmentKey(root, seg.name);
    await storeSegment(store, key, seg.bytes, seg.name.sha256);
    keys.push(key);
    s.lastKey = key;
    s.w = new SegmentWriter({ partition: p, codec: 'zstandard' });
  };
  const put = async (ev: ChangeEvent, p: number) => {
    const s = writers[p]!;
    s.w.appendEvent(ev, String(s.offset++));
    if (s.w.count >= 20_000) await flush(p);
  };
  const t0 = Date.now() * 1000;
  let lsn = baseLsn;
  for (let x = 1; x <= TXNS; x++) {
    lsn += 100;
    const changes = txnChanges(x);
    for (let k = 0; k < changes.length; k++) {
      const ev = emptyEvent({
        database: SRC,
        schema: 'public',
        table: 't',
        relation: REL,
        commitLsn: lsn,
        xid: 1000 + x,
        commitTime: t0 + x,
        position: k,
        op: 'INSERT',
        ...changes[k],
      });
      await put(ev, Number(BigInt(ev.new![0]!) % BigInt(PARTITIONS)));
    }
    await put(
      emptyEvent({ op: 'COMMIT', database: SRC, commitLsn: lsn, xid: 1000 + x, commitTime: t0 + x, position: changes.length, endLsn: lsn + 50 }),
      x % PARTITIONS,
    );
  }
  for (let p = 0; p < PARTITIONS; p++) {
    await put(emptyEvent({ op: 'WATERMARK', database: SRC, commitLsn: lsn, commitTime: t0 + TXNS, content: JSON.stringify({ partition: p }) }), p);
    const lastOffset = String(writers[p]!.offset - 1);
    await flush(p);
    await advancePartitionState(store, root, { partition: p, watermarkLsn: lsn, watermarkTime: t0 + TXNS, lastOffset, lastKey: writers[p]!.lastKey });
  }
  const m: ArchiveManifest = { version: 1, database: SRC, systemId: 'test', topic: 'none', partitions: PARTITIONS, createdAt: new Date().toISOString() };
  await putOnce(store, archiveManifestKey(root), Buffer.from(JSON.stringify(m)));
  return keys;
}

async function content(url: string): Promise<Map<string, string>> {
  return withClient(url, async (c) => new Map((await c.query('SELECT id::text AS id, v FROM t')).rows.map((r) => [r.id as string, r.v as string])));
}

/** `cdp restore --latest` into `into` as a child process, with a test hook, its stderr collected and its exit awaited. */
function spawnRestore(into: string, faults: string): { p: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const p = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'restore', '--into', into, '--latest'], {
    env: { ...process.env, ...stackEnvironment(), ...env, CDP_LOG_FORMAT: 'json', CDP_TEST_FAULTS: faults },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  return { p, stderr: () => stderr, exited };
}

describe('restore resume and integrity', () => {
  const targets: string[] = [];
  let segmentKeys: string[] = [];
  let store: Store;
  beforeAll(async () => {
    stackEnvironment();
    const url = await createDatabase(SRC);
    env.CDP_SOURCE_URL = url;
    await withClient(url, (c) => c.query('CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL)'));
    const cfg = testConfig(env);
    store = createStore(cfg, silentLog);
    const base = await takeBaseBackup(testContext(cfg));
    segmentKeys = await writeArchive(store, `${PREFIX}/${SRC}`, base.lsn);
  });
  afterAll(async () => {
    for (const t of targets) await dropDatabase(t);
    await dropDatabase(SRC);
  });

  it('resumes exactly after a SIGKILL in the middle of the replay', async () => {
    const target = `cdp_rs_t_${rand()}`;
    targets.push(target);
    const into = await createDatabase(target);
    // A target commit (with its cursor) happens every 20,000 changes: ~133 source transactions.
    const p = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'restore', '--into', into, '--latest'], {
      env: { ...process.env, ...stackEnvironment(), ...env, CDP_TEST_FAULTS: 'restore-group-delay-ms:300' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    let exitedEarly = false;
    void exited.then(() => (exitedEarly = true));
    const cursorAt = await waitFor(
      'the restore to commit a few groups',
      async () => {
        if (exitedEarly) throw new Error('restore finished before it could be interrupted');
        return withClient(into, async (c) => {
          const r = await c.query(
            `SELECT CASE WHEN to_regclass('_cdp_restore.cursor') IS NULL THEN NULL ELSE (SELECT transactions FROM _cdp_restore.cursor) END AS n`,
          );
          const n = Number(r.rows[0].n ?? 0);
          return n >= 200 ? n : undefined;
        });
      },
      300_000,
      50,
    );
    p.kill('SIGKILL');
    await exited;
    const mid = await content(into);
    expect(mid.size).toBeGreaterThan(0);
    expect(cursorAt).toBeLessThan(TXNS);

    const again = await runCli(['restore', '--into', into, '--latest'], { ...env });
    expect(again.code, again.stderr).toBe(0);
    const report = JSON.parse(again.stdout.trim().split('\n').at(-1)!);
    expect(report.resumed).toBe(true);
    expect(report.transactions).toBeLessThan(TXNS);
    expect(await content(into)).toEqual(expectedRows());
    await withClient(into, async (c) => expect((await c.query(`SELECT to_regnamespace('_cdp_restore') AS s`)).rows[0].s).toBeNull());
  });

  it('on SIGTERM stops between groups with exit 1 (not 0: the target is incomplete), then resumes exactly', async () => {
    const target = `cdp_rs_t_${rand()}`;
    targets.push(target);
    const into = await createDatabase(target);
    const { p, stderr, exited } = spawnRestore(into, 'restore-group-delay-ms:300');
    let exitedEarly = false;
    void exited.then(() => (exitedEarly = true));
    await waitFor(
      'the restore to commit a few groups',
      async () => {
        if (exitedEarly) throw new Error('restore finished before it could be interrupted');
        return withClient(into, async (c) => {
          const r = await c.query(
            `SELECT CASE WHEN to_regclass('_cdp_restore.cursor') IS NULL THEN NULL ELSE (SELECT transactions FROM _cdp_restore.cursor) END AS n`,
          );
          return Number(r.rows[0].n ?? 0) >= 200 ? true : undefined;
        });
      },
      300_000,
      50,
    );
    p.kill('SIGTERM');
    expect(await exited).toBe(1);
    expect(stderr()).toMatch(/restore interrupted.*run the same command again to resume/);
    // The point it names is the target's, the last committed group (not the rolled-back one's).
    const cursor = await withClient(into, async (c) => (await c.query(`SELECT commit_lsn::text AS l FROM _cdp_restore.cursor`)).rows[0].l as string);
    expect(/after commit LSN (\S+);/.exec(stderr())?.[1]).toBe(formatLsn(Number(cursor)));

    const again = await runCli(['restore', '--into', into, '--latest'], { ...env });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout.trim().split('\n').at(-1)!).resumed).toBe(true);
    expect(await content(into)).toEqual(expectedRows());
  });

  it('a first segment that fails its checks while the base arrives keeps pg_restore from running, exit 3', async () => {
    const target = `cdp_rs_t_${rand()}`;
    targets.push(target);
    const into = await createDatabase(target);
    // keys[0] is the first segment stored, a partition's first: the one the prefetch reads while
    // the base arrives (made to take up to 60 s more, in which the prefetch fails).
    const key = segmentKeys[0]!;
    const { getObject } = await import('../../../src/s3/client.js');
    const good = Buffer.from(await getObject(store, key));
    const bad = Buffer.from(good);
    bad[bad.length - 20]! ^= 0xff;
    await store.client.send(new PutObjectCommand({ Bucket: store.bucket, Key: key, Body: bad }));
    try {
      const t0 = Date.now();
      const r = await runCli(['restore', '--into', into, '--latest'], { ...env, CDP_TEST_FAULTS: 'restore-base-delay-ms:60000' });
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toMatch(/SHA-256/);
      expect(r.stderr).toContain(key.split('/').at(-1)!);
      // Stopped at once, before anything was written: no cursor, the target as it was. Before,
      // pg_restore ran to the end (hours for a large base, phase 'replay') and only then did the
      // replay meet the segment.
      expect(Date.now() - t0).toBeLessThan(45_000);
      const cursor = await withClient(into, async (c) => (await c.query(`SELECT to_regclass('_cdp_restore.cursor')::text AS t`)).rows[0].t as string | null);
      expect(cursor).toBeNull();
    } finally {
      await store.client.send(new PutObjectCommand({ Bucket: store.bucket, Key: key, Body: good }));
    }
  });

  it('on SIGTERM while the base arrives exits 1 (interrupted), not 0, and has written nothing', async () => {
    const target = `cdp_rs_t_${rand()}`;
    targets.push(target);
    const into = await createDatabase(target);
    const { p, stderr, exited } = spawnRestore(into, 'restore-base-delay-ms:120000');
    // Well inside the base's (held) arrival: start-up and the download take a few seconds.
    await waitFor('the base download to finish', async () => (stderr().includes('restore: downloading the base') ? true : undefined), 60_000, 50);
    await new Promise((r) => setTimeout(r, 3_000));
    p.kill('SIGTERM');
    expect(await exited).toBe(1);
    expect(stderr()).toMatch(/restore interrupted while loading the base: run the same command again/);
    const cursor = await withClient(into, async (c) => (await c.query(`SELECT to_regclass('_cdp_restore.cursor')::text AS t`)).rows[0].t as string | null);
    expect(cursor).toBeNull();
  });

  it('stops with exit 3 on a corrupted segment', async () => {
    const target = `cdp_rs_t_${rand()}`;
    targets.push(target);
    const into = await createDatabase(target);
    // Overwrite one segment with altered bytes behind the archive's back (write-once is bypassed
    // on purpose: this is the bit rot or tampering the SHA-256 in its name exists to catch).
    const key = segmentKeys[Math.floor(segmentKeys.length / 2)]!;
    const { getObject } = await import('../../../src/s3/client.js');
    const bytes = Buffer.from(await getObject(store, key));
    bytes[bytes.length - 20]! ^= 0xff;
    await store.client.send(new PutObjectCommand({ Bucket: store.bucket, Key: key, Body: bytes }));
    const r = await runCli(['restore', '--into', into, '--latest'], { ...env });
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/SHA-256/);
  });
});
