import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InvisibleNotice } from '../../../src/capture/catalog-read.js';
import { CATALOG_SESSION_OPTIONS, TypeNames, type TypeNameWarning } from '../../../src/capture/type-names.js';
import type { Relation, Type } from '../../../src/pg/pgoutput.js';
import { createDatabase, dropDatabase, rand, withClient } from '../restore/helpers.js';

// Capture's column type names against a real catalog (issue 9): a type renamed, moved or its schema
// renamed must show its new name for the changes after the DDL (pgoutput does not resend the
// Relation), and names from a catalog that is already past the change (decoding lags the source)
// are either corrected from pgoutput's historic Type message or reported.

const db = `tn_${rand()}`;
let url = '';
let catalog: pg.Client;

/** A Relation message as pgoutput would send it for table `name`'s columns (read from the catalog). */
async function relationOf(name: string): Promise<Relation> {
  const r = await catalog.query<{ oid: number; attname: string; atttypid: number; atttypmod: number }>(
    `SELECT c.oid::int AS oid, a.attname::text AS attname, a.atttypid::int AS atttypid, a.atttypmod
       FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
      WHERE c.relname = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [name],
  );
  return {
    tag: 'relation',
    oid: r.rows[0]!.oid,
    schema: 'public',
    name,
    replicaIdentity: 'd',
    columns: r.rows.map((x, i) => ({ flags: i === 0 ? 1 : 0, name: x.attname, typeOid: x.atttypid, typmod: x.atttypmod })),
  };
}

/** Runs `sql` in its own transaction on the source and returns that transaction's xid. */
async function ddl(sql: string): Promise<number> {
  return withClient(url, async (c) => {
    await c.query('BEGIN');
    const x = await c.query<{ x: string }>('SELECT txid_current()::text AS x');
    await c.query(sql);
    await c.query('COMMIT');
    // 64-bit txid -> the 32-bit xid pgoutput's Begin carries.
    return Number(BigInt(x.rows[0]!.x) & 0xffffffffn);
  });
}

/** Runs `sql` in a transaction left open on its own connection; returns the connection and the transaction's 32-bit xid. */
async function openTransaction(sql: string): Promise<{ src: pg.Client; xid: number }> {
  const src = new pg.Client({ connectionString: url });
  await src.connect();
  await src.query('BEGIN');
  const x = await src.query<{ x: string }>('SELECT txid_current()::text AS x');
  await src.query(sql);
  return { src, xid: Number(BigInt(x.rows[0]!.x) & 0xffffffffn) };
}

beforeAll(async () => {
  url = await createDatabase(db);
  await withClient(url, async (c) => {
    await c.query(`CREATE TYPE mood AS ENUM ('calm', 'angry')`);
    await c.query(`CREATE DOMAIN short_text AS text CHECK (length(VALUE) < 10)`);
    await c.query(`CREATE SCHEMA lib`);
    await c.query(`CREATE TYPE lib.colour AS ENUM ('red')`);
    await c.query(`CREATE TABLE t (id int PRIMARY KEY, m mood, ms mood[], d short_text, c lib.colour, n numeric(10,2))`);
  });
  const u = new URL(url);
  catalog = new pg.Client({ connectionString: u.toString(), options: CATALOG_SESSION_OPTIONS });
  await catalog.connect();
});

afterAll(async () => {
  await catalog?.end().catch(() => {});
  await dropDatabase(db);
});

describe('capture type names follow renames', () => {
  it('type, domain and schema renames and SET SCHEMA reach the known relations at the DDL event, exactly when decoded in time', async () => {
    const warnings: TypeNameWarning[] = [];
    const types = new TypeNames(catalog, (w) => warnings.push(w));
    const rel = await relationOf('t');
    expect(await types.relation(rel)).toEqual(['integer', 'public.mood', 'public.mood[]', 'public.short_text', 'lib.colour', 'numeric(10,2)']);

    // Nothing renamed: a DDL event changes nothing.
    expect(await types.afterDdl(await ddl(`CREATE TABLE other (id int PRIMARY KEY)`))).toEqual([]);

    let xid = await ddl(`ALTER TYPE mood RENAME TO feeling`);
    let changed = await types.afterDdl(xid);
    expect(changed.map(([r, n]) => [r.name, n])).toEqual([
      ['t', ['integer', 'public.feeling', 'public.feeling[]', 'public.short_text', 'lib.colour', 'numeric(10,2)']],
    ]);

    xid = await ddl(`ALTER DOMAIN short_text RENAME TO tiny_text`);
    changed = await types.afterDdl(xid);
    expect(changed[0]![1][3]).toBe('public.tiny_text');

    xid = await ddl(`ALTER SCHEMA lib RENAME TO library`);
    changed = await types.afterDdl(xid);
    expect(changed[0]![1][4]).toBe('library.colour');

    xid = await ddl(`CREATE SCHEMA app; ALTER TYPE feeling SET SCHEMA app`);
    changed = await types.afterDdl(xid);
    expect(changed[0]![1].slice(1, 3)).toEqual(['app.feeling', 'app.feeling[]']);
    // Every rename above was decoded by its own transaction's DDL event: nothing uncertain.
    expect(warnings).toEqual([]);
  });

  it('a catalog already past the change: the historic Type message wins at a Relation; a DDL event reports the name it cannot be sure of', async () => {
    await withClient(url, (c) => c.query(`CREATE TYPE size AS ENUM ('s'); CREATE TABLE u (id int PRIMARY KEY, s size)`));
    const warnings: TypeNameWarning[] = [];
    const types = new TypeNames(catalog, (w) => warnings.push(w));
    const rel = await relationOf('u');
    const sizeOid = rel.columns[1]!.typeOid;
    // The source renamed twice (size -> dimension, rows, dimension -> extent) before capture decodes the first rename.
    const first = await ddl(`ALTER TYPE size RENAME TO dimension`);
    await ddl(`ALTER TYPE dimension RENAME TO extent`);

    // Decoding a Relation message sent between the two renames: pgoutput's Type message says `dimension` (historic snapshot).
    const historic: Type = { tag: 'type', oid: sizeOid, schema: 'public', name: 'dimension' };
    types.noteType(historic);
    expect(await types.relation(rel)).toEqual(['integer', '"public"."dimension"']);

    // Decoding the first rename's DDL event: the catalog says `extent`, written by a later transaction: reported.
    const changed = await types.afterDdl(first);
    expect(changed[0]![1][1]).toBe('public.extent');
    expect(warnings).toEqual([{ relation: 'public.u', column: 's', before: '"public"."dimension"', after: 'public.extent', xid: first }]);
  });

  it('a DDL event decoded before its transaction is visible (commit record flushed, not yet out of the running set): the names wait for it', async () => {
    await withClient(url, (c) => c.query(`CREATE TYPE tone AS ENUM ('low'); CREATE TABLE v (id int PRIMARY KEY, t tone, ts tone[])`));
    const types = new TypeNames(catalog);
    const rel = await relationOf('v');
    expect(await types.relation(rel)).toEqual(['integer', 'public.tone', 'public.tone[]']);
    // The rename's transaction is still open while its DDL event is "decoded": the state capture
    // sees between PostgreSQL flushing a commit record and making the transaction visible.
    const { src, xid } = await openTransaction('ALTER TYPE tone RENAME TO pitch');
    try {
      const pending = types.afterDdl(xid);
      let settled = false;
      void pending.then(() => (settled = true));
      await new Promise((r) => setTimeout(r, 300));
      expect(settled, 'afterDdl returned while the DDL transaction was not visible').toBe(false);
      await src.query('COMMIT');
      const changed = await pending;
      expect(changed.map(([r, n]) => [r.name, n])).toEqual([['v', ['integer', 'public.pitch', 'public.pitch[]']]]);
    } finally {
      await src.end();
    }
  });

  it('a transaction waiting for this very capture (a synchronous standby): the lookup gives up, reports it, and does not keep the names it read', async () => {
    await withClient(url, (c) => c.query(`CREATE TYPE hue AS ENUM ('red'); CREATE TABLE w (id int PRIMARY KEY, h hue)`));
    const notices: InvisibleNotice[] = [];
    let asked = 0;
    const syncStandby = async () => {
      asked++;
      return true;
    };
    const types = new TypeNames(catalog, () => {}, { syncStandby, invisible: (w) => notices.push(w) });
    const rel = await relationOf('w');
    expect(await types.relation(rel)).toEqual(['integer', 'public.hue']);
    const { src, xid } = await openTransaction('ALTER TYPE hue RENAME TO shade');
    try {
      // Not visible, and the transaction (as the seam says) waits for us: give up, names as read.
      expect(await types.afterDdl(xid)).toEqual([]);
      expect(asked).toBeGreaterThan(0);
      expect(notices).toHaveLength(1);
      expect(notices[0]).toMatchObject({ xid, gaveUp: true });
      expect(notices[0]!.waitedMs).toBeGreaterThanOrEqual(1000);
      await src.query('COMMIT');
      // The names read without the transaction were not kept: the next lookup reads the catalog again.
      expect(await types.relation(rel)).toEqual(['integer', 'public.shade']);
    } finally {
      await src.query('ROLLBACK').catch(() => {});
      await src.end();
    }
  });

  it('names built from the catalog rows equal format_type for user-defined types: enums, domains, composites, ranges, arrays, quoted names', async () => {
    await withClient(url, (c) =>
      c.query(`CREATE SCHEMA "My Schema";
        CREATE TYPE "My Schema"."Weird""Q" AS ENUM ('a');
        CREATE TYPE "user" AS (a int, b text);
        CREATE TYPE floatrange AS RANGE (subtype = float8);
        CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
        CREATE TABLE shapes (id int PRIMARY KEY, q "My Schema"."Weird""Q", qa "My Schema"."Weird""Q"[], u "user", ua "user"[],
                             r floatrange, ra floatrange[], mr floatmultirange, p posint, pa posint[])`),
    );
    const rel = await relationOf('shapes');
    const names = await new TypeNames(catalog).relation(rel);
    const expected = await catalog.query<{ n: string }>(
      `SELECT format_type(a.atttypid, NULL) AS n FROM pg_attribute a WHERE a.attrelid = 'public.shapes'::regclass AND a.attnum > 0 ORDER BY a.attnum`,
    );
    expect(names).toEqual(expected.rows.map((r) => r.n));
    expect(names[1]).toBe('"My Schema"."Weird""Q"');
  });
});
