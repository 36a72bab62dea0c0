import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareContents, compareSchemas, contentFingerprint, diffSchemaDumps, schemaDump } from './schema-compare.js';
import { createDatabase, dropDatabase, rand, withClient } from './helpers.js';

// The proof harness itself (schema-compare.ts), on real pg_dump output: the engine's own objects
// and the dump's noise are ignored, everything else is compared, and a difference is named.

const id = rand();
const a = `sc_a_${id}`;
const b = `sc_b_${id}`;
let ua = '';
let ub = '';

const USER_SCHEMA = `
CREATE TYPE mood AS ENUM ('calm', 'angry');
CREATE TABLE t (id int PRIMARY KEY, m mood DEFAULT 'calm', v text);
CREATE VIEW tv AS SELECT id, v FROM t;
CREATE MATERIALIZED VIEW tm AS SELECT count(*) AS n FROM t;
CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql AS 'SELECT x + 1';
CREATE FUNCTION f(x text) RETURNS text LANGUAGE sql AS 'SELECT x';
COMMENT ON TABLE t IS 'a table';
INSERT INTO t VALUES (1, 'angry', 'one');
REFRESH MATERIALIZED VIEW tm;
`;

beforeAll(async () => {
  [ua, ub] = await Promise.all([createDatabase(a), createDatabase(b)]);
  // Overloads created in opposite orders: their OIDs (and pg_dump's tie order) differ.
  await withClient(ua, (c) => c.query(USER_SCHEMA));
  await withClient(ub, (c) => c.query(USER_SCHEMA.replace(/(CREATE FUNCTION f\(x int\).*\n)(CREATE FUNCTION f\(x text\).*\n)/, '$2$1')));
  // The source side has the engine's objects; the restore side its leftover cursor schema.
  await withClient(ua, (c) =>
    c.query(`
      CREATE SCHEMA katya_cdp;
      COMMENT ON SCHEMA katya_cdp IS 'Katya CDP';
      CREATE TABLE katya_cdp.secret (id int PRIMARY KEY);
      CREATE FUNCTION katya_cdp.on_ddl_command_end() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
      CREATE EVENT TRIGGER katya_cdp_ddl_command_end ON ddl_command_end EXECUTE FUNCTION katya_cdp.on_ddl_command_end();
      COMMENT ON EVENT TRIGGER katya_cdp_ddl_command_end IS 'ours';
      CREATE PUBLICATION ${a} FOR ALL TABLES;
    `),
  );
  await withClient(ub, (c) => c.query(`CREATE SCHEMA _cdp_restore; CREATE TABLE _cdp_restore.cursor (x int)`));
});

afterAll(async () => {
  await dropDatabase(a);
  await dropDatabase(b);
});

describe('schema and content comparison harness', () => {
  it('ignores the engine objects, \\restrict keys, SET lines and tie order; names every other difference', async () => {
    const dump = await schemaDump(ua);
    // The noise is really there in the raw dump (else the normalisation proves nothing).
    expect(dump).toMatch(/^SET /m);
    expect(await compareSchemas(ua, ub)).toBeNull();
    expect(diffSchemaDumps(`\\restrict abc\n${dump}\n\\unrestrict abc\n`, dump)).toBeNull();

    await withClient(ub, (c) =>
      c.query(`ALTER TABLE t ALTER COLUMN m SET DEFAULT 'angry'; CREATE INDEX t_v ON t (v); ALTER TYPE mood RENAME VALUE 'calm' TO 'serene'`),
    );
    const diff = await compareSchemas(ua, ub);
    expect(diff).toContain('differs: TABLE public.t (owner postgres)');
    expect(diff).toContain(`   -     m public.mood DEFAULT 'calm'::public.mood,\n   +     m public.mood DEFAULT 'angry'::public.mood,`);
    expect(diff).toContain('only in the restore: INDEX public.t_v');
    expect(diff).toContain('differs: TYPE public.mood');
  });

  it('compares whole contents of tables and materialized views, with the differing rows', async () => {
    const before = await withClient(ua, contentFingerprint);
    expect(Object.keys(before)).toEqual(['public.t', 'public.tm (materialized view)']);
    const rows = { 'public.t': ['(1,angry,one)'] };
    expect(await compareContents(before, ub)).toBeNull();
    await withClient(ub, (c) => c.query(`UPDATE t SET v = 'uno'`));
    const diff = await compareContents(before, ub, rows);
    expect(diff).toContain('differs: public.t');
    expect(diff).toContain('   - (1,angry,one)');
    expect(diff).toContain('   + (1,angry,uno)');
    expect(diff).not.toContain('public.tm');
  });
});
