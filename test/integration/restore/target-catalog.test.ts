import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodedText, runAsSql } from '../../../src/restore/ddl-replay.js';
import { DEFERRED_TRIGGER_GUARD_SQL, LIVE_SESSION_SQL, TargetCatalog } from '../../../src/restore/target-catalog.js';
import { adminUrl, createDatabase, dropDatabase, rand, stackEnvironment, withClient } from './helpers.js';

// TargetCatalog against a real catalog: which types beyond the built-in scalars may travel in a
// typed array literal (a batched UPDATE's unnest, a DELETE's = ANY), and which tables are
// inheritance parents (written ONLY).

const name = `tcat_${rand()}`;
let url = '';
let cat: TargetCatalog;

beforeAll(async () => {
  stackEnvironment();
  url = await createDatabase(name);
  await withClient(url, async (c) => {
    await c.query(`CREATE SCHEMA "Odd S"`);
    await c.query(`CREATE TYPE "Odd S"."Mood" AS ENUM ('a', 'b')`);
    await c.query(`CREATE DOMAIN public.short_text AS text CHECK (length(VALUE) < 10)`);
    await c.query(`CREATE DOMAIN public.int_list AS int[]`);
    await c.query(`CREATE TYPE public.span AS RANGE (subtype = float8)`);
    await c.query(`CREATE TYPE public.pair AS (x int, y text)`);
    await c.query(`CREATE DOMAIN public.pair_d AS public.pair`);
    await c.query(`CREATE DOMAIN public.pair_dd AS public.pair_d`);
    // A base type whose array elements are delimited by ':' (as PostGIS geometry's), and a domain over it.
    await c.query(`CREATE TYPE public.colon`);
    await c.query(`CREATE FUNCTION public.colon_in(cstring) RETURNS public.colon LANGUAGE internal IMMUTABLE STRICT AS 'textin'`);
    await c.query(`CREATE FUNCTION public.colon_out(public.colon) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'textout'`);
    await c.query(`CREATE TYPE public.colon (INPUT = public.colon_in, OUTPUT = public.colon_out, LIKE = text, DELIMITER = ':')`);
    await c.query(`CREATE DOMAIN public.colon_d AS public.colon`);
    // A range over a domain whose CHECK calls a function: reading a value of the range runs it.
    await c.query(`CREATE FUNCTION public.small(float8) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RETURN $1 < 100; END $$`);
    await c.query(`CREATE DOMAIN public.small_f AS float8 CHECK (public.small(VALUE))`);
    await c.query(`CREATE TYPE public.small_span AS RANGE (subtype = public.small_f)`);
    await c.query(`CREATE ROLE ${name}_app`);
    for (const [t, col] of [
      ['r_plain', 'public.span'],
      ['r_dom', 'public.small_span'],
      ['r_dom_multi', 'public.small_span_multirange'],
      ['r_dom_arr', 'public.small_span[]'],
    ]) {
      await c.query(`CREATE TABLE public.${t} (id int PRIMARY KEY, v ${col})`);
      await c.query(`ALTER TABLE public.${t} OWNER TO ${name}_app`);
    }
    await c.query(`CREATE TABLE public.parent (id int PRIMARY KEY)`);
    await c.query(`CREATE TABLE public.child () INHERITS (public.parent)`);
    await c.query(`CREATE TABLE public.parted (id int) PARTITION BY RANGE (id)`);
    await c.query(`CREATE TABLE public.parted_1 PARTITION OF public.parted FOR VALUES FROM (0) TO (10)`);
  });
  await withClient(url, async (c) => {
    cat = new TargetCatalog(c);
    await cat.read();
  });
});

afterAll(async () => {
  await dropDatabase(name);
  await withClient(adminUrl(), (c) => c.query(`DROP ROLE IF EXISTS ${name}_app`));
});

describe('TargetCatalog', () => {
  it('names the enums, domains, ranges and multiranges whose typed array literal reads back value by value', () => {
    for (const t of ['"Odd S"."Mood"', 'public.short_text', 'public.span', 'public.span_multirange', 'int4range']) {
      expect([t, cat.arrayType(t)]).toEqual([t, true]);
    }
    // A domain over an array (an array of it would nest), composites and domains over them
    // (unnest in FROM splits them into their fields), a ':'-delimited base type and a domain over
    // it, spellings capture never writes, and built-in scalars (sql.ts commaArrayType's).
    const no = ['public.int_list', 'public.pair', 'public.pair_d', 'public.pair_dd', 'public.parent', 'public.colon', 'public.colon_d'];
    for (const t of [...no, '"Odd S".Mood', 'Odd S.Mood', '"Odd S"."Mood"[]', 'integer', 'text']) {
      expect([t, cat.arrayType(t)]).toEqual([t, false]);
    }
  });

  it("writes a table with a range or multirange over a domain as its owner (the domain's CHECK is the owner's code)", () => {
    expect(cat.runAsOwner('public', 'r_plain')).toBeUndefined();
    for (const t of ['r_dom', 'r_dom_multi', 'r_dom_arr']) expect([t, cat.runAsOwner('public', t)]).toEqual([t, `${name}_app`]);
  });

  it('knows inheritance parents, and that a partitioned table is not one', () => {
    expect(cat.inheritanceParent('public', 'parent')).toBe(true);
    expect(cat.inheritanceParent('public', 'child')).toBe(false);
    expect(cat.inheritanceParent('public', 'parted')).toBe(false);
    expect(cat.inheritanceParent('public', 'parted_1')).toBe(false);
  });
});

// A deferred trigger runs at COMMIT as the role current then: the restore's superuser, not the owner
// as which restore wrote the row. The catalog read stops the restore before any such trigger fires.
describe('deferrable triggers that fire during replay', () => {
  const db = `tcat_defer_${rand()}`;
  const role = `${db}_app`;
  let durl = '';
  const read = () => withClient(durl, (c) => new TargetCatalog(c).read());

  beforeAll(async () => {
    durl = await createDatabase(db);
    await withClient(durl, async (c) => {
      await c.query(`CREATE ROLE ${role}`);
      await c.query(`CREATE TABLE public.t (id int PRIMARY KEY); ALTER TABLE public.t OWNER TO ${role}`);
      await c.query(
        `CREATE FUNCTION public.trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$; ALTER FUNCTION public.trg() OWNER TO ${role}`,
      );
      // Not deferrable: it fires at the end of the statement, inside the write run as the owner.
      await c.query(
        `CREATE CONSTRAINT TRIGGER now AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.trg(); ALTER TABLE public.t ENABLE ALWAYS TRIGGER now`,
      );
      // Deferrable, initially immediate: a SET CONSTRAINTS in a user's code can still defer it.
      await c.query(`CREATE CONSTRAINT TRIGGER "Later" AFTER INSERT ON public.t DEFERRABLE FOR EACH ROW EXECUTE FUNCTION public.trg()`);
    });
  });
  afterAll(async () => {
    await dropDatabase(db);
    await withClient(adminUrl(), (c) => c.query(`DROP ROLE IF EXISTS ${role}`));
  });

  it('passes while the deferrable one fires on origin only; stops once it is enabled ALWAYS or REPLICA, naming it and what to do', async () => {
    await expect(read()).resolves.toBeUndefined();
    for (const mode of ['ALWAYS', 'REPLICA']) {
      await withClient(durl, (c) => c.query(`ALTER TABLE public.t ENABLE ${mode} TRIGGER "Later"`));
      const err = await read().then(
        () => undefined,
        (e: unknown) => e as { code?: string; message: string },
      );
      expect(err?.code).toBe('CDP_UNSUPPORTED');
      expect(err?.message).toContain('public.t has the deferrable trigger "Later", which fires during replay');
      expect(err?.message).toContain('ALTER TABLE public.t ENABLE TRIGGER "Later"');
    }
  });

  it("refuses it even when its function runs as its definer or a superuser owns it (either may write a table whose trigger is a user's)", async () => {
    await withClient(durl, (c) => c.query(`ALTER TABLE public.t ENABLE ALWAYS TRIGGER "Later"; ALTER FUNCTION public.trg() SECURITY DEFINER`));
    await expect(read()).rejects.toThrow(/deferrable trigger "Later"/);
    await withClient(durl, (c) => c.query(`ALTER FUNCTION public.trg() SECURITY INVOKER; ALTER FUNCTION public.trg() OWNER TO CURRENT_USER`));
    await expect(read()).rejects.toThrow(/deferrable trigger "Later"/);
    await withClient(durl, (c) => c.query(`ALTER TABLE public.t ENABLE TRIGGER "Later"`));
    await expect(read()).resolves.toBeUndefined();
  });
});

// User code run during the replay (an ALWAYS trigger of a table restore writes as its owner) tries
// to get code run at COMMIT, after the catalog was read: a deferrable trigger it makes and fires;
// the same, set back to origin through a partitioned parent after queuing the event (PostgreSQL
// checks pending events only on the table an ALTER TABLE names); a cursor WITH HOLD, filled in at
// COMMIT. The guard sent before the group's COMMIT fails the first two, runAsSql closes the cursor:
// nothing runs as the superuser.
const HOOKS: Record<string, string> = {
  'a deferrable trigger made and fired': `
    CREATE CONSTRAINT TRIGGER late AFTER INSERT ON public.t2 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.evil();
    ALTER TABLE public.t2 ENABLE ALWAYS TRIGGER late;
    INSERT INTO public.t2 VALUES (NEW.id);`,
  'the same on a partition, then set back to origin through its parent': `
    CREATE CONSTRAINT TRIGGER late AFTER INSERT ON public.pt DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.evil();
    ALTER TABLE public.pt ENABLE ALWAYS TRIGGER late;
    INSERT INTO public.pt VALUES (NEW.id);
    ALTER TABLE public.pt ENABLE TRIGGER late;`,
  'a cursor WITH HOLD': `
    EXECUTE 'DECLARE c CURSOR WITH HOLD FOR SELECT public.evil_fn()';`,
};

describe.each(Object.entries(HOOKS))('code run at COMMIT, made during the group: %s', (_label, hook) => {
  const db = `tcat_guard_${rand()}`;
  const role = `${db}_app`;
  let gurl = '';

  beforeAll(async () => {
    gurl = await createDatabase(db);
    await withClient(gurl, async (c) => {
      await c.query(
        `CREATE ROLE ${role}; CREATE TABLE public.log (who text, super bool); GRANT INSERT ON public.log TO PUBLIC; GRANT CREATE ON SCHEMA public TO ${role}`,
      );
      await c.query(`SET ROLE ${role}`);
      await c.query(`CREATE TABLE public.t (id int PRIMARY KEY); CREATE TABLE public.t2 (id int)`);
      await c.query(`CREATE TABLE public.pt (id int) PARTITION BY RANGE (id); CREATE TABLE public.pt1 PARTITION OF public.pt FOR VALUES FROM (0) TO (100)`);
      await c.query(`CREATE FUNCTION public.evil_fn() RETURNS int LANGUAGE plpgsql AS $$ BEGIN
        INSERT INTO public.log SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
        IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN EXECUTE 'ALTER ROLE ${role} SUPERUSER'; END IF;
        RETURN 1; END $$`);
      await c.query(`CREATE FUNCTION public.evil() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM public.evil_fn(); RETURN NULL; END $$`);
      await c.query(`CREATE FUNCTION public.hook() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN ${hook} RETURN NEW; END $$`);
      await c.query(
        `CREATE TRIGGER hook AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.hook(); ALTER TABLE public.t ENABLE ALWAYS TRIGGER hook`,
      );
      await c.query('RESET ROLE');
    });
  });
  afterAll(async () => {
    await dropDatabase(db);
    await withClient(adminUrl(), (c) => c.query(`DROP ROLE IF EXISTS ${role}`));
  });

  it('runs nothing as the superuser: the group fails at the guard, or the cursor is closed unfilled', async () => {
    await withClient(gurl, async (c) => {
      await c.query(LIVE_SESSION_SQL);
      await new TargetCatalog(c).read();
      await c.query('BEGIN');
      // RowWriter.emitFor: the row written as the table's owner; then what TxnGroup.end sends.
      await c.query(runAsSql(role, encodedText('INSERT INTO public.t (id) VALUES (1)')));
      await c.query(`${DEFERRED_TRIGGER_GUARD_SQL}COMMIT;`).catch((e: Error) => expect(e.message).toContain('restore stopped before COMMIT'));
      await c.query('ROLLBACK');
    });
    const after = await withClient(gurl, async (c) => ({
      log: (await c.query('SELECT * FROM public.log')).rows,
      super: (await c.query<{ s: boolean }>(`SELECT rolsuper AS s FROM pg_roles WHERE rolname = '${role}'`)).rows[0]!.s,
    }));
    expect(after).toEqual({ log: [], super: false });
  });
});
