import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel, ConfigResourceTypes } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { ADMIN_URL, BROKERS, cdpSync, freshSource, query, type Fixture } from './helpers.js';
import { createStore, getObjectIfExists } from '../../../src/s3/client.js';
import { loadConfig } from '../../../src/config/config.js';
import { pino } from 'pino';

// `cdp setup` through the CLI: idempotent creation, refusals with exit 2 that create nothing, and
// the report of what would break once published.

const fixtures: Fixture[] = [];
const roles: string[] = [];
afterAll(async () => {
  for (const f of fixtures) await f.cleanup().catch((err) => console.error(`cleanup of ${f.name} failed`, err));
  for (const r of roles) await query(ADMIN_URL, `DROP ROLE IF EXISTS ${r}`).catch((err) => console.error(err));
});

async function fresh(label: string): Promise<Fixture> {
  const f = await freshSource(label);
  fixtures.push(f);
  return f;
}

async function sourceObjects(f: Fixture) {
  const [row] = await query<{ pub: boolean; slot: string | null; triggers: number }>(
    f.url,
    `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS pub,
            (SELECT plugin FROM pg_replication_slots WHERE slot_name = $1) AS slot,
            (SELECT count(*)::int FROM pg_event_trigger WHERE evtname LIKE 'katya_cdp_%') AS triggers`,
    [f.name],
  );
  return row!;
}

async function topicExists(topic: string): Promise<boolean> {
  const admin = new Kafka({ brokers: BROKERS, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    return (await admin.listTopics()).includes(topic);
  } finally {
    await admin.disconnect();
  }
}

describe('cdp setup', () => {
  it('creates publication, DDL capture, topic, archive manifest and slot, and is idempotent', async () => {
    const f = await fresh('setup_ok');
    await query(f.url, `CREATE TABLE ok (id integer PRIMARY KEY)`);
    const first = cdpSync(f.env, ['setup', '--no-basebackup']);
    expect(first.code, first.stderr).toBe(0);
    expect(await sourceObjects(f)).toEqual({ pub: true, slot: 'pgoutput', triggers: 5 });
    const [pub] = await query<{ puballtables: boolean }>(f.url, 'SELECT puballtables FROM pg_publication WHERE pubname = $1', [f.name]);
    expect(pub!.puballtables).toBe(true);

    const admin = new Kafka({ brokers: BROKERS, logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      const meta = await admin.fetchTopicMetadata({ topics: [f.name] });
      expect(meta.topics[0]!.partitions).toHaveLength(3);
      const cfg = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: ConfigResourceTypes.TOPIC, name: f.name, configNames: ['retention.ms', 'max.message.bytes'] }],
      });
      const entries = Object.fromEntries(cfg.resources[0]!.configEntries.map((e) => [e.configName, e.configValue]));
      expect(entries).toEqual({ 'retention.ms': String(7 * 24 * 3600 * 1000), 'max.message.bytes': String(64 * 1024 * 1024) });
    } finally {
      await admin.disconnect();
    }

    const cfg = loadConfig({ env: f.env });
    const store = createStore(cfg, pino({ level: 'silent' }));
    const manifest = JSON.parse((await getObjectIfExists(store, `test-capture/${f.name}/${f.name}/archive.json`))!.toString()) as Record<string, unknown>;
    expect(manifest).toMatchObject({ version: 1, database: f.name, topic: f.name, partitions: 3 });
    expect(manifest.systemId).toMatch(/^\d+$/);

    const second = cdpSync(f.env, ['setup', '--no-basebackup']);
    expect(second.code, second.stderr).toBe(0);
    expect(await sourceObjects(f)).toEqual({ pub: true, slot: 'pgoutput', triggers: 5 });
    // Setup's own DDL is not captured (its event trigger skips it).
    const [{ n }] = await query<{ n: number }>(
      f.url,
      `SELECT count(*)::int AS n FROM pg_logical_slot_peek_binary_changes($1::name, NULL, NULL, 'proto_version', '1', 'publication_names', $2::text, 'messages', 'true')`,
      [f.name, f.name],
    );
    expect(n).toBe(0);
  });

  it('refuses with exit 2 and creates nothing when Kafka is unreachable', async () => {
    const f = await fresh('setup_nokafka');
    const r = cdpSync({ ...f.env, CDP_KAFKA_BROKERS: '127.0.0.1:1' }, ['setup', '--no-basebackup']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Kafka is not usable/);
    expect(r.stderr).toMatch(/nothing was created/);
    expect(await sourceObjects(f)).toEqual({ pub: false, slot: null, triggers: 0 });
  });

  it('refuses with exit 2 when the archive was set up for other partitions or another topic', async () => {
    const f = await fresh('setup_conflict');
    expect(cdpSync(f.env, ['setup', '--no-basebackup']).code).toBe(0);
    const other = `${f.name}_other`;
    const r = cdpSync({ ...f.env, CDP_TOPIC: other, CDP_KAFKA_PARTITIONS: '5' }, ['setup', '--no-basebackup']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/was set up for topic .* with 3 partitions/);
    expect(await topicExists(other)).toBe(false);
  });

  it('refuses to publish tables whose writes would then fail, unless told to set REPLICA IDENTITY FULL; reports unlogged tables and large objects', async () => {
    const f = await fresh('setup_report');
    await query(
      f.url,
      `CREATE TABLE nokey (x integer);
       CREATE TABLE full_ident (x integer); ALTER TABLE full_ident REPLICA IDENTITY FULL;
       CREATE TABLE nothing (id integer PRIMARY KEY); ALTER TABLE nothing REPLICA IDENTITY NOTHING;
       CREATE UNLOGGED TABLE scratch (id integer PRIMARY KEY);
       SELECT lo_from_bytea(0, '\\x01');`,
    );
    // Published as they are, UPDATE / DELETE on nokey and nothing would fail on the source.
    const r = cdpSync(f.env, ['setup', '--no-basebackup']);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/without a primary key or replica identity: public\.nokey, public\.nothing;.*--replica-identity-full/);
    expect(r.stderr).not.toMatch(/full_ident/);
    expect(r.stderr).toMatch(/table public\.scratch is UNLOGGED/);
    expect(r.stderr).toMatch(/1 large object\(s\)/);
    expect(await sourceObjects(f)).toEqual({ pub: false, slot: null, triggers: 0 });

    const ok = cdpSync(f.env, ['setup', '--no-basebackup', '--replica-identity-full']);
    expect(ok.code, ok.stderr).toBe(0);
    const ident = await query<{ relname: string; relreplident: string }>(
      f.url,
      `SELECT relname, relreplident::text FROM pg_class WHERE relname IN ('nokey', 'nothing', 'full_ident') ORDER BY 1`,
    );
    expect(ident).toEqual([
      { relname: 'full_ident', relreplident: 'f' },
      { relname: 'nokey', relreplident: 'f' },
      { relname: 'nothing', relreplident: 'f' },
    ]);
    // A table created later without a key: its writes keep working (the DDL trigger sets FULL).
    await query(f.url, `CREATE TABLE later (x integer); INSERT INTO later VALUES (1), (2); UPDATE later SET x = 3 WHERE x = 1; DELETE FROM later WHERE x = 2`);
    expect(await query(f.url, `SELECT relreplident::text AS r FROM pg_class WHERE relname = 'later'`)).toEqual([{ r: 'f' }]);
    // With a primary key nothing is changed.
    await query(f.url, `CREATE TABLE keyed (id integer PRIMARY KEY)`);
    expect(await query(f.url, `SELECT relreplident::text AS r FROM pg_class WHERE relname = 'keyed'`)).toEqual([{ r: 'd' }]);
  });

  it('leaves new keyless tables alone with source.newKeylessTables: leave (their writes then fail, as PostgreSQL does)', async () => {
    const f = await fresh('setup_leave');
    const env = { ...f.env, CDP_NEW_KEYLESS_TABLES: 'leave' };
    expect(cdpSync(env, ['setup', '--no-basebackup']).code).toBe(0);
    await query(f.url, `CREATE TABLE later (x integer); INSERT INTO later VALUES (1)`);
    await expect(query(f.url, `UPDATE later SET x = 2`)).rejects.toThrow(/replica identity/);
  });

  it('refuses an existing publication that filters rows, lists columns or publishes partitions as their root (exit 2)', async () => {
    const f = await fresh('setup_pubshape');
    await query(f.url, `CREATE TABLE a (id integer PRIMARY KEY, v text); CREATE TABLE b (id integer PRIMARY KEY, v text)`);
    const file = join(tmpdir(), `${f.name}.json`);
    writeFileSync(file, JSON.stringify({ source: { tables: ['public.a', 'public.b'] } }));
    await query(f.url, `CREATE PUBLICATION ${f.name} FOR TABLE a WHERE (id > 10), b (id) WITH (publish_via_partition_root = true)`);
    const r = cdpSync(f.env, ['--config', file, 'setup', '--no-basebackup']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/filters the rows of public\.a/);
    expect(r.stderr).toMatch(/publishes only some columns of public\.b/);
    expect(r.stderr).toMatch(/sets publish_via_partition_root/);
    expect((await sourceObjects(f)).slot).toBeNull();
    // The same tables published whole: accepted.
    await query(f.url, `ALTER PUBLICATION ${f.name} SET TABLE a, b; ALTER PUBLICATION ${f.name} SET (publish_via_partition_root = false)`);
    const ok = cdpSync(f.env, ['--config', file, 'setup', '--no-basebackup']);
    expect(ok.code, ok.stderr).toBe(0);
  });

  it('works for a non-superuser with REPLICATION on its own tables, warning that DDL is not captured', async () => {
    const f = await fresh('setup_role');
    const role = `${f.name}_r`;
    roles.push(role);
    await query(ADMIN_URL, `CREATE ROLE ${role} LOGIN REPLICATION`);
    await query(f.url, `GRANT CREATE ON DATABASE ${f.name} TO ${role}; CREATE TABLE owned (id integer PRIMARY KEY); ALTER TABLE owned OWNER TO ${role}`);
    const url = `postgres://${role}@127.0.0.1:5432/${f.name}`;
    // All tables needs a superuser: refused, nothing created.
    const refused = cdpSync({ ...f.env, CDP_SOURCE_URL: url }, ['setup', '--no-basebackup']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/needs a superuser/);
    expect(await sourceObjects(f)).toEqual({ pub: false, slot: null, triggers: 0 });
    // source.tables: its own table.
    const file = join(tmpdir(), `${f.name}.json`);
    writeFileSync(file, JSON.stringify({ source: { tables: ['public.owned'] } }));
    const ok = cdpSync({ ...f.env, CDP_SOURCE_URL: url }, ['--config', file, 'setup', '--no-basebackup']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/schema changes \(DDL\) will NOT be captured/);
    expect(await sourceObjects(f)).toEqual({ pub: true, slot: 'pgoutput', triggers: 0 });
    const tables = await query<{ t: string }>(f.url, `SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = $1`, [f.name]);
    expect(tables).toEqual([{ t: 'public.owned' }]);
  });
});
