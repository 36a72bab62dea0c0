import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { stackEnv, withClient } from '../support/stack.js';

// The version matrix's clusters as the tests see them: the main cluster (15, port 5432) and the
// extra ones that `stack.sh up --pg 16,17,18` starts (test/setup/majors-setup.ts), each with client
// programs of a major at least its own (pg_dump refuses newer servers).

export type Major = 15 | 16 | 17 | 18;
export const NEWER: Major[] = [16, 17, 18];

/** A URL to database `db` on the cluster of `major`, as its superuser. */
export function clusterUrl(major: Major, db = 'postgres'): string {
  const env = { ...stackEnv(), ...process.env };
  const base = major === 15 ? env.CDP_SOURCE_URL : env[`CDP_STACK_PG${major}_URL`];
  if (!base) throw new Error(`no CDP_STACK_PG${major}_URL: the majors project's global setup (stack.sh up --pg 16,17,18) did not run`);
  const u = new URL(base);
  u.pathname = `/${db}`;
  return u.toString();
}

/** The folder of pg_dump / pg_restore / psql for a cluster of `major` ('' = the PATH's, Debian's 15). */
export function clientBin(major: Major): string {
  if (major === 15) return '';
  const b = process.env[`CDP_STACK_PG${major}_BIN`];
  if (!b) throw new Error(`no CDP_STACK_PG${major}_BIN: the majors project's global setup did not run`);
  return b;
}

export const tool = (major: Major, name: 'pg_dump' | 'pg_restore' | 'psql') => (clientBin(major) ? join(clientBin(major), name) : name);

/** The newest pg_dump here (18): it dumps every server of the matrix, so both sides of a schema comparison go through the same dumper. */
export const newestPgDump = () => tool(18, 'pg_dump');

export async function createDb(major: Major, db: string): Promise<string> {
  await withClient(clusterUrl(major), (c) => c.query(`CREATE DATABASE ${db}`));
  return clusterUrl(major, db);
}

/** Drops a scratch database and its slots on any cluster; never throws. */
export async function dropDb(major: Major, db: string): Promise<void> {
  await withClient(clusterUrl(major), async (c) => {
    await c.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, [db]);
    for (let i = 0; i < 40; i++) {
      const r = await c.query(`SELECT slot_name FROM pg_replication_slots WHERE database = $1 AND NOT active`, [db]);
      const all = await c.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE database = $1`, [db]);
      for (const s of r.rows) await c.query('SELECT pg_drop_replication_slot($1)', [s.slot_name]).catch(() => {});
      if (all.rows[0].n === 0) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  }).catch(() => {});
}

/** Deletes the tests' Kafka topics (cleanup; never throws). */
export async function deleteTopics(topics: string[]): Promise<void> {
  if (topics.length === 0) return;
  const brokers = (process.env.CDP_KAFKA_BROKERS ?? stackEnv().CDP_KAFKA_BROKERS ?? '127.0.0.1:9092').split(',');
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  try {
    await admin.connect();
    await admin.deleteTopics({ topics });
  } catch {
    /* cleanup only */
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** A config file naming the client programs of `major` (basebackup.pgDumpPath / pgRestorePath have no environment variable). */
export function clientConfigFile(major: Major, name: string): string {
  const file = join(tmpdir(), `${name}.json`);
  const cfg = major === 15 ? {} : { basebackup: { pgDumpPath: tool(major, 'pg_dump'), pgRestorePath: tool(major, 'pg_restore') } };
  writeFileSync(file, JSON.stringify(cfg));
  return file;
}

export async function serverVersionNum(url: string): Promise<number> {
  return withClient(url, async (c: pg.Client) => Number((await c.query(`SELECT current_setting('server_version_num') AS v`)).rows[0].v));
}

/**
 * The schema and a mixed workload shared by every cell of the matrix: enum, domain, composite and
 * range types, arrays, json/jsonb, bytea, a TOASTed column, serial and identity keys, a stored
 * generated column, a partial index, a foreign key with ON DELETE CASCADE, a table without a key
 * (REPLICA IDENTITY FULL) holding duplicate rows, a partitioned table, a view, a trigger that writes
 * rows, a comment, and while capture runs: DDL (ADD COLUMN, CREATE TABLE, CREATE INDEX, ALTER TYPE
 * ... ADD VALUE), UPDATEs of keys, unchanged TOAST values, savepoints, TRUNCATE.
 */
export const SCHEMA = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE TYPE pair AS (a integer, b text);
CREATE TABLE types (
  id integer PRIMARY KEY,
  n_big numeric(40,20), n_free numeric, f8 float8, f4 float4,
  tz timestamptz, ts timestamp, d date, tm time, ttz timetz, iv interval,
  ai integer[], at text[], j json, jb jsonb, b bytea, u uuid,
  e mood, dom positive_int, comp pair, r int4range, rtz tstzrange,
  m money, bv bit varying(16), bf bit(8), ip inet, net cidr, mac macaddr,
  tx text, vc varchar(20), ch char(5), pt point, tsv tsvector, bo boolean, ea mood[]
);
CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL, balance numeric(12,2) NOT NULL DEFAULT 0 CHECK (balance > -1000),
  big text, tags text[], doc jsonb);
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  account_id int NOT NULL REFERENCES accounts(id) ON DELETE CASCADE, amount numeric NOT NULL,
  doubled numeric GENERATED ALWAYS AS (amount * 2) STORED);
CREATE INDEX orders_positive ON orders (account_id) WHERE amount > 0;
CREATE TABLE nopk (a int, b text);
ALTER TABLE nopk REPLICA IDENTITY FULL;
CREATE TABLE parted (id int NOT NULL, region text NOT NULL, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');
CREATE VIEW account_totals AS SELECT a.name, sum(o.amount) AS total FROM accounts a JOIN orders o ON o.account_id = a.id GROUP BY a.name;
CREATE TABLE audit (id bigserial PRIMARY KEY, what text);
CREATE FUNCTION audit_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (what) VALUES (TG_OP || ' ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER accounts_audit AFTER INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION audit_fn();
COMMENT ON TABLE accounts IS 'the accounts';
INSERT INTO accounts (name, balance) VALUES ('seed', 1);
`;

/** The type fixture's rows (as capture.test.ts's): edge values of every type above. */
export const TYPE_ROWS = [
  `INSERT INTO types VALUES (1,
     '12345678901234567890.12345678901234567890', 'NaN', 'Infinity', '-0',
     '2024-02-29 23:59:59.999999+14', '2024-01-01 00:00:00', '2024-02-29', '23:59:59.123456', '12:00:00-03:30',
     '1 year 2 mons 3 days 04:05:06.789',
     '{{1,2},{3,NULL}}', ARRAY['a', NULL, 'quote"d', 'back\\slash', '', 'NULL', 'com,ma'], '{"a": [1, 2.50, "x"],  "b" : null}',
     '{"z": 1, "a": [true, {"k": "v"}]}',
     (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), '' ORDER BY g), 'hex') FROM generate_series(0, 255) g),
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 42, ROW(7, 'x y'), '[1,10)', '[2024-01-01 00:00+00,infinity)',
     '1234.56', B'1010110', B'11110000', '192.168.1.1/24', '10.0.0.0/8', '08:00:2b:01:02:03',
     'plane0 é ß 中文 plane1 𝄞 😀 plane2 𠀀 plane16 ' || chr(1114111), 'varchar', 'ab', '(1.5,-2)', 'a fat cat:1',
     true, '{sad,happy}')`,
  `INSERT INTO types (id, n_free, f8, f4, tz, iv) VALUES (2, '-0.000000000000000000000000000001', '-Infinity', 'NaN', 'infinity', '-178000000 years')`,
  `INSERT INTO types (id, f8, tz, ts) VALUES (3, '1.0000000000000002', '-infinity', 'infinity')`,
  `INSERT INTO types (id, tz, n_free) VALUES (4, '2000-06-01 12:00:00 Asia/Kathmandu', 1e-300::numeric)`,
  `INSERT INTO types (id) VALUES (5)`,
];

/** A big, barely compressible value, stored out of line (TOAST). */
const toast = (seed: number) => Array.from({ length: 400 }, (_, i) => ((seed * 7919 + i * 104729) % 1000003).toString(36)).join('');

/**
 * The workload run while capture runs: rounds `from` .. `from + rounds - 1` of a dozen transactions
 * each; the type fixture and the DDL come with round 0 (a later call continues with `from` > 0).
 */
export async function workload(url: string, rounds: number, from = 0): Promise<void> {
  await withClient(url, async (c) => {
    if (from === 0) {
      for (const sql of TYPE_ROWS) await c.query(sql);
      await c.query(`UPDATE types SET tx = 'changed', e = 'ok' WHERE id = 1`);
    }
    for (let k = from; k < from + rounds; k++) {
      await c.query(
        `INSERT INTO accounts (name, balance, big, tags, doc) SELECT 'acc ' || g || ' ''q'' \\ ' || $1, g * 1.5, $2, ARRAY['a', 'b"c', NULL], '{"k": [1, {"x": null}]}'::jsonb FROM generate_series(1, 5) g`,
        [k, toast(k)],
      );
      await c.query(`INSERT INTO orders (account_id, amount) SELECT id, $1 FROM accounts ORDER BY id DESC LIMIT 4`, [k + 0.5]);
      // A small column of rows holding a TOAST value: the unchanged value is not in the stream.
      await c.query(`UPDATE accounts SET balance = balance + 1 WHERE id % 3 = $1 % 3`, [k]);
      await c.query(`INSERT INTO nopk VALUES ($1, 'dup'), ($1, 'dup'), ($1, NULL)`, [k]);
      await c.query(`UPDATE nopk SET b = 'one of the dups' WHERE ctid = (SELECT ctid FROM nopk WHERE a = $1 AND b = 'dup' LIMIT 1)`, [k]);
      await c.query(`INSERT INTO parted VALUES ($1, 'eu', 1), ($1, 'us', 2), ($1 + 1000, 'eu', 3)`, [k]);
      await c.query(`UPDATE parted SET v = v + 10 WHERE id = $1`, [k]);
      await c.query(`DELETE FROM parted WHERE id = $1 + 1000`, [k]);
      await c.query(`DELETE FROM accounts WHERE id = (SELECT min(id) FROM accounts WHERE id > 1 AND id IN (SELECT account_id FROM orders))`);
      await c.query('BEGIN');
      await c.query(`INSERT INTO accounts (name) VALUES ('kept ' || $1)`, [k]);
      await c.query('SAVEPOINT s1');
      await c.query(`DELETE FROM orders`);
      await c.query('ROLLBACK TO SAVEPOINT s1');
      await c.query(`UPDATE orders SET amount = amount * 2 WHERE id % 2 = 0`);
      await c.query('COMMIT');
      await c.query(
        `UPDATE accounts SET id = id + 100000 WHERE id = (SELECT max(id) FROM accounts WHERE id < 100000 AND id NOT IN (SELECT account_id FROM orders))`,
      );
      if (k === 0) {
        await c.query(`ALTER TABLE accounts ADD COLUMN tier int`);
        await c.query(`CREATE TABLE late (id int PRIMARY KEY, v text, m mood)`);
        await c.query(`CREATE INDEX accounts_tier ON accounts (tier)`);
        await c.query(`ALTER TYPE mood ADD VALUE 'furious'`);
      }
      await c.query(`UPDATE accounts SET tier = $1 WHERE id % 2 = 0`, [k]);
      await c.query(`INSERT INTO late VALUES ($1, 'late', 'furious')`, [k]);
      if (k % 3 === 2) {
        await c.query('TRUNCATE nopk');
        await c.query(`INSERT INTO nopk VALUES ($1, 'after truncate')`, [k]);
      }
    }
  });
}

/**
 * Normalises a schema dump for the matrix. Each rule is a difference in what a server reports, not
 * in the user's objects; everything else must be equal.
 */
export function normaliseDump(dump: string): string {
  return (
    dump
      // The machine's PostgreSQL 15 (Debian 15.20-0+deb12u1) keeps an attribute option
      // `pg_attver=<n>` on every column it creates, with a new value at each creation, so a
      // restored column never has the source's. Its own pg_dump 15 leaves it out of dumps (so no
      // base carries it); pg_dump 18, which dumps both sides here, prints it as
      // `ALTER TABLE ONLY t ALTER COLUMN c SET (pg_attver=...)`. The servers of 16, 17 and 18 have
      // no such option. Not part of anyone's schema: dropped on both sides.
      .replace(/^ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \(pg_attver=\d+\);\n/gm, '')
  );
}
