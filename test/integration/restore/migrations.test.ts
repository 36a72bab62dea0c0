import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../../src/util/lsn.js';
import { createDatabase, dropDatabase, pipelineEnv, rand, REPO, restorableLsn, runCli, stackEnvironment, waitFor, withClient } from './helpers.js';
import { allRows, compareContents, contentFingerprint, diffSchemaDumps, schemaDump } from './schema-compare.js';

// The migration corpus of issue 9: migrations in the shapes real tools emit (Rails, Django,
// Alembic, Flyway, Prisma, hand-written scripts) run on a source under live capture (`cdp setup`,
// `cdp run`). Right after each migration the test records the source's LSN, time, the xid of the
// migration's last transaction, its whole contents, its sequences and its schema dump; then it
// restores by --time, --lsn and --xid to that point and compares whole-table contents (tables,
// partitions, materialized views) AND the normalised `pg_dump --schema-only` (schema-compare.ts)
// with what was recorded, and every sequence ends at least at its recorded value.
//
// Isolation: a base backup is taken right before every migration, and restore starts from the
// newest base at or before its target, so a restore to the point after migration k replays only
// migration k: one case that does not restore cannot hide the others' results.
//
// KNOWN_FAILING names the cases that do not restore exactly yet (issue 9's DDL core is being
// rewritten). Each asserts what it does today, so the suite stays green and flags the day that
// changes: 'stops' = restore exits non-zero (a loud failure: acceptable only with the error of issue
// 9 item 3), 'diverges' = restore exits 0 but the schema or the contents differ (silent divergence,
// the one outcome issue 9 forbids). Empty it as the core lands; a listed case that starts passing
// fails here, to be taken off the list.

type Mode = 'time' | 'lsn' | 'xid';
type Known = 'stops' | 'diverges';

const KNOWN_FAILING: Record<string, Known> = {
  // By design (issue 9 item 3): the rewrite computed per-row values the stream does not carry, so
  // restore stops with "cannot replay the ALTER TABLE ... exactly: it rewrote ... holding rows with
  // values computed per row (identity, serial or a volatile DEFAULT) ... --ddl-override FILE".
  'identity column added to a table with rows': 'stops',
  // The same stop for users (DEFAULT clock_timestamp()).
  'add column with a volatile default (clock_timestamp())': 'stops',
  // A limit (README): pg_dump cannot carry a materialized view's stored rows, so the restored view
  // holds a refresh of the base's tables, while the source's was stale (not refreshed since).
  // Restore warns about every materialized view in the base.
  'a base taken while a materialized view is stale': 'diverges',
};

interface Moment {
  lsn: string;
  time: string;
  xid?: number;
  contents: Record<string, string>;
  rows: Record<string, string[]>;
  dump: string;
  sequences: Record<string, string>;
}

interface Case {
  name: string;
  /** Restore modes for this case; default one, cycling through time, lsn, xid (all three with CDP_TEST_ALL_MODES=1). */
  modes?: Mode[];
  /** Runs the migration; returns the xid of its last transaction when the shape lets us know it. */
  run(c: pg.Client): Promise<number | undefined>;
}

/** The 32-bit xid of a 64-bit txid, as pgoutput and `restore --xid` know it. */
const xid32 = (txid: string) => Number(BigInt(txid) & 0xffffffffn);

/** Runs `sql` (one string, any number of statements) in an explicit transaction, as Django / Alembic / Rails wrap a migration; returns its xid. */
async function inTxn(c: pg.Client, ...sql: string[]): Promise<number> {
  await c.query('BEGIN');
  try {
    const x = await c.query<{ x: string }>('SELECT txid_current()::text AS x');
    for (const s of sql) await c.query(s);
    await c.query('COMMIT');
    return xid32(x.rows[0]!.x);
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** The xid that last wrote a catalog or table row (for migrations sent as one implicit-transaction string). */
async function xminOf(c: pg.Client, sql: string): Promise<number> {
  const r = await c.query<{ x: string }>(sql);
  return Number(r.rows[0]!.x);
}

// The source before capture starts: what the base holds.
const INITIAL = `
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text, created_at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00');
INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'User ' || g FROM generate_series(1, 20) g;
CREATE TABLE events (id serial PRIMARY KEY, user_id bigint REFERENCES users, kind text NOT NULL, amount text, mood mood, at date NOT NULL DEFAULT '2024-01-15');
INSERT INTO events (user_id, kind, amount, mood) SELECT 1 + g % 20, 'k' || g % 3, (g * 1.25)::text, CASE WHEN g % 2 = 0 THEN 'happy' ELSE 'sad' END::mood FROM generate_series(1, 30) g;
CREATE TABLE measurements (id int NOT NULL, logdate date NOT NULL, v int, PRIMARY KEY (id, logdate)) PARTITION BY RANGE (logdate);
CREATE TABLE measurements_2024_01 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE measurements_2024_02 PARTITION OF measurements FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO measurements SELECT g, DATE '2024-01-01' + g, g FROM generate_series(1, 50) g;
`;

const CASES: Case[] = [
  {
    // Rails: create_table + add_index + seed data sent as one string (a structure.sql load / a
    // migration using execute with several statements): the seed rows share the string with DDL.
    name: 'rails: create table, index and seed rows in one query string',
    modes: ['time', 'lsn', 'xid'],
    run: async (c) => {
      await c.query(`CREATE TABLE "plans" ("id" bigserial primary key, "name" character varying NOT NULL, "price_cents" integer DEFAULT 0 NOT NULL, "created_at" timestamp(6) NOT NULL, "updated_at" timestamp(6) NOT NULL);
CREATE UNIQUE INDEX "index_plans_on_name" ON "plans" ("name");
INSERT INTO "plans" ("name", "price_cents", "created_at", "updated_at") VALUES ('free', 0, '2024-01-01 00:00:00', '2024-01-01 00:00:00'), ('pro', 900, '2024-01-01 00:00:00', '2024-01-01 00:00:00')`);
      return xminOf(c, `SELECT xmin::text AS x FROM plans WHERE name = 'pro'`);
    },
  },
  {
    // A hand-written seed into a table without a key: duplicated rows would not even collide.
    name: 'script: keyless table created and seeded in one string',
    run: async (c) => {
      await c.query(
        `CREATE TABLE settings (key text NOT NULL, value text); ALTER TABLE settings REPLICA IDENTITY FULL; INSERT INTO settings VALUES ('theme', 'dark'), ('lang', 'en');`,
      );
      return xminOf(c, `SELECT xmin::text AS x FROM settings LIMIT 1`);
    },
  },
  {
    // Django: AddField nullable, RunPython/RunSQL backfill, AlterField NOT NULL, one statement per query in one transaction.
    name: 'django: add column, backfill, set not null (statements in one transaction)',
    run: (c) =>
      inTxn(
        c,
        `ALTER TABLE "users" ADD COLUMN "status" varchar(16) NULL`,
        `UPDATE "users" SET "status" = CASE WHEN "id" % 3 = 0 THEN 'disabled' ELSE 'active' END`,
        `ALTER TABLE "users" ALTER COLUMN "status" SET NOT NULL`,
      ),
  },
  {
    // A backfill in the same string as its ALTER TABLE (RunSQL with several statements), moving a column.
    name: 'script: add column + backfill + drop old column in one string',
    run: async (c) => {
      await c.query(
        `ALTER TABLE events ADD COLUMN amount_cents integer; UPDATE events SET amount_cents = round(amount::numeric * 100)::int; ALTER TABLE events DROP COLUMN amount;`,
      );
      return xminOf(c, `SELECT xmin::text AS x FROM events ORDER BY id LIMIT 1`);
    },
  },
  {
    // Alembic / hand-written idempotent migrations: DO blocks creating only what is missing.
    name: 'alembic: idempotent DO blocks creating a type and a column',
    run: (c) =>
      inTxn(
        c,
        `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'account_tier') THEN CREATE TYPE account_tier AS ENUM ('free', 'paid'); END IF; END $$;`,
        `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'tier') THEN ALTER TABLE users ADD COLUMN tier account_tier NOT NULL DEFAULT 'free'; END IF; END $$;`,
        `UPDATE users SET tier = 'paid' WHERE id <= 5`,
      ),
  },
  {
    // ALTER TYPE ... ADD VALUE then the value used by a later transaction (Rails / Django enum migrations).
    name: 'enum: ADD VALUE, then used by a later transaction',
    modes: ['time', 'lsn', 'xid'],
    run: async (c) => {
      await c.query(`ALTER TYPE mood ADD VALUE 'furious' AFTER 'sad'`);
      return inTxn(
        c,
        `INSERT INTO events (user_id, kind, mood, amount_cents) VALUES (1, 'rage', 'furious', 100)`,
        `UPDATE events SET mood = 'furious' WHERE id = 2`,
      );
    },
  },
  {
    name: 'type rename, then rows of the renamed type',
    modes: ['time', 'lsn', 'xid'],
    run: async (c) => {
      await c.query(`ALTER TYPE mood RENAME TO feeling`);
      return inTxn(
        c,
        `INSERT INTO events (user_id, kind, mood, amount_cents) VALUES (2, 'renamed', 'happy', 5)`,
        `UPDATE events SET mood = 'sad' WHERE id = 4`,
      );
    },
  },
  {
    // Rails change_column / Alembic alter_column with postgresql_using.
    name: 'alter column type with USING, then rows',
    run: async (c) => {
      await inTxn(
        c,
        `ALTER TABLE events ALTER COLUMN kind TYPE varchar(32) USING upper(kind)`,
        `ALTER TABLE events ALTER COLUMN amount_cents TYPE bigint USING amount_cents::bigint * 10`,
      );
      return inTxn(c, `UPDATE events SET amount_cents = amount_cents + 1 WHERE id <= 3`);
    },
  },
  {
    // strong_migrations / Django-pg-zero-downtime: NOT VALID constraints, validated in a later transaction.
    name: 'NOT VALID constraints, validated later',
    run: async (c) => {
      await c.query(`ALTER TABLE events ADD CONSTRAINT events_amount_nonneg CHECK (amount_cents >= 0) NOT VALID`);
      await c.query(
        `ALTER TABLE users ADD COLUMN plan_id bigint; ALTER TABLE users ADD CONSTRAINT users_plan_fk FOREIGN KEY (plan_id) REFERENCES plans (id) NOT VALID`,
      );
      await c.query(`ALTER TABLE events VALIDATE CONSTRAINT events_amount_nonneg`);
      return inTxn(c, `ALTER TABLE users VALIDATE CONSTRAINT users_plan_fk`, `UPDATE users SET plan_id = 2 WHERE id = 1`);
    },
  },
  {
    // Rails algorithm: :concurrently, Django AddIndexConcurrently: outside any transaction block.
    name: 'CREATE INDEX CONCURRENTLY and DROP INDEX CONCURRENTLY',
    run: async (c) => {
      await c.query(`CREATE INDEX CONCURRENTLY index_events_on_at ON events (at)`);
      await c.query(`CREATE UNIQUE INDEX CONCURRENTLY index_users_on_lower_email ON users (lower(email))`);
      await c.query(`DROP INDEX CONCURRENTLY index_events_on_at`);
      return inTxn(c, `INSERT INTO events (user_id, kind, amount_cents) VALUES (3, 'after index', 7)`);
    },
  },
  {
    // pg_partman-style maintenance: a new partition attached (filled first), an old one detached.
    name: 'partitions attached and detached',
    run: async (c) => {
      await inTxn(
        c,
        `CREATE TABLE measurements_2024_03 (LIKE measurements INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`,
        `INSERT INTO measurements_2024_03 SELECT g, DATE '2024-03-01' + (g % 28), g FROM generate_series(100, 120) g`,
        `ALTER TABLE measurements ATTACH PARTITION measurements_2024_03 FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')`,
        `ALTER TABLE measurements DETACH PARTITION measurements_2024_01`,
      );
      return inTxn(c, `INSERT INTO measurements VALUES (200, '2024-03-15', 1)`, `UPDATE measurements_2024_01 SET v = -v WHERE id < 5`);
    },
  },
  {
    // DETACH ... CONCURRENTLY (outside a transaction block) also adds a CHECK constraint copying the partition bound.
    name: 'DETACH PARTITION CONCURRENTLY',
    run: async (c) => {
      await c.query(`ALTER TABLE measurements DETACH PARTITION measurements_2024_02 CONCURRENTLY`);
      return inTxn(c, `UPDATE measurements_2024_02 SET v = v + 1000 WHERE id = 40`);
    },
  },
  {
    name: 'views and materialized views, refreshed',
    run: async (c) => {
      await inTxn(
        c,
        `CREATE VIEW active_users AS SELECT id, email FROM users WHERE status = 'active'`,
        `CREATE MATERIALIZED VIEW event_totals AS SELECT user_id, count(*) AS n, sum(amount_cents) AS total FROM events GROUP BY user_id`,
        `CREATE UNIQUE INDEX event_totals_user ON event_totals (user_id)`,
      );
      await inTxn(c, `INSERT INTO events (user_id, kind, amount_cents) SELECT id, 'bulk', id FROM users WHERE id <= 10`);
      await c.query(`REFRESH MATERIALIZED VIEW event_totals`);
      await inTxn(
        c,
        `CREATE OR REPLACE VIEW active_users AS SELECT id, email, name FROM users WHERE status = 'active'`,
        `INSERT INTO events (user_id, kind, amount_cents) VALUES (1, 'late', 1)`,
      );
      // Fresh again at the end: the next case's base must not hold a stale materialized view (see the last case).
      return inTxn(c, `REFRESH MATERIALIZED VIEW event_totals`);
    },
  },
  {
    name: 'REFRESH MATERIALIZED VIEW CONCURRENTLY',
    run: async (c) => {
      await inTxn(c, `INSERT INTO events (user_id, kind, amount_cents) VALUES (2, 'before refresh', 2)`);
      await c.query(`REFRESH MATERIALIZED VIEW CONCURRENTLY event_totals`);
      return inTxn(c, `UPDATE users SET name = 'after refresh' WHERE id = 2`);
    },
  },
  {
    // Flyway V__ script: a function with a $$ body, a trigger using it, rows that fire it.
    name: 'flyway: functions and triggers, then rows that fire them',
    run: async (c) => {
      await c.query(`CREATE TABLE audit_log (id bigserial PRIMARY KEY, tbl text NOT NULL, row_id bigint, op text);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit_log (tbl, row_id, op) VALUES (TG_TABLE_NAME, NEW.id, TG_OP);
  NEW.name := coalesce(NEW.name, 'anonymous');
  RETURN NEW;
END $$;
CREATE TRIGGER users_audit BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION audit_row();`);
      return inTxn(c, `INSERT INTO users (email, status) VALUES ('trigger@example.com', 'active')`, `UPDATE users SET name = 'Renamed' WHERE id = 3`);
    },
  },
  {
    name: 'SET SCHEMA of a table and a type',
    run: async (c) => {
      await inTxn(c, `CREATE SCHEMA billing`, `ALTER TABLE plans SET SCHEMA billing`, `ALTER TYPE account_tier SET SCHEMA billing`);
      return inTxn(
        c,
        `INSERT INTO billing.plans (name, created_at, updated_at) VALUES ('team', '2024-02-01', '2024-02-01')`,
        `UPDATE users SET tier = 'paid' WHERE id = 6`,
      );
    },
  },
  {
    // search_path tricks: unqualified names created under a session search_path, a SET LOCAL inside a transaction.
    name: 'search_path: unqualified DDL under SET search_path and SET LOCAL',
    run: async (c) => {
      await c.query(`SET search_path = billing, public`);
      await c.query(`CREATE TABLE invoices (id serial PRIMARY KEY, plan_id bigint REFERENCES plans, total integer)`);
      await c.query(`RESET search_path`);
      const x = await inTxn(
        c,
        `SET LOCAL search_path = billing`,
        `CREATE INDEX invoices_plan ON invoices (plan_id)`,
        `INSERT INTO invoices (plan_id, total) SELECT id, price_cents FROM plans`,
      );
      return x;
    },
  },
  {
    name: 'standalone sequence used by a default, no OWNED BY',
    modes: ['time', 'lsn', 'xid'],
    run: async (c) => {
      await inTxn(c, `CREATE SEQUENCE order_numbers START 1000`, `CREATE TABLE orders (id bigint PRIMARY KEY DEFAULT nextval('order_numbers'), note text)`);
      return inTxn(c, `INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 101) g`);
    },
  },
  {
    // Prisma migrate: migration.sql with comments, quoted mixed-case identifiers, enum + table + FK in one string.
    name: 'prisma: migration.sql in one string',
    run: async (c) => {
      await c.query(`-- CreateEnum
CREATE TYPE "Role" AS ENUM ('USER', 'ADMIN');

-- CreateTable
CREATE TABLE "Post" (
    "id" SERIAL NOT NULL,
    "title" TEXT NOT NULL,
    "authorId" BIGINT NOT NULL,
    "role" "Role" NOT NULL DEFAULT 'USER',

    CONSTRAINT "Post_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "Post_authorId_idx" ON "Post"("authorId");

-- AddForeignKey
ALTER TABLE "Post" ADD CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "users"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
`);
      return inTxn(c, `INSERT INTO "Post" ("title", "authorId", "role") VALUES ('hello', 1, 'ADMIN')`);
    },
  },
  {
    // Rails rename_table / rename_column / rename_index, Django RenameField / RenameModel.
    name: 'renames: table, column, index, constraint',
    run: async (c) => {
      await inTxn(
        c,
        `ALTER TABLE settings RENAME TO app_settings`,
        `ALTER TABLE app_settings RENAME COLUMN value TO val`,
        `ALTER INDEX index_users_on_lower_email RENAME TO users_lower_email_key`,
        `ALTER TABLE events RENAME CONSTRAINT events_amount_nonneg TO events_amount_cents_nonneg`,
      );
      return inTxn(c, `INSERT INTO app_settings VALUES ('tz', 'UTC')`, `UPDATE app_settings SET val = 'light' WHERE key = 'theme'`);
    },
  },
  {
    // A one-off DO block that creates a table and seeds it: DDL and DML in one block.
    name: 'DO block creating a table and inserting its rows',
    run: (c) =>
      inTxn(
        c,
        `DO $$ BEGIN CREATE TABLE feature_flags (name text PRIMARY KEY, enabled boolean NOT NULL); INSERT INTO feature_flags VALUES ('new_ui', true), ('beta', false); END $$;`,
      ),
  },
  {
    // pg_partman-style: a function that creates partitions with dynamic SQL, called by the migration.
    name: 'a function creating a partition with EXECUTE, then called',
    run: async (c) => {
      await c.query(`CREATE FUNCTION create_month(p_from date) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF measurements FOR VALUES FROM (%L) TO (%L)',
                 'measurements_' || to_char(p_from, 'YYYY_MM'), p_from, (p_from + interval '1 month')::date);
END $$`);
      await c.query(`SELECT create_month('2024-04-01')`);
      return inTxn(c, `SELECT create_month('2024-05-01')`, `INSERT INTO measurements VALUES (300, '2024-04-02', 3), (301, '2024-05-02', 4)`);
    },
  },
  {
    // A generated column: the table is rewritten with values computed from each row, deterministically.
    name: 'generated column added to a table with rows',
    run: (c) => inTxn(c, `ALTER TABLE events ADD COLUMN amount_eur numeric GENERATED ALWAYS AS (amount_cents / 100.0) STORED`),
  },
  {
    // An identity column added to a table with rows: values drawn from a sequence per row, not in the stream.
    name: 'identity column added to a table with rows',
    run: (c) => inTxn(c, `ALTER TABLE app_settings ADD COLUMN id int GENERATED BY DEFAULT AS IDENTITY`),
  },
  {
    // Comments, grants and a dropped object with CASCADE: the parts of a schema dump that are not tables.
    name: 'comments, grants, DROP ... CASCADE',
    run: (c) =>
      inTxn(
        c,
        `COMMENT ON TABLE users IS 'people who sign in'`,
        `COMMENT ON COLUMN users.email IS 'unique, lower-cased by the app'`,
        `GRANT SELECT ON users, events TO PUBLIC`,
        `REVOKE ALL ON FUNCTION audit_row() FROM PUBLIC`,
        `DROP TRIGGER users_audit ON users`,
        `DROP TABLE audit_log CASCADE`,
        `DROP FUNCTION create_month(date)`,
      ),
  },
  {
    // Volatile default: the table is rewritten with values the stream never carries.
    name: 'add column with a volatile default (clock_timestamp())',
    run: async (c) => inTxn(c, `ALTER TABLE users ADD COLUMN joined_at timestamptz NOT NULL DEFAULT clock_timestamp()`),
  },
  {
    // A constant default whose meaning depends on the session: TimeZone and DateStyle of the migration's session.
    name: 'add column with a session-dependent constant default (TimeZone, DateStyle)',
    run: async (c) => {
      await c.query(`SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'ISO, DMY'`);
      try {
        return await inTxn(c, `ALTER TABLE users ADD COLUMN since timestamptz DEFAULT '02/01/2024 00:00'`);
      } finally {
        await c.query(`RESET TimeZone; RESET DateStyle`);
      }
    },
  },
  {
    // Last, because it leaves a stale materialized view in a base: pg_dump has no contents for a
    // materialized view, only REFRESH MATERIALIZED VIEW, so pg_restore recomputes it from the
    // base's tables, and rows inserted since the source's last refresh show up in it.
    name: 'a base taken while a materialized view is stale',
    run: async (c) => {
      await inTxn(c, `INSERT INTO events (user_id, kind, amount_cents) VALUES (3, 'not refreshed', 3)`);
      const b = await runCli(['-c', cfgFile, 'basebackup'], env);
      if (b.code !== 0) throw new Error(`basebackup: ${b.stderr}`);
      return inTxn(c, `UPDATE users SET name = 'after the base' WHERE id = 4`);
    },
  },
];

const name = `mig_${rand()}`;
let url = '';
let env: Record<string, string> = {};
let run: ChildProcess | undefined;
const cfgFile = join(tmpdir(), `cdp-${name}.json`);
const moments = new Map<string, Moment>();
const migrationErrors = new Map<string, string>();
/** What each restore did, for the summary printed at the end (and for whoever reads the log). */
const outcomes: string[] = [];

async function record(c: pg.Client, xid: number | undefined): Promise<Moment> {
  const at = await c.query<{ lsn: string; t: string }>(
    `SELECT pg_current_wal_lsn()::text AS lsn, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
  );
  const seqs = await c.query<{ k: string; v: string }>(
    `SELECT schemaname || '.' || sequencename AS k, last_value::text AS v FROM pg_sequences WHERE last_value IS NOT NULL AND schemaname NOT IN ('katya_cdp', '_cdp_restore')`,
  );
  return {
    lsn: at.rows[0]!.lsn,
    time: at.rows[0]!.t,
    xid,
    contents: await contentFingerprint(c),
    rows: await allRows(c),
    dump: await schemaDump(url),
    sequences: Object.fromEntries(seqs.rows.map((r) => [r.k, r.v])),
  };
}

beforeAll(async () => {
  stackEnvironment();
  url = await createDatabase(name);
  env = pipelineEnv(name, url, 'test-migrations');
  writeFileSync(cfgFile, JSON.stringify({ capture: { sequenceIntervalMs: 1000 } }));
  await withClient(url, (c) => c.query(INITIAL));
  const setup = await runCli(['-c', cfgFile, 'setup'], env);
  expect(setup.code, setup.stderr).toBe(0);
  run = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, '-c', cfgFile, 'run'], {
    env: { ...process.env, ...stackEnvironment(), CDP_LOG_FORMAT: 'json', CDP_METRICS_PORT: '0', ...env },
    // TEST_DAEMON_LOGS=<dir> keeps the daemon's log there.
    stdio: ['ignore', 'ignore', process.env.TEST_DAEMON_LOGS ? openSync(join(process.env.TEST_DAEMON_LOGS, `run-${name}.log`), 'a') : 'ignore'],
  });

  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    for (const k of CASES) {
      // A base right before each migration: its restores replay this migration alone.
      const b = await runCli(['-c', cfgFile, 'basebackup'], env);
      expect(b.code, `basebackup before "${k.name}": ${b.stderr}`).toBe(0);
      try {
        const xid = await k.run(c);
        moments.set(k.name, await record(c, xid));
      } catch (err) {
        // The source refused the migration itself: a defect of the corpus, reported by its case.
        migrationErrors.set(k.name, (err as Error).message);
        await c.query('ROLLBACK').catch(() => {});
      }
    }
  } finally {
    await c.end();
  }
  const last = [...moments.values()].at(-1)!;
  await waitFor(`restorable point past ${last.lsn}`, async () => ((await restorableLsn(env)) ?? -1) >= parseLsn(last.lsn), 180_000);
});

afterAll(async () => {
  if (run && run.exitCode === null) {
    const done = new Promise((r) => run!.once('exit', r));
    run.kill('SIGTERM');
    const t = setTimeout(() => run!.kill('SIGKILL'), 30_000);
    await done;
    clearTimeout(t);
  }
  await dropDatabase(name);
  console.log(`migration corpus outcomes:\n${outcomes.join('\n')}`);
});

/** Restores to `m` by `mode` into a fresh database; returns what differs (null = exact) or the restore's error. */
async function restoreTo(caseName: string, m: Moment, mode: Mode): Promise<{ code: number | null; error: string; diff: string | null }> {
  const target = `${name}_r_${rand()}`;
  const into = await createDatabase(target);
  try {
    const args = mode === 'time' ? ['--time', m.time] : mode === 'lsn' ? ['--lsn', m.lsn] : ['--xid', String(m.xid)];
    const r = await runCli(['-c', cfgFile, 'restore', '--into', into, ...args], env);
    if (r.code !== 0) {
      const error = lastError(r.stderr);
      outcomes.push(`[${caseName}] --${mode}: exit ${r.code}: ${error}`);
      return { code: r.code, error, diff: null };
    }
    const schema = diffSchemaDumps(m.dump, await schemaDump(into));
    const contents = await compareContents(m.contents, into, m.rows);
    const seqs = await withClient(into, (c) =>
      c.query<{ k: string; v: string | null }>(`SELECT schemaname || '.' || sequencename AS k, last_value::text AS v FROM pg_sequences`),
    );
    const got = new Map(seqs.rows.map((r) => [r.k, r.v]));
    const behind = Object.entries(m.sequences)
      .filter(([k, v]) => got.get(k) === null || got.get(k) === undefined || BigInt(got.get(k)!) < BigInt(v))
      .map(([k, v]) => `sequence ${k} at ${got.get(k) ?? 'nothing'}, the source was at ${v}`);
    const diff = [schema, contents, behind.length > 0 ? behind.join('\n') : null].filter((x) => x !== null).join('\n') || null;
    outcomes.push(`[${caseName}] --${mode}: exit 0, ${diff ? `DIFFERS:\n${diff}` : 'exact'}`);
    return { code: 0, error: '', diff };
  } finally {
    await dropDatabase(target);
  }
}

/** The message of the last error line of a CLI's JSON log (or its last line). */
function lastError(stderr: string): string {
  const lines = stderr.trim().split('\n').filter(Boolean);
  for (const l of lines.reverse()) {
    try {
      const j = JSON.parse(l) as { level?: number | string; msg?: string; err?: { message?: string } | string; code?: string };
      if ((typeof j.level === 'number' && j.level >= 50) || j.level === 'error' || j.level === 'fatal') {
        const e = typeof j.err === 'string' ? j.err : j.err?.message;
        return [j.code, j.msg, e].filter(Boolean).join(': ');
      }
    } catch {
      return l;
    }
  }
  return lines[0] ?? '(no output)';
}

/** Runs fn over items, at most `limit` at a time. */
function pool<T>(limit: number, items: (() => Promise<T>)[]): Promise<T>[] {
  let running = 0;
  const queue: (() => void)[] = [];
  return items.map(
    (fn) =>
      new Promise<T>((resolve, reject) => {
        const start = () => {
          running++;
          fn()
            .then(resolve, reject)
            .finally(() => {
              running--;
              queue.shift()?.();
            });
        };
        if (running < limit) start();
        else queue.push(start);
      }),
  );
}

type Result = { mode: Mode; code: number | null; error: string; diff: string | null };
const results = new Map<string, Promise<Result[]>>();

describe('migration corpus restores exactly, or stops loudly', () => {
  beforeAll(() => {
    // Every case's restores go into one pool of three at a time (separate targets), started now;
    // each case's test awaits its own. Most of a restore's time is process start-up and waiting.
    const all = process.env.CDP_TEST_ALL_MODES === '1';
    const jobs: { k: string; mode: Mode }[] = [];
    CASES.forEach((k, i) => {
      const m = moments.get(k.name);
      if (!m) return;
      const modes = (all ? (['time', 'lsn', 'xid'] as Mode[]) : (k.modes ?? [(['time', 'lsn', 'xid'] as Mode[])[i % 3]!])).filter(
        (x) => x !== 'xid' || m.xid !== undefined,
      );
      for (const mode of modes.length > 0 ? modes : (['lsn'] as Mode[])) jobs.push({ k: k.name, mode });
    });
    const done = pool(
      3,
      jobs.map((j) => async () => ({ mode: j.mode, ...(await restoreTo(j.k, moments.get(j.k)!, j.mode)) })),
    );
    for (const k of CASES) {
      const mine = done.filter((_, i) => jobs[i]!.k === k.name);
      const p = Promise.all(mine);
      p.catch(() => {}); // awaited (and reported) by the case's own test
      results.set(k.name, p);
    }
  });

  const TABLES_CASE = '--tables: a chosen table using a standalone sequence created in the stream';
  it(TABLES_CASE, async () => {
    const m = moments.get('standalone sequence used by a default, no OWNED BY')!;
    const target = `${name}_t_${rand()}`;
    const into = await createDatabase(target);
    try {
      const r = await runCli(['-c', cfgFile, 'restore', '--into', into, '--lsn', m.lsn, '--tables', 'public.orders'], env);
      const got = r.code === 0 ? await withClient(into, contentFingerprint) : {};
      outcomes.push(`[${TABLES_CASE}] --lsn --tables public.orders: exit ${r.code}${r.code === 0 ? '' : `: ${lastError(r.stderr)}`}`);
      if (KNOWN_FAILING[TABLES_CASE] === 'stops') {
        expect(r.code, `${TABLES_CASE}: listed as stopping but exited 0: take it off KNOWN_FAILING`).not.toBe(0);
      } else {
        expect(r.code, `${TABLES_CASE}: ${lastError(r.stderr)}`).toBe(0);
        expect(got['public.orders']).toBe(m.contents['public.orders']);
      }
    } finally {
      await dropDatabase(target);
    }
  });

  for (const k of CASES) {
    it(k.name, async () => {
      expect(migrationErrors.get(k.name), 'the migration itself failed on the source').toBeUndefined();
      const rs = await results.get(k.name)!;
      expect(rs.length).toBeGreaterThan(0);
      const known = KNOWN_FAILING[k.name];
      for (const r of rs) {
        const what = `"${k.name}" restored by --${r.mode}`;
        if (known === 'stops') {
          expect(
            r.code,
            `${what} was listed as stopping (KNOWN_FAILING) but exited 0${r.diff ? `, and differs:\n${r.diff}` : ': take it off the list'}`,
          ).not.toBe(0);
        } else if (known === 'diverges') {
          expect(r.code, `${what}: listed as diverging silently, now exits ${r.code}: ${r.error}`).toBe(0);
          expect(r.diff, `${what}: listed as diverging silently but is exact now: take it off KNOWN_FAILING`).not.toBeNull();
        } else {
          expect(r.code, `${what} failed: ${r.error}`).toBe(0);
          expect(r.diff, `${what} differs from the source at that point`).toBeNull();
        }
      }
    });
  }
});
