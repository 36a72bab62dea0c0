import { ConfigResourceTypes, Kafka, logLevel } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { startCapture } from '../../../src/capture/capture.js';
import { registry } from '../../../src/util/metrics.js';
import { setup } from '../../../src/capture/setup.js';
import type { ChangeEvent } from '../../../src/format/change-event.js';
import { parseLsn } from '../../../src/util/lsn.js';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import { BROKERS, cdpSync, confirmedFlush, context, freshSource, inCommitOrder, query, readTopic, waitFor, type Fixture } from './helpers.js';

// Capture end to end on the real stack: setup creates everything, capture runs in-process
// (startCapture, stopped by aborting its signal), and the test reads the topic back.

const fixtures: Fixture[] = [];
afterAll(async () => {
  for (const f of fixtures) await f.cleanup().catch((err) => console.error(`cleanup of ${f.name} failed`, err));
});

/** Runs capture in-process on a fixture that must make it stop; returns its handle and the error. */
async function captureUntilItFails(f: Fixture) {
  const ac = new AbortController();
  const handle = await startCapture(context(f.env, ac.signal));
  const err = await handle.done.then(
    () => null,
    (e: unknown) => e,
  );
  ac.abort();
  return { handle, err };
}

async function source(label: string, ddl: string): Promise<Fixture> {
  const f = await freshSource(label);
  fixtures.push(f);
  if (ddl) await query(f.url, ddl);
  const ac = new AbortController();
  await setup(context(f.env, ac.signal));
  return f;
}

/** Runs capture in-process around `work`, until the slot confirmed everything written so far. */
async function captured(f: Fixture, work: () => Promise<void>): Promise<ChangeEvent[]> {
  const ac = new AbortController();
  const handle = await startCapture(context(f.env, ac.signal));
  try {
    await work();
    const [{ lsn }] = await query<{ lsn: string }>(f.url, 'SELECT pg_current_wal_lsn()::text AS lsn');
    const target = parseLsn(lsn);
    await waitFor('capture to confirm the workload', async () => (await confirmedFlush(f.url, f.name)) >= target);
  } finally {
    ac.abort();
    await handle.done;
  }
  return inCommitOrder(await readTopic(f.name));
}

const rowsOf = (evs: ChangeEvent[], table: string, op = 'INSERT') => evs.filter((e) => e.op === op && e.table === table);

describe('capture', () => {
  it('round-trips a broad type fixture exactly as PostgreSQL text output', async () => {
    const f = await source(
      'types',
      `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
       CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
       CREATE TYPE pair AS (a integer, b text);
       CREATE TABLE t (
         id integer PRIMARY KEY,
         n_big numeric(40,20), n_free numeric, f8 float8, f4 float4,
         tz timestamptz, ts timestamp, d date, tm time, ttz timetz, iv interval,
         ai integer[], at text[], j json, jb jsonb, b bytea, u uuid,
         e mood, dom positive_int, comp pair, r int4range, rtz tstzrange,
         m money, bv bit varying(16), bf bit(8), ip inet, net cidr, mac macaddr,
         tx text, vc varchar(20), ch char(5), pt point, tsv tsvector, bo boolean, ea mood[]
       );`,
    );
    const inserts = [
      `INSERT INTO t VALUES (1,
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
      `INSERT INTO t (id, n_free, f8, f4, tz, iv) VALUES (2, '-0.000000000000000000000000000001', '-Infinity', 'NaN', 'infinity', '-178000000 years')`,
      `INSERT INTO t (id, f8, tz, ts) VALUES (3, '1.0000000000000002', '-infinity', 'infinity')`,
      `INSERT INTO t (id, tz, f8) VALUES (4, '1999-12-31 23:00:00 America/New_York', 'NaN')`,
      `INSERT INTO t (id, tz, n_free) VALUES (5, '2000-06-01 12:00:00 Asia/Kathmandu', 1e-300::numeric)`,
      `INSERT INTO t (id) VALUES (6)`,
    ];
    const evs = await captured(f, async () => {
      for (const sql of inserts) await query(f.url, sql);
    });
    const got = rowsOf(evs, 't');
    expect(got.map((e) => e.new![0])).toEqual(['1', '2', '3', '4', '5', '6']);

    const rel = got[0]!.relation!;
    const cols = rel.columns;
    // Compare every value with the source's own text output of the same row. format('%s') calls
    // the type's output function, as the walsender does; a ::text cast differs for two types
    // (boolean casts to 'true' where boolout says 't'; char(n) casts without its padding).
    const select = `SELECT ${cols.map((c) => `CASE WHEN ${c} IS NULL THEN NULL ELSE format('%s', ${c}) END AS "${c}"`).join(', ')} FROM t ORDER BY id`;
    const expected = await query<Record<string, string | null>>(f.url, select);
    expect(got.map((e) => Object.fromEntries(cols.map((c, i) => [c, e.new![i]])))).toEqual(expected);
    for (const e of got) expect(e.unchanged).toEqual([]);

    // Types: format_type, schema-qualified outside pg_catalog.
    const typeOf = (c: string) => rel.types[cols.indexOf(c)];
    expect(typeOf('n_big')).toBe('numeric(40,20)');
    expect(typeOf('e')).toBe('public.mood');
    expect(typeOf('ea')).toBe('public.mood[]');
    expect(typeOf('dom')).toBe('public.positive_int');
    expect(typeOf('comp')).toBe('public.pair');
    expect(typeOf('bv')).toBe('bit varying(16)');
    expect(typeOf('ai')).toBe('integer[]');
    expect(typeOf('tz')).toBe('timestamp with time zone');
    expect(typeOf('vc')).toBe('character varying(20)');
    expect(rel.key).toEqual([0]);
    // NULL is a null, not an unchanged value.
    const six = got[5]!;
    expect(six.new!.slice(1).every((v) => v === null)).toBe(true);
    // Every transaction closes with a COMMIT marker whose position counts its data records.
    const commits = evs.filter((e) => e.op === 'COMMIT' && got.some((g) => g.commitLsn === e.commitLsn));
    expect(commits.map((c) => c.position)).toEqual([1, 1, 1, 1, 1, 1]);

    // Prometheus metrics of the (in-process) capture.
    const text = await registry.metrics();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('cdp_capture_changes_total')).toBeGreaterThanOrEqual(6);
    expect(value('cdp_capture_bytes_total')).toBeGreaterThan(0);
    expect(value('cdp_capture_acknowledged_lsn')).toBeGreaterThan(0);
    expect(text).toMatch(/^cdp_capture_slot_lag_bytes /m);
    expect(text).toMatch(/^cdp_capture_produce_latency_seconds_count [1-9]/m);
  });

  it('marks an untouched TOASTed value as unchanged, and carries old values with REPLICA IDENTITY FULL', async () => {
    const f = await source(
      'toast',
      `CREATE TABLE big (id integer PRIMARY KEY, payload text, note text);
       ALTER TABLE big ALTER COLUMN payload SET STORAGE EXTERNAL;`,
    );
    const payloadSql = `(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 32768) g)`; // 1 MiB
    const evs = await captured(f, async () => {
      await query(f.url, `INSERT INTO big VALUES (1, ${payloadSql}, 'first')`);
      await query(f.url, `UPDATE big SET note = 'second' WHERE id = 1`);
      await query(f.url, `ALTER TABLE big REPLICA IDENTITY FULL`);
      await query(f.url, `UPDATE big SET note = 'third' WHERE id = 1`);
      await query(f.url, `UPDATE big SET payload = NULL WHERE id = 1`);
    });
    const [payload] = await query<{ p: string }>(f.url, `SELECT ${payloadSql} AS p`);
    const ins = rowsOf(evs, 'big');
    expect(ins).toHaveLength(1);
    expect(ins[0]!.new![1]).toBe(payload!.p);
    expect(ins[0]!.new![1]!.length).toBe(1 << 20);
    const ups = rowsOf(evs, 'big', 'UPDATE');
    expect(ups).toHaveLength(3);
    // 1: default identity; payload not touched -> unchanged marker, value not sent.
    expect(ups[0]!.unchanged).toEqual([1]);
    expect(ups[0]!.new).toEqual(['1', null, 'second']);
    expect(ups[0]!.old).toBeNull();
    // 2: REPLICA IDENTITY FULL: the whole old row, the 1 MiB value included.
    expect(ups[1]!.oldKind).toBe('O');
    expect(ups[1]!.old).toEqual(['1', payload!.p, 'second']);
    expect(ups[1]!.new![2]).toBe('third');
    expect(ups[1]!.relation!.replicaIdentity).toBe('f');
    // 3: a real NULL is not "unchanged".
    expect(ups[2]!.new).toEqual(['1', null, 'third']);
    expect(ups[2]!.unchanged).toEqual([]);
  });

  it('puts DDL into the stream at its position, with the relation as it is after each change', async () => {
    const f = await source('ddl', '');
    const evs = await captured(f, async () => {
      await query(f.url, `CREATE TABLE items (id integer PRIMARY KEY, a text)`);
      await query(f.url, `INSERT INTO items VALUES (1, 'one')`);
      await query(
        f.url,
        `BEGIN;
         INSERT INTO items VALUES (2, 'two');
         ALTER TABLE items ADD COLUMN b integer DEFAULT 7;
         INSERT INTO items VALUES (3, 'three', 33);
         COMMIT;`,
      );
      await query(f.url, `ALTER TABLE items RENAME COLUMN a TO label`);
      await query(f.url, `INSERT INTO items VALUES (4, 'four', 44)`);
      await query(f.url, `ALTER TABLE items ALTER COLUMN b TYPE numeric(8,2)`);
      await query(f.url, `INSERT INTO items VALUES (5, 'five', 5.5)`);
      await query(f.url, `ALTER TABLE items DROP COLUMN label`);
      await query(f.url, `INSERT INTO items VALUES (6, 66)`);
      await query(f.url, `DROP TABLE items`);
    });
    const seq = evs
      .filter((e) => e.op === 'DDL' || (e.op === 'INSERT' && e.table === 'items'))
      .map((e) =>
        e.op === 'DDL'
          ? `DDL ${(JSON.parse(e.content!) as { command: string }).command.replace(/\s+/g, ' ').trim()}`
          : `INSERT ${e.new!.join('|')} [${e.relation!.columns.join(',')}:${e.relation!.types.join(',')}]`,
      );
    expect(seq).toEqual([
      'DDL CREATE TABLE items (id integer PRIMARY KEY, a text)',
      'INSERT 1|one [id,a:integer,text]',
      'INSERT 2|two [id,a:integer,text]',
      "DDL BEGIN; INSERT INTO items VALUES (2, 'two'); ALTER TABLE items ADD COLUMN b integer DEFAULT 7; INSERT INTO items VALUES (3, 'three', 33); COMMIT;",
      'INSERT 3|three|33 [id,a,b:integer,text,integer]',
      'DDL ALTER TABLE items RENAME COLUMN a TO label',
      'INSERT 4|four|44 [id,label,b:integer,text,integer]',
      'DDL ALTER TABLE items ALTER COLUMN b TYPE numeric(8,2)',
      'INSERT 5|five|5.50 [id,label,b:integer,text,numeric(8,2)]',
      'DDL ALTER TABLE items DROP COLUMN label',
      'INSERT 6|66.00 [id,b:integer,numeric(8,2)]',
      'DDL DROP TABLE items',
    ]);
    // Positions: inside the multi-statement transaction the DDL sits between the two inserts.
    const tx = evs.filter((e) => e.commitLsn === evs.find((x) => x.op === 'INSERT' && x.new![0] === '3')!.commitLsn);
    expect(tx.map((e) => `${e.position}:${e.op}`)).toEqual(['0:INSERT', '1:DDL', '2:INSERT', '3:COMMIT']);
    const ddl = JSON.parse(evs.find((e) => e.op === 'DDL' && e.content!.includes('DROP TABLE'))!.content!) as Record<string, unknown>;
    expect(ddl).toMatchObject({ v: 2, tag: 'DROP TABLE', searchPath: 'public', seq: 1, nested: false });
    // The multi-statement string carries one event, number 1 among its DDL statements (restore runs only that one).
    const multi = JSON.parse(evs.find((e) => e.op === 'DDL' && e.content!.includes('ADD COLUMN b'))!.content!) as Record<string, unknown>;
    expect(multi).toMatchObject({ tag: 'ALTER TABLE', seq: 1, nested: false, missing: [{ table: 'public.items', column: 'b', value: '{7}' }] });
    expect(ddl.dropped).toEqual(expect.arrayContaining([expect.objectContaining({ identity: 'public.items', objectType: 'table' })]));
  });

  it('records the schemas search_path resolved to for the DDL\'s role, not "$user" (replay runs as another role)', async () => {
    const f = await source('ddlrole', '');
    // Mixed case on purpose: the recorded names are quote_ident'ed.
    const role = `cdpApp_${f.name.slice(-8)}`;
    await query(f.url, `CREATE ROLE "${role}" NOLOGIN; CREATE SCHEMA "${role}" AUTHORIZATION "${role}"`);
    try {
      const evs = await captured(f, async () => {
        await query(f.url, `SET search_path = "$user", public; SET ROLE "${role}"; CREATE TABLE orders (id integer PRIMARY KEY); RESET ROLE`);
      });
      const ddl = evs.filter((e) => e.op === 'DDL').map((e) => JSON.parse(e.content!) as { tag: string; searchPath: string; objects: { identity: string }[] });
      const create = ddl.find((d) => d.tag === 'CREATE TABLE')!;
      expect(create.objects).toEqual(expect.arrayContaining([expect.objectContaining({ identity: `"${role}".orders` })]));
      expect(create.searchPath).toBe(`"${role}", public`);
    } finally {
      await query(f.url, `DROP SCHEMA "${role}" CASCADE; DROP ROLE "${role}"`).catch(() => {});
    }
  });

  it('does not archive a non-transactional logical message: every record belongs to a transaction with a COMMIT marker', async () => {
    const f = await source('ntmsg', `CREATE TABLE t (id integer PRIMARY KEY)`);
    const metric = async () => Number(/^cdp_capture_nontransactional_messages_total (\S+)$/m.exec(await registry.metrics())?.[1] ?? 0);
    const before = await metric();
    const evs = await captured(f, async () => {
      await query(f.url, `SELECT pg_logical_emit_message(false, 'some.tool', 'outside any transaction')`);
      await query(f.url, `INSERT INTO t VALUES (1)`);
    });
    expect(evs.filter((e) => e.op === 'MESSAGE')).toEqual([]);
    expect(evs.filter((e) => e.op !== 'WATERMARK' && e.xid === 0)).toEqual([]);
    const ins = rowsOf(evs, 't');
    expect(ins.map((e) => e.new)).toEqual([['1']]);
    expect(evs.find((e) => e.op === 'COMMIT' && e.commitLsn === ins[0]!.commitLsn)?.position).toBe(1);
    expect(await metric()).toBe(before + 1);
  });

  it('stops with a clear, non-retryable error naming the table when a row exceeds the topic max.message.bytes', async () => {
    const f = await source('toolarge', `CREATE TABLE wide (id integer PRIMARY KEY, v text); ALTER TABLE wide ALTER COLUMN v SET STORAGE EXTERNAL`);
    const limit = 1024 * 1024;
    const kafka = new Kafka({ brokers: BROKERS, logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.alterConfigs({
        validateOnly: false,
        resources: [{ type: ConfigResourceTypes.TOPIC, name: f.name, configEntries: [{ name: 'max.message.bytes', value: String(limit) }] }],
      });
    } finally {
      await admin.disconnect();
    }
    await query(f.url, `INSERT INTO wide VALUES (1, 'small')`);
    await query(f.url, `INSERT INTO wide VALUES (2, repeat('x', 2 * 1024 * 1024))`);
    const { handle, err } = await captureUntilItFails(f);
    // Before: MESSAGE_TOO_LARGE from the broker, retried by a new session forever.
    expect(err).toBeInstanceOf(CdpError);
    const e = err as CdpError;
    expect(e.code).toBe(ErrorCodes.KAFKA);
    expect(e.canRetry).toBe(false);
    expect(e.message).toMatch(/table public\.wide/);
    expect(e.message).toMatch(/max\.message\.bytes = 1048576/);
    expect(e.message).toMatch(/Raise the topic's limit/);
    expect(e.details).toMatchObject({ kafkaError: 'MESSAGE_TOO_LARGE', schema: 'public', table: 'wide', maxMessageBytes: limit });
    expect(e.details.bytes as number).toBeGreaterThan(2 * 1024 * 1024);
    expect(handle.state()).toMatchObject({ phase: 'failed', sessions: 1 });
  });

  it('refuses to start (exit 2) when partitions were added to the topic after setup, naming both counts', async () => {
    const f = await freshSource('addparts', 2);
    fixtures.push(f);
    await query(f.url, `CREATE TABLE t (id integer PRIMARY KEY)`);
    await setup(context(f.env, new AbortController().signal));
    const kafka = new Kafka({ brokers: BROKERS, logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.createPartitions({ topicPartitions: [{ topic: f.name, count: 3 }] });
      await waitFor(
        'the topic to show 3 partitions',
        async () => ((await admin.fetchTopicMetadata({ topics: [f.name] })).topics[0]?.partitions.length ?? 0) === 3,
        60_000,
      );
    } finally {
      await admin.disconnect();
    }
    await query(f.url, `INSERT INTO t VALUES (1)`);
    const { handle, err } = await captureUntilItFails(f);
    expect(err).toBeInstanceOf(CdpError);
    const e = err as CdpError;
    expect(e.exitCode).toBe(2);
    expect(e.canRetry).toBe(false);
    expect(e.message).toMatch(new RegExp(`topic ${f.name} has 3 partitions but the archive .* was set up for 2`));
    expect(e.details).toMatchObject({ topicPartitions: 3, archivePartitions: 2 });
    expect(handle.state()).toMatchObject({ phase: 'failed', sessions: 1 });
    // Nothing was produced and the slot did not move.
    expect((await readTopic(f.name)).length).toBe(0);
    // The CLI exits 2 with the message.
    const r = cdpSync(f.env, ['capture']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/has 3 partitions but the archive .* was set up for 2/);
  });

  it('keeps confirmed_flush_lsn moving on an idle database and does not retain WAL', async () => {
    const f = await source('idle', `CREATE TABLE quiet (id integer PRIMARY KEY)`);
    // Unpublished activity elsewhere in the cluster: WAL that this slot must not hold on to.
    const other = await freshSource('idle_other');
    fixtures.push(other);
    await query(other.url, `CREATE TABLE noise (id integer, pad text)`);
    const ac = new AbortController();
    const handle = await startCapture(context(f.env, ac.signal));
    try {
      for (let round = 0; round < 3; round++) {
        await query(other.url, `INSERT INTO noise SELECT g, repeat('x', 200) FROM generate_series(1, 50000) g`);
        const [{ lsn }] = await query<{ lsn: string }>(f.url, 'SELECT pg_current_wal_lsn()::text AS lsn');
        const target = parseLsn(lsn);
        await waitFor(`confirmed_flush_lsn to pass ${lsn}`, async () => (await confirmedFlush(f.url, f.name)) >= target);
      }
      // restart_lsn follows once the server logs a running-xacts record (checkpoints / bgwriter);
      // ask for a checkpoint so the test does not wait for the 15 s background interval.
      await query(f.url, 'CHECKPOINT');
      await waitFor('retained WAL to shrink below 16 MB', async () => {
        const [r] = await query<{ retained: string }>(
          f.url,
          `SELECT (pg_current_wal_lsn() - restart_lsn)::text AS retained FROM pg_replication_slots WHERE slot_name = $1`,
          [f.name],
        );
        return Number(r!.retained) < 16 * 1024 * 1024;
      });
    } finally {
      ac.abort();
      await handle.done;
    }
    // Heartbeats made watermarks in every partition, and no data record was produced.
    const recs = await readTopic(f.name);
    const wm = recs.filter((r) => r.ev.op === 'WATERMARK');
    expect(new Set(wm.map((r) => r.partition))).toEqual(new Set([0, 1, 2]));
    for (const r of wm) expect(JSON.parse(r.ev.content!)).toEqual({ partition: r.partition });
    expect(recs.filter((r) => r.ev.op !== 'WATERMARK')).toEqual([]);
  });
});
