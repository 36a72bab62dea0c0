import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePgoutput } from '../../../src/pg/pgoutput.js';
import { takeBaseBackup } from '../../../src/base/basebackup.js';
import { downloadBase, listBaseManifests, restoreBase } from '../../../src/restore/base-restore.js';
import { createStore } from '../../../src/s3/client.js';
import { archiveRoot } from '../../../src/config/config.js';
import { formatLsn } from '../../../src/util/lsn.js';
import { createDatabase, dropDatabase, rand, silentLog, testConfig, testContext, withClient } from '../restore/helpers.js';
import { rm } from 'node:fs/promises';
import { loadKeyring } from '../../../src/archive/crypto.js';
import { getObject } from '../../../src/s3/client.js';

// The base's LSN semantics, checked rather than trusted: while transactions commit concurrently,
// the dump taken at the exported snapshot must contain exactly the transactions whose commit LSN
// is < the manifest's lsn, and a logical slot (created before everything) sees the others at
// commit LSN >= lsn. Commit LSNs come from pgoutput Begin.final_lsn, as capture stamps them.

const id = rand();
const src = `cdp_bb_src_${id}`;
const dst = `cdp_bb_dst_${id}`;
const slot = `cdp_bb_${id}`;

describe('basebackup', () => {
  let srcUrl: string;
  let dstUrl: string;
  beforeAll(async () => {
    srcUrl = await createDatabase(src);
    dstUrl = await createDatabase(dst);
    await withClient(srcUrl, async (c) => {
      await c.query('CREATE TABLE t (id int PRIMARY KEY, note text)');
      await c.query('CREATE PUBLICATION bb FOR TABLE t');
      await c.query(`SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`);
    });
  });
  afterAll(async () => {
    await withClient(srcUrl, (c) => c.query(`SELECT pg_drop_replication_slot('${slot}')`)).catch(() => {});
    await dropDatabase(src);
    await dropDatabase(dst);
  });

  it('dump holds exactly the transactions committed before its LSN', async () => {
    const cfg = testConfig({ CDP_SOURCE_URL: srcUrl, CDP_S3_PREFIX: `test-bb-${id}` });
    // A writer commits one row per transaction, as fast as it can, during the backup.
    let stop = false;
    let n = 0;
    const writer = withClient(srcUrl, async (c) => {
      while (!stop) {
        n++;
        await c.query('INSERT INTO t VALUES ($1, $2)', [n, `row ${n}`]);
      }
    });
    await new Promise((r) => setTimeout(r, 300));
    let manifest;
    try {
      manifest = await takeBaseBackup(testContext(cfg));
    } finally {
      await new Promise((r) => setTimeout(r, 300));
      stop = true;
      await writer;
    }
    expect(manifest.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(manifest.size).toBeGreaterThan(0);
    expect(manifest.serverVersionNum).toBeGreaterThanOrEqual(150000);

    const store = createStore(cfg, silentLog);
    const listed = await listBaseManifests(store, archiveRoot(cfg), undefined);
    expect(listed.map((b) => b.lsn)).toEqual([manifest.lsn]);

    // Load the dump into a fresh database.
    const { dir, file } = await downloadBase(store, listed[0]!, undefined);
    try {
      await restoreBase({ file, dir, into: dstUrl, jobs: 2, pgRestorePath: 'pg_restore', signal: new AbortController().signal });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const inDump = await withClient(dstUrl, async (c) => (await c.query('SELECT id FROM t ORDER BY id')).rows.map((r) => r.id as number));

    // Every committed row with its commit LSN, from the slot created before the writer started.
    const commitLsnOf = new Map<number, number>();
    await withClient(srcUrl, async (c) => {
      const r = await c.query(`SELECT data FROM pg_logical_slot_peek_binary_changes('${slot}', NULL, NULL, 'proto_version', '1', 'publication_names', 'bb')`);
      let finalLsn = 0;
      for (const row of r.rows) {
        const m = decodePgoutput(row.data as Buffer);
        if (m.tag === 'begin') finalLsn = m.finalLsn;
        if (m.tag === 'insert') commitLsnOf.set(Number(m.new.values[0]), finalLsn);
      }
    });
    const all = [...commitLsnOf.keys()].sort((a, b) => a - b);
    expect(all.length).toBeGreaterThan(inDump.length);
    const before = all.filter((i) => commitLsnOf.get(i)! < manifest.lsn);
    const after = all.filter((i) => commitLsnOf.get(i)! >= manifest.lsn);
    expect(before.length).toBeGreaterThan(0);
    expect(after.length).toBeGreaterThan(0);
    // The dump is exactly the "before" set; replaying "after" (commit LSN >= lsn) completes it.
    expect(inDump).toEqual(before);
    expect(silentLog.level).toBeDefined();
    expect(formatLsn(manifest.lsn)).toBe(manifest.lsnText);
  });

  it('encrypts the dump with the archive keyring when configured, and refuses a wrong key', async () => {
    process.env.CDP_TEST_BASE_KEY = 'ab'.repeat(32);
    process.env.CDP_TEST_WRONG_KEY = 'cd'.repeat(32);
    const cfg = testConfig({ CDP_SOURCE_URL: srcUrl, CDP_S3_PREFIX: `test-bb-enc-${id}`, CDP_ENCRYPTION_KEY_ENV: 'CDP_TEST_BASE_KEY' });
    const manifest = await takeBaseBackup(testContext(cfg));
    expect(manifest.encryption?.keyId).toMatch(/^[0-9a-f]{16}$/);
    const store = createStore(cfg, silentLog);
    // Stored bytes are not a pg_dump archive ("PGDMP" magic) in clear.
    const stored = await getObject(store, manifest.key);
    expect(stored.subarray(0, 5).toString('latin1')).not.toBe('PGDMP');
    const target = `${dst}_enc`;
    const url = await createDatabase(target);
    try {
      const { dir, file } = await downloadBase(store, manifest, loadKeyring(cfg));
      try {
        await restoreBase({ file, dir, into: url, jobs: 1, pgRestorePath: 'pg_restore', signal: new AbortController().signal });
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
      const n = await withClient(url, async (c) => (await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n as number);
      const m = await withClient(srcUrl, async (c) => (await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n as number);
      expect(n).toBe(m);
      const wrong = testConfig({ CDP_SOURCE_URL: srcUrl, CDP_S3_PREFIX: `test-bb-enc-${id}`, CDP_ENCRYPTION_KEY_ENV: 'CDP_TEST_WRONG_KEY' });
      await expect(downloadBase(store, manifest, loadKeyring(wrong))).rejects.toThrow(/not in the configured keyring/);
    } finally {
      await dropDatabase(target);
    }
  });
});
