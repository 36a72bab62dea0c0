import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadKeyring } from '../../../src/archive/crypto.js';
import { downloadBase, listBaseManifests, restoreBase } from '../../../src/restore/base-restore.js';
import { createStore } from '../../../src/s3/client.js';
import { parseLsn } from '../../../src/util/lsn.js';
import { compareSchemas, schemaDump } from './schema-compare.js';
import {
  adminUrl,
  createDatabase,
  dropDatabase,
  fingerprint,
  pipelineEnv,
  rand,
  restorableLsn,
  runCli,
  silentLog,
  stackEnvironment,
  startRun,
  testConfig,
  waitFor,
  withClient,
} from './helpers.js';

// Issue 13 (replay trusts the stream) and issue 9 (schema changes) through the whole pipeline:
// setup, run, restore --latest into a fresh database of the same cluster, then whole-table
// contents compared. Every case here failed before DDL capture v2 (ddl-capture.sql, ddl-replay.ts):
// - a forged 'cdp.ddl' message written by a role with no privilege became DDL run by restore;
// - a harmless DDL and a DO block that acts only as a superuser, in one query string, replayed as a
//   whole by the superuser restore role;
// - SET katya_cdp.skip = on hid DDL from capture;
// - DDL written under standard_conforming_strings = off replayed with it on (failure, or injection);
// - ALTER TYPE ... ADD VALUE then used by a later transaction: "unsafe use of new value";
// - a query string with DDL and DML replayed its DML a second time;
// - ADD COLUMN ... DEFAULT now() / a TimeZone-dependent literal re-evaluated at restore time.

const name = `ddltrust_${rand()}`;
const restored = `${name}_r`;
const app = `app_${rand()}`;
const intruder = `intruder_${rand()}`;
let url = '';
let env: Record<string, string> = {};
let run: ChildProcess | undefined;
let runLog = '';

function roleUrl(role: string): string {
  const u = new URL(url);
  u.username = role;
  return u.toString();
}

async function asRole<T>(role: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: roleUrl(role) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  stackEnvironment();
  url = await createDatabase(name);
  env = pipelineEnv(name, url, 'test-ddltrust');
  await withClient(adminUrl(), async (c) => {
    await c.query(`CREATE ROLE ${app} LOGIN NOSUPERUSER`);
    await c.query(`CREATE ROLE ${intruder} LOGIN NOSUPERUSER`);
  });
  await withClient(url, async (c) => {
    await c.query(`CREATE SCHEMA appdata AUTHORIZATION ${app}`);
    await c.query(`GRANT CREATE ON SCHEMA public TO ${app}`);
    await c.query(`GRANT CREATE ON DATABASE ${name} TO ${app}`);
    await c.query(`CREATE TABLE appdata.t (id int PRIMARY KEY, v text)`);
    await c.query(`ALTER TABLE appdata.t OWNER TO ${app}`);
    await c.query(`INSERT INTO appdata.t VALUES (1, 'a'), (2, 'b')`);
  });
});

afterAll(async () => {
  if (run && run.exitCode === null) run.kill('SIGKILL');
  await dropDatabase(name);
  await dropDatabase(restored);
  await withClient(adminUrl(), async (c) => {
    for (const r of [app, intruder]) await c.query(`DROP ROLE IF EXISTS ${r}`).catch(() => {});
  });
});

describe('DDL replay trusts nothing but the engine and runs with no more privilege than on the source', () => {
  it('forged messages, a superuser-only DO block, the skip switch, backslash escapes, enums, mixed DDL+DML, session-dependent defaults', async () => {
    const setup = await runCli(['setup'], env);
    expect(setup.code, setup.stderr).toBe(0);
    run = startRun(env);
    run.stderr?.on('data', (d: Buffer) => (runLog += d.toString()));

    // 1. Forged messages from a role with no privilege: each would otherwise be DDL run by restore.
    await asRole(intruder, async (c) => {
      // A temporary type shadowing pg_catalog's text: the signing trigger runs SECURITY DEFINER and
      // must not resolve its own types through the caller's pg_temp (that would run this CHECK
      // as the setup role). Restore must not create it in its own session either.
      await c.query(
        `CREATE FUNCTION pg_temp.p(t pg_catalog.text) RETURNS bool LANGUAGE plpgsql AS $f$
         BEGIN
           IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
             EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', '${intruder}');
           END IF;
           RETURN true;
         END $f$`,
      );
      await c.query(`CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.p(VALUE))`);
      await c.query(`CREATE TEMP TABLE scratch (x pg_catalog.int4)`);
      await c.query(`SELECT pg_logical_emit_message(true, 'cdp.ddl', '{"command": "CREATE TABLE public.pwned_plain ()", "tag": "CREATE TABLE"}')`);
      const body = JSON.stringify({ v: 2, command: 'CREATE TABLE public.pwned_v2 ()', tag: 'CREATE TABLE', seq: 1, role: 'postgres', roleVerified: true });
      await c.query(`SELECT pg_logical_emit_message(true, 'cdp.ddl', $1)`, [JSON.stringify({ body, mac: 'a'.repeat(64) })]);
      await c.query(`SELECT pg_logical_emit_message(true, 'cdp.sequences', '{"public.nosuch": 999999}')`);
      // The signing functions refuse to run but from their own event trigger.
      // The signing code has no entry point: it is the body of event trigger functions.
      for (const fn of ['on_ddl_command_end', 'on_sql_drop', 'on_table_rewrite']) {
        await expect(c.query(`SELECT katya_cdp.${fn}()`)).rejects.toThrow(/trigger functions can only be called as triggers/);
      }
      // note_invoker can only name a role the caller may act as; outside a DDL command it refuses.
      await expect(c.query(`SELECT katya_cdp.note_invoker('postgres', 'public')`)).rejects.toThrow(/event trigger/);
      // Nor can the per-transaction state be written: it is not a GUC any user could set.
      await expect(c.query(`INSERT INTO katya_cdp.ddl_state (pid, qkey, n) VALUES (pg_backend_pid(), 'x', 5)`)).rejects.toThrow(/permission denied/);
      // The key is not readable.
      await expect(c.query(`SELECT * FROM katya_cdp.secret`)).rejects.toThrow(/permission denied/);
    });

    // 2. One query string: a harmless DDL, then a DO block that acts only when run by a superuser.
    await asRole(app, async (c) => {
      await c.query(
        `ALTER TABLE appdata.t ADD COLUMN note text;
         DO $$ BEGIN
           IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
             CREATE TABLE public.escalated (x int);
             EXECUTE format('ALTER ROLE %I SUPERUSER', session_user);
           END IF;
         END $$;`,
      );
      // 2b. Code of the user's that replay runs (a CHECK validated by the DDL, then called for every
      // row restore writes) tries to take the restore's superuser rights, and leaves a session
      // setting behind that would garble every later value.
      await c.query(
        `CREATE FUNCTION appdata.ok(int) RETURNS bool LANGUAGE plpgsql AS $f$
         BEGIN
           IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user) THEN
             BEGIN
               RESET ROLE;
               EXECUTE format('ALTER ROLE %I SUPERUSER', '${app}');
             EXCEPTION WHEN OTHERS THEN NULL;
             END;
             BEGIN
               EXECUTE format('ALTER ROLE %I SUPERUSER', '${app}');
             EXCEPTION WHEN OTHERS THEN NULL;
             END;
             PERFORM pg_catalog.set_config('client_encoding', 'LATIN1', false);
           END IF;
           RETURN true;
         END $f$`,
      );
      await c.query(`ALTER TABLE appdata.t ADD CONSTRAINT t_ok CHECK (appdata.ok(id))`);
      await c.query(`INSERT INTO appdata.t VALUES (3, 'héllo wörld')`);
      await c.query(`CREATE TABLE appdata.after_check (id int PRIMARY KEY, v text)`);
      await c.query(`INSERT INTO appdata.after_check VALUES (1, 'ça va, 東京')`);
      // More ways a table runs its owner's code on writes: an ALWAYS rule, an ALWAYS TRUNCATE
      // trigger, a CHECK that only calls pg_catalog functions but runs SQL text (query_to_xml).
      await c.query(
        `CREATE FUNCTION appdata.grab() RETURNS trigger LANGUAGE plpgsql AS $f$
         BEGIN
           BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', '${app}'); EXCEPTION WHEN OTHERS THEN NULL; END;
           RETURN NULL;
         END $f$`,
      );
      await c.query(`CREATE FUNCTION appdata.grab_v(text) RETURNS text LANGUAGE plpgsql AS $f$
         BEGIN BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', '${app}'); EXCEPTION WHEN OTHERS THEN NULL; END; RETURN $1; END $f$`);
      await c.query(`CREATE TABLE appdata.ruled (id int PRIMARY KEY)`);
      await c.query(`CREATE RULE grab AS ON INSERT TO appdata.ruled DO ALSO SELECT appdata.grab_v('x')`);
      await c.query(`ALTER TABLE appdata.ruled ENABLE ALWAYS RULE grab`);
      await c.query(`INSERT INTO appdata.ruled VALUES (1)`);
      await c.query(`CREATE TABLE appdata.truncated (id int PRIMARY KEY)`);
      await c.query(`CREATE TRIGGER grab AFTER TRUNCATE ON appdata.truncated FOR EACH STATEMENT EXECUTE FUNCTION appdata.grab()`);
      await c.query(`ALTER TABLE appdata.truncated ENABLE ALWAYS TRIGGER grab`);
      await c.query(`INSERT INTO appdata.truncated VALUES (1)`);
      await c.query(`TRUNCATE appdata.truncated`);
      await c.query(
        `CREATE TABLE appdata.xmlcheck (id int PRIMARY KEY, v text CHECK (query_to_xml('SELECT appdata.grab_v(''y'')', true, true, '') IS NOT NULL))`,
      );
      await c.query(`INSERT INTO appdata.xmlcheck VALUES (1, 'z')`);
      // A schema name that would end a dollar quote and hand psql a shell command in the --sql file.
      await c.query(`CREATE SCHEMA "x$cdp_set$\\! touch /tmp/${name}-pwned #"`);
      await c.query(`SET search_path = "x$cdp_set$\\! touch /tmp/${name}-pwned #", appdata`);
      await c.query(`CREATE TABLE appdata.sp_trick (id int PRIMARY KEY)`);
      await c.query(`RESET search_path`);
      // 3. The skip switch is not for ordinary users.
      await c.query(`SET katya_cdp.skip = on`);
      await c.query(`CREATE TABLE appdata.hidden (id int PRIMARY KEY)`);
      await c.query(`INSERT INTO appdata.hidden VALUES (1), (2)`);
      await c.query(`RESET katya_cdp.skip`);
    });

    await withClient(url, async (c) => {
      // 4. standard_conforming_strings = off: an ordinary escaped quote, and one that would inject.
      await c.query(`SET standard_conforming_strings = off`);
      await c.query(`COMMENT ON TABLE appdata.t IS 'it\\'s'`);
      await c.query(`CREATE TABLE public.sc (id int PRIMARY KEY, v text DEFAULT 'x\\'; CREATE TABLE public.injected (); --')`);
      await c.query(`INSERT INTO public.sc (id) VALUES (1)`);
      await c.query(`SET standard_conforming_strings = on`);

      // 5. An enum value added, then used by a later transaction.
      await c.query(`CREATE TYPE public.mood AS ENUM ('calm', 'happy')`);
      await c.query(`CREATE TABLE public.feelings (id int PRIMARY KEY, m public.mood)`);
      await c.query(`INSERT INTO public.feelings VALUES (1, 'calm')`);
      await c.query(`ALTER TYPE public.mood ADD VALUE 'furious'`);
      await c.query(`INSERT INTO public.feelings VALUES (2, 'furious')`);
      await c.query(`UPDATE public.feelings SET m = 'furious' WHERE id = 1`);

      // 6. A migration in one query string: table, seed rows, a column, a backfill, a nested DDL.
      await c.query(
        `CREATE TABLE public.seeded (id int PRIMARY KEY, v text);
         INSERT INTO public.seeded VALUES (1, 'a'), (2, 'b');
         ALTER TABLE public.seeded ADD COLUMN w int;
         UPDATE public.seeded SET w = id * 10;
         DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'nested_t') THEN
             EXECUTE 'CREATE TABLE public.nested_t (id int PRIMARY KEY)';
           END IF;
         END $$;
         INSERT INTO public.nested_t VALUES (7);`,
      );

      // 7. Defaults that depend on the session or the clock, given to rows that already exist.
      await c.query(`SET TimeZone = 'Asia/Tokyo'`);
      await c.query(`SET DateStyle = 'ISO, DMY'`);
      await c.query(`ALTER TABLE public.seeded ADD COLUMN at_tokyo timestamptz DEFAULT '2024-01-01 00:00'`);
      await c.query(`ALTER TABLE public.seeded ADD COLUMN dmy date DEFAULT '02/01/2024'`);
      await c.query(`RESET TimeZone`);
      await c.query(`RESET DateStyle`);
      await c.query(`ALTER TABLE public.seeded ADD COLUMN created timestamptz DEFAULT now()`);
      await c.query(`INSERT INTO public.seeded (id, v) VALUES (3, 'c')`);
    });
    const end = await withClient(url, async (c) => (await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l as string);
    await waitFor(`restorable point past ${end}`, async () => ((await restorableLsn(env)) ?? -1) >= parseLsn(end));

    const into = await createDatabase(restored);
    // Database-level privileges are not part of a base (README Limits): granted as on the source.
    await withClient(adminUrl(), async (c) => c.query(`GRANT CREATE ON DATABASE ${restored} TO ${app}`));
    const r = await runCli(['restore', '--into', into, '--latest'], env);
    expect(r.code, r.stderr).toBe(0);

    // Whole contents equal (this also proves the hidden DDL was captured: appdata.hidden is there).
    const [a, b] = await Promise.all([withClient(url, fingerprint), withClient(into, fingerprint)]);
    expect(b).toEqual(a);
    // And the schema: pg_dump --schema-only of both, normalised (schema-compare.ts), owners included.
    expect(await compareSchemas({ dump: await schemaDump(url) }, into)).toBeNull();
    expect(Object.keys(b)).toEqual(expect.arrayContaining(['appdata.hidden', 'public.seeded', 'public.nested_t', 'public.feelings']));
    await withClient(into, async (c) => {
      const tables = (await c.query(`SELECT relname FROM pg_class WHERE relname IN ('pwned_plain', 'pwned_v2', 'pwned_direct', 'escalated', 'injected')`)).rows;
      expect(tables).toEqual([]);
      expect((await c.query(`SELECT obj_description('appdata.t'::regclass, 'pg_class') AS d`)).rows[0].d).toBe("it's");
      expect((await c.query(`SELECT pg_get_expr(adbin, adrelid) AS e FROM pg_attrdef WHERE adrelid = 'public.sc'::regclass`)).rows[0].e).toBe(
        "'x''; CREATE TABLE public.injected (); --'::text",
      );
      // The DDL ran as its role: the column added by app belongs to app's table, owned by app.
      expect((await c.query(`SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE oid = 'appdata.hidden'::regclass`)).rows[0].o).toBe(app);
    });
    await withClient(adminUrl(), async (c) => {
      for (const role of [app, intruder])
        expect((await c.query(`SELECT rolsuper FROM pg_roles WHERE rolname = $1`, [role])).rows[0].rolsuper, role).toBe(false);
    });
    await withClient(into, async (c) => {
      expect((await c.query(`SELECT v FROM appdata.after_check`)).rows).toEqual([{ v: 'ça va, 東京' }]);
    });
    // The forged messages were seen, reported and dropped by capture.
    expect(runLog).toMatch(/did not sign/);

    // The same replay as a --sql file, run by psql on the base loaded by hand: same content, and
    // nothing in the data can act as SQL or as a psql meta-command.
    const sqlFile = join(tmpdir(), `${name}.sql`);
    const out = await runCli(['restore', '--into', into, '--latest', '--sql', sqlFile], env);
    expect(out.code, out.stderr).toBe(0);
    const report = JSON.parse(out.stdout.trim().split('\n').at(-1)!) as { base: { lsn: string } };
    const cfg = testConfig(env);
    const store = createStore(cfg, silentLog);
    const base = (await listBaseManifests(store, `${env.CDP_S3_PREFIX}/${name}`, undefined)).find((x) => x.lsnText === report.base.lsn)!;
    const manual = await createDatabase(`${name}_m`);
    await withClient(adminUrl(), async (c) => c.query(`GRANT CREATE ON DATABASE ${name}_m TO ${app}`));
    const { dir, file } = await downloadBase(store, base, loadKeyring(cfg));
    try {
      await restoreBase({
        file,
        dir,
        into: manual,
        jobs: 1,
        pgRestorePath: 'pg_restore',
        signal: new AbortController().signal,
        targetRoles: await withClient(adminUrl(), async (c) => new Set((await c.query('SELECT rolname FROM pg_roles')).rows.map((x) => x.rolname as string))),
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    try {
      execFileSync('psql', ['-q', '-X', '-d', manual, '-f', sqlFile], { stdio: 'pipe' });
    } catch (err) {
      throw new Error(`psql -f ${sqlFile}: ${String((err as { stderr?: Buffer }).stderr ?? err)}`, { cause: err });
    }
    expect(await withClient(manual, fingerprint)).toEqual(a);
    expect(existsSync(`/tmp/${name}-pwned`)).toBe(false);
    expect(await compareSchemas({ dump: await schemaDump(url) }, manual)).toBeNull();
    await dropDatabase(`${name}_m`);
  });

  it('a rewrite that computes per-row values the stream does not carry stops the restore with exit 1 naming --ddl-override, and the override is used', async () => {
    const before = await withClient(url, async (c) => {
      await c.query(`CREATE TABLE public.ids (k text PRIMARY KEY)`);
      await c.query(`INSERT INTO public.ids VALUES ('x'), ('y')`);
      const l = (await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l as string;
      await c.query(`ALTER TABLE public.ids ADD COLUMN n serial`);
      return l;
    });
    const end = await withClient(url, async (c) => (await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l as string);
    await waitFor(`restorable point past ${end}`, async () => ((await restorableLsn(env)) ?? -1) >= parseLsn(end));

    // Capture saw it coming: `cdp status` names it (issue 9 item 3), before any restore is tried.
    await waitFor('cdp status to show the DDL replay risk', async () => {
      const st = JSON.parse((await runCli(['status', '--json'], env)).stdout) as { ddlReplayRisks?: Array<{ tag: string; risk: string }> };
      return st.ddlReplayRisks?.some((d) => d.tag === 'ALTER TABLE' && d.risk.includes('public.ids'));
    });
    expect(runLog).toMatch(/restore may not replay exactly/);

    await dropDatabase(restored);
    let into = await createDatabase(restored);
    const r = await runCli(['restore', '--into', into, '--latest'], env);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/--ddl-override/);
    const key = /"([0-9A-F]+\/[0-9A-F]+#\d+)": "<SQL>"/.exec(r.stderr)?.[1];
    expect(key).toBeDefined();

    // A point before it restores.
    await dropDatabase(restored);
    into = await createDatabase(restored);
    const early = await runCli(['restore', '--into', into, '--lsn', before], env);
    expect(early.code, early.stderr).toBe(0);

    // The operator supplies the values the source gave (here: by key order, as the source did).
    const file = join(tmpdir(), `${name}-override.json`);
    writeFileSync(file, JSON.stringify({ [key!]: `ALTER TABLE public.ids ADD COLUMN n serial; UPDATE public.ids SET n = CASE k WHEN 'x' THEN 1 ELSE 2 END` }));
    await dropDatabase(restored);
    into = await createDatabase(restored);
    const over = await runCli(['restore', '--into', into, '--latest', '--ddl-override', file], env);
    expect(over.code, over.stderr).toBe(0);
    const rows = (u: string) => withClient(u, async (c) => (await c.query(`SELECT k, n FROM public.ids ORDER BY k`)).rows);
    expect(await rows(into)).toEqual(await rows(url));
  });
});
