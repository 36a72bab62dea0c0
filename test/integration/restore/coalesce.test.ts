import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../../src/util/lsn.js';
import {
  createDatabase,
  dropDatabase,
  fingerprint,
  pipelineEnv,
  rand,
  restorableLsn,
  runCli,
  stackEnvironment,
  startRun,
  waitFor,
  withClient,
} from './helpers.js';

// Net effect per key across source transactions (coalesce.ts): a target transaction spans many
// source transactions while its buffer holds rows, and each key's changes fold into one. These
// are the sequences where folding wrongly would show, through the whole pipeline (setup, run,
// restore) so the events are exactly what capture decodes, each spread over several source
// transactions of one window; every restore ends with whole tables equal to the source's.
//   - a key change (UPDATE id) then an insert of the old key, and back
//   - a swap of a second unique index's values (such a table is never reordered)
//   - an unchanged TOAST value ('u' in pgoutput) after an insert in the same window
//   - insert+delete, delete+insert, update+delete, update+update of other columns
//   - TRUNCATE in the middle of a window; a REPLICA IDENTITY FULL table with duplicate rows
//   - a partitioned table whose rows move between partitions
//   - a table with an ALWAYS trigger (user code: every change kept, run as its owner)
// Restores to a point inside the window (--lsn) must stop exactly there too. The same archive is
// restored again with a load kept past the window (restore.coalesceMaxChanges raised; RowWriter
// retainLoads): a 25,000-row load, whose later updates and deletes fold into its rows while the
// sequences above run through the same buffer.

const name = `coal_${rand()}`;
let url = '';
let env: Record<string, string> = {};
let run: ChildProcess | undefined;
const restored: string[] = [];

beforeAll(async () => {
  stackEnvironment();
  url = await createDatabase(name);
  env = pipelineEnv(name, url, 'test-coalesce');
  await withClient(url, async (c) => {
    await c.query(`CREATE TABLE k (id int PRIMARY KEY, v text NOT NULL)`);
    await c.query(`CREATE TABLE u (id int PRIMARY KEY, email text NOT NULL UNIQUE, v int NOT NULL)`);
    await c.query(`CREATE TABLE big (id int PRIMARY KEY, n int NOT NULL, doc text NOT NULL)`);
    await c.query(`ALTER TABLE big ALTER doc SET STORAGE EXTERNAL`); // out of line, uncompressed: 'u' on updates
    await c.query(`CREATE TABLE f (x int, tag text)`);
    await c.query(`ALTER TABLE f REPLICA IDENTITY FULL`);
    await c.query(`CREATE TABLE p (id int NOT NULL, region int NOT NULL, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`);
    await c.query(`CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1)`);
    await c.query(`CREATE TABLE p2 PARTITION OF p FOR VALUES IN (2)`);
    await c.query(`CREATE TABLE audited (id int PRIMARY KEY, v int NOT NULL)`);
    await c.query(`CREATE TABLE audit (seq bigserial PRIMARY KEY, what text NOT NULL)`);
    await c.query(`CREATE TABLE load (id int PRIMARY KEY, v text NOT NULL)`);
    await c.query(`CREATE FUNCTION audit_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE public.audited SET v = v WHERE false; RETURN NEW; END $$`);
    await c.query(`CREATE TRIGGER audited_t BEFORE INSERT OR UPDATE ON audited FOR EACH ROW EXECUTE FUNCTION audit_fn()`);
    await c.query(`ALTER TABLE audited ENABLE ALWAYS TRIGGER audited_t`);
    await c.query(`INSERT INTO k SELECT g, 'base' || g FROM generate_series(1, 50) g`);
    await c.query(`INSERT INTO u VALUES (1, 'a', 0), (2, 'b', 0), (3, 'c', 0)`);
    await c.query(`INSERT INTO f VALUES (1, 'a'), (1, 'a'), (2, 'b')`);
  });
});

afterAll(async () => {
  if (run && run.exitCode === null) run.kill('SIGKILL');
  await runCli(['status'], env).catch(() => {});
  await dropDatabase(name);
  for (const d of restored) await dropDatabase(d);
});

async function restoreInto(args: string[], extraEnv: Record<string, string> = {}): Promise<string> {
  const db = `${name}_r${restored.length}`;
  restored.push(db);
  const into = await createDatabase(db);
  const r = await runCli(['restore', '--into', into, ...args], { ...env, ...extraEnv });
  expect(r.code, r.stderr).toBe(0);
  return into;
}

describe('restore folds each key to its net effect without changing any table', () => {
  it('key changes, unique swaps, unchanged TOAST, TRUNCATE, FULL identity, partitions, triggers: whole tables equal the source at the end and mid-window', async () => {
    const setup = await runCli(['setup'], env);
    expect(setup.code, setup.stderr).toBe(0);
    run = startRun(env);
    const doc = (n: number) => Array.from({ length: 400 }, (_, i) => `${n}:${i}:${(n * 7919 + i * 104729) % 1000003}`).join(',');
    const { mid, end, midContent } = await withClient(url, async (c) => {
      const tx = async (...sql: string[]) => {
        await c.query('BEGIN');
        for (const s of sql) await c.query(s);
        await c.query('COMMIT');
      };
      // A load, then updates and deletes of its rows in later transactions (kept: they fold).
      await tx(`INSERT INTO load SELECT g, 'l' || g FROM generate_series(1, 25000) g`);
      await tx(`UPDATE load SET v = v || '+' WHERE id % 5 = 0`);
      await tx(`DELETE FROM load WHERE id > 20000`, `UPDATE load SET v = 'again' WHERE id = 10`);
      // Key change, then the old key inserted again, then moved back over a deleted one.
      await tx(`UPDATE k SET id = 1001 WHERE id = 1`);
      await tx(`INSERT INTO k VALUES (1, 'new one')`);
      await tx(`UPDATE k SET v = 'moved' WHERE id = 1001`, `DELETE FROM k WHERE id = 2`);
      await tx(`UPDATE k SET id = 2 WHERE id = 1001`);
      await tx(`INSERT INTO k VALUES (2000, 'x')`, `UPDATE k SET v = 'y' WHERE id = 2000`);
      await tx(`DELETE FROM k WHERE id = 2000`, `INSERT INTO k VALUES (2000, 'again')`);
      await tx(`INSERT INTO k VALUES (2001, 'gone')`);
      await tx(`DELETE FROM k WHERE id = 2001`);
      await tx(`UPDATE k SET v = 'u1' WHERE id = 3`);
      await tx(`DELETE FROM k WHERE id = 3`);
      // A swap of a second unique index's values, across transactions and inside one.
      await tx(`UPDATE u SET email = 'tmp' WHERE id = 1`, `UPDATE u SET email = 'a' WHERE id = 2`);
      await tx(`UPDATE u SET email = 'b' WHERE id = 1`);
      await tx(`INSERT INTO u VALUES (4, 'd', 1)`, `UPDATE u SET email = 'e', v = 2 WHERE id = 4`);
      // TOAST: inserted, then another column updated (pgoutput sends the doc as unchanged).
      await tx(`INSERT INTO big VALUES (1, 0, '${doc(1)}'), (2, 0, '${doc(2)}')`);
      await tx(`UPDATE big SET n = 1 WHERE id = 1`);
      await tx(`UPDATE big SET n = 2 WHERE id = 1`, `UPDATE big SET n = 5 WHERE id = 2`);
      const midLsn = (await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l as string;
      const snapshot = await fingerprint(c);
      await tx(`UPDATE big SET doc = 'short now' WHERE id = 2`);
      await tx(`INSERT INTO big VALUES (3, 0, '${doc(3)}')`, `UPDATE big SET n = 3 WHERE id = 3`);
      // TRUNCATE in the middle of a window.
      await tx(`INSERT INTO k VALUES (3000, 'before truncate')`);
      await tx(`UPDATE k SET v = 'still before' WHERE id = 3000`);
      await tx(`TRUNCATE k`);
      await tx(`INSERT INTO k VALUES (3000, 'after truncate'), (1, 'one')`);
      await tx(`UPDATE k SET v = 'after, updated' WHERE id = 3000`);
      // REPLICA IDENTITY FULL, duplicate rows: one of two changed, one deleted.
      await tx(`UPDATE f SET tag = 'one of two' WHERE ctid = (SELECT min(ctid) FROM f WHERE x = 1)`);
      await tx(`DELETE FROM f WHERE ctid = (SELECT min(ctid) FROM f WHERE x = 1 AND tag = 'a')`);
      await tx(`INSERT INTO f VALUES (1, 'a')`);
      // Partitions: a row moves to the other partition and back.
      await tx(`INSERT INTO p VALUES (1, 1, 'a'), (2, 1, 'b')`);
      await tx(`UPDATE p SET region = 2 WHERE id = 1`);
      await tx(`UPDATE p SET region = 1, v = 'back' WHERE id = 1`, `UPDATE p SET v = 'b2' WHERE id = 2`);
      await tx(`DELETE FROM p WHERE id = 2`, `INSERT INTO p VALUES (2, 2, 'reborn')`);
      // A table whose writes run a trigger on the target too (ALWAYS): every change, in order.
      await tx(`INSERT INTO audited VALUES (1, 1)`);
      await tx(`UPDATE audited SET v = 2 WHERE id = 1`);
      const endLsn = (await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l as string;
      return { mid: midLsn, end: endLsn, midContent: snapshot };
    });
    await waitFor(`restorable point past ${end}`, async () => ((await restorableLsn(env)) ?? -1) >= parseLsn(end));

    const latest = await restoreInto(['--latest']);
    const [a, b] = await Promise.all([withClient(url, fingerprint), withClient(latest, fingerprint)]);
    expect(b).toEqual(a);
    const rows = (u: string, sql: string) => withClient(u, async (c) => (await c.query(sql)).rows);
    for (const sql of [
      'SELECT * FROM k ORDER BY id',
      'SELECT * FROM u ORDER BY id',
      'SELECT id, n, md5(doc) FROM big ORDER BY id',
      'SELECT * FROM p ORDER BY id',
      'SELECT x, tag FROM f ORDER BY 1, 2',
    ]) {
      expect(await rows(latest, sql), sql).toEqual(await rows(url, sql));
    }

    const atMid = await restoreInto(['--lsn', mid]);
    expect(await withClient(atMid, fingerprint)).toEqual(midContent);

    // A load kept past the window: the same tables, and the target never updated or deleted a row
    // of the load (the default restore above did: its window wrote the load out first).
    const keep = { CDP_RESTORE_COALESCE_MAX_CHANGES: '5000000', CDP_RESTORE_COALESCE_MAX_BYTES: String(512 * 1024 * 1024) };
    const kept = await restoreInto(['--latest'], keep);
    expect(await withClient(kept, fingerprint)).toEqual(a);
    for (const sql of ['SELECT * FROM k ORDER BY id', 'SELECT * FROM load ORDER BY id']) expect(await rows(kept, sql), sql).toEqual(await rows(url, sql));
    // Table statistics reach pg_stat_user_tables when the restore's session ends (it has).
    const writes = (u: string) =>
      rows(u, `SELECT n_tup_ins::int AS ins, n_tup_upd::int AS upd, n_tup_del::int AS del FROM pg_stat_user_tables WHERE relname = 'load'`);
    expect(await writes(kept)).toEqual([{ ins: 20000, upd: 0, del: 0 }]);
    expect((await writes(latest))[0]).toMatchObject({ ins: 25000, del: 5000 });
    const keptMid = await restoreInto(['--lsn', mid], keep);
    expect(await withClient(keptMid, fingerprint)).toEqual(midContent);
  }, 300_000);
});
