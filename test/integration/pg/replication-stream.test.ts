import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import type { Begin, Commit, PgoutputMessage, Relation } from '../../../src/pg/pgoutput.js';
import { pluginOptions, ReplicationStream, type StreamEvent } from '../../../src/pg/replication-stream.js';
import { formatLsn, parseLsn } from '../../../src/util/lsn.js';

// Real Postgres (wal_level=logical), a scratch database, publication and slot of our own.
// What this proves beyond the unit tests: the decoder reads what Postgres 15 really sends, and
// acknowledgement is ours alone (G1): the slot's confirmed_flush_lsn moves exactly to what we
// confirm, never to what we merely received, and unconfirmed transactions come back on restart.

const ADMIN_URL = process.env.CDP_TEST_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DB = `cdp_rs_${randomBytes(4).toString('hex')}`;
const SLOT = `${DB}_slot`;
const PUB = `${DB} pub`; // a space and mixed quoting on purpose: publication_names must be quoted
const log = pino({ level: process.env.CDP_LOG_LEVEL ?? 'warn' });

function dbUrl(database: string, params: Record<string, string> = {}): string {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${database}`;
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.toString();
}

let admin: pg.Client;
let db: pg.Client;
let serverVersionNum = 0;
const streams: ReplicationStream[] = [];
let created = false;

function newStream(opts: Partial<ConstructorParameters<typeof ReplicationStream>[0]> = {}): ReplicationStream {
  const rs = new ReplicationStream({ connectionString: dbUrl(DB), log, ...opts });
  streams.push(rs);
  return rs;
}

async function waitForLogical(client: pg.Client): Promise<void> {
  const deadline = Date.now() + 5 * 60_000;
  for (;;) {
    const level = (await client.query<{ wal_level: string }>('SHOW wal_level')).rows[0]!.wal_level;
    if (level === 'logical') return;
    if (Date.now() > deadline) {
      throw new Error(`wal_level is still '${level}' after 5 minutes; logical replication needs wal_level=logical (run: bash deploy/local/stack.sh up)`);
    }
    await sleep(5_000);
  }
}

async function connectAdmin(): Promise<pg.Client> {
  const deadline = Date.now() + 5 * 60_000;
  for (;;) {
    const c = new pg.Client({ connectionString: ADMIN_URL });
    try {
      await c.connect();
      return c;
    } catch (err) {
      await c.end().catch(() => undefined);
      if (Date.now() > deadline) throw new Error(`Postgres at ${ADMIN_URL} unreachable for 5 minutes: ${String(err)}`, { cause: err });
      await sleep(2_000);
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function slotConfirmedFlush(): Promise<number> {
  const r = await db.query<{ lsn: string }>('SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [SLOT]);
  return parseLsn(r.rows[0]!.lsn);
}

async function slotActivePid(): Promise<number | null> {
  const r = await db.query<{ pid: number | null }>('SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1', [SLOT]);
  return r.rows[0]?.pid ?? null;
}

async function waitFor<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last value ${JSON.stringify(v)}`);
    await sleep(100);
  }
}

interface Txn {
  begin: Begin;
  changes: PgoutputMessage[];
  commit: Commit;
}

/** Reads whole transactions (relation/type messages go to `relations`; keepalives are counted). */
class Reader {
  readonly it: AsyncIterator<StreamEvent>;
  readonly relations = new Map<number, Relation>();
  keepalives = 0;
  repliesRequested = 0;
  constructor(readonly rs: ReplicationStream) {
    this.it = rs[Symbol.asyncIterator]();
  }

  async event(timeoutMs = 60_000): Promise<StreamEvent> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no replication event within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const r = await Promise.race([this.it.next(), timeout]);
      if (r.done) throw new Error('replication stream ended');
      return r.value;
    } finally {
      clearTimeout(timer);
    }
  }

  async data(): Promise<PgoutputMessage> {
    for (;;) {
      const ev = await this.event();
      if (ev.kind === 'keepalive') {
        this.keepalives++;
        if (ev.replyRequested) this.repliesRequested++;
        continue;
      }
      const m = ev.message;
      if (m.tag === 'relation') {
        this.relations.set(m.oid, m);
        continue;
      }
      if (m.tag === 'type') continue;
      return m;
    }
  }

  async txn(): Promise<Txn> {
    const begin = await this.data();
    if (begin.tag !== 'begin') throw new Error(`expected begin, got ${JSON.stringify(begin)}`);
    const changes: PgoutputMessage[] = [];
    for (;;) {
      const m = await this.data();
      if (m.tag === 'commit') return { begin, changes, commit: m };
      if (m.tag === 'begin') throw new Error('begin inside a transaction');
      changes.push(m);
    }
  }
}

/** Runs statements in one transaction on the scratch database. */
async function tx(...sql: (string | [string, unknown[]])[]): Promise<void> {
  await db.query('BEGIN');
  try {
    for (const s of sql) {
      if (typeof s === 'string') await db.query(s);
      else await db.query(s[0], s[1]);
    }
    await db.query('COMMIT');
  } catch (err) {
    await db.query('ROLLBACK');
    throw err;
  }
}

beforeAll(async () => {
  admin = await connectAdmin();
  await waitForLogical(admin);
  serverVersionNum = Number((await admin.query<{ v: string }>('SHOW server_version_num')).rows[0]!.v);
  await admin.query(`CREATE DATABASE ${DB}`);
  created = true;
  db = new pg.Client({ connectionString: dbUrl(DB) });
  await db.connect();
  await db.query(`CREATE TABLE items (id bigint PRIMARY KEY, n int, big text, note text)`);
  // Out-of-line storage without compression: the 1 MB value is certainly TOASTed.
  await db.query(`ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL`);
  await db.query(`CREATE TABLE full_rows (id int, v text)`);
  await db.query(`ALTER TABLE full_rows REPLICA IDENTITY FULL`);
  await db.query(`CREATE PUBLICATION "${PUB.replaceAll('"', '""')}" FOR TABLE items, full_rows`);
  await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [SLOT]);
});

afterAll(async () => {
  for (const rs of streams) await rs.close();
  if (db) {
    try {
      // A walsender still holding the slot (a failed test) would block the drop.
      const pid = await slotActivePid().catch(() => null);
      if (pid) await db.query('SELECT pg_terminate_backend($1)', [pid]);
      await waitFor('slot to be released', slotActivePid, (p) => p === null, 10_000).catch(() => undefined);
      await db.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [SLOT]);
    } finally {
      await db.end().catch(() => undefined);
    }
  }
  if (admin) {
    try {
      if (created) await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    } finally {
      await admin.end();
    }
  }
});

describe('ReplicationStream on a real Postgres', () => {
  const big = randomBytes(512 * 1024).toString('hex'); // 1 MB of text that does not compress away
  const unicode = 'é € 中文 𝄞 😀 𠜎 \t"\\\'';
  let rs: ReplicationStream;
  let reader: Reader;
  const received: Txn[] = [];

  it('pluginOptions quotes the publication and asks for protocol 1 with messages', () => {
    expect(pluginOptions('My "pub", x', serverVersionNum)).toEqual({
      proto_version: '1',
      publication_names: '"My ""pub"", x"',
      messages: 'true',
    });
    expect(() => pluginOptions('p', 130011)).toThrow(/14 or newer/);
  });

  it('identifies the system', async () => {
    rs = newStream({ statusIntervalMs: 200 });
    const id = await rs.identifySystem();
    expect(id.dbname).toBe(DB);
    expect(id.systemId).toMatch(/^\d+$/);
    expect(id.timeline).toBeGreaterThanOrEqual(1);
    expect(id.xlogpos).toBeGreaterThan(0);
  });

  it('decodes inserts, updates (unchanged TOAST, key change, full old row), deletes, truncate and messages', async () => {
    const itemsOid = Number((await db.query<{ oid: string }>(`SELECT 'items'::regclass::oid AS oid`)).rows[0]!.oid);
    const fullOid = Number((await db.query<{ oid: string }>(`SELECT 'full_rows'::regclass::oid AS oid`)).rows[0]!.oid);

    await tx([`INSERT INTO items VALUES (1, 10, $1, 'a'), (2, 20, NULL, '')`, [big]]); // 1
    await tx(`UPDATE items SET n = 11 WHERE id = 1`); // 2: big is not touched
    await tx(`UPDATE items SET id = 3 WHERE id = 2`); // 3: key change
    await tx(`DELETE FROM items WHERE id = 3`); // 4
    await tx(`SELECT pg_logical_emit_message(true, 'cdp.test', 'hello')`); // 5
    await tx([`INSERT INTO items VALUES (4, NULL, NULL, $1)`, [unicode]]); // 6
    await tx(`INSERT INTO full_rows VALUES (1, 'x')`, `UPDATE full_rows SET v = 'y'`, `DELETE FROM full_rows`); // 7
    await tx(`TRUNCATE items RESTART IDENTITY`); // 8

    await rs.start(SLOT, 0, pluginOptions(PUB, serverVersionNum));
    reader = new Reader(rs);
    for (let i = 0; i < 8; i++) received.push(await reader.txn());
    const ch = received.map((t) => t.changes);

    expect(ch[0]).toEqual([
      { tag: 'insert', relationOid: itemsOid, new: { values: ['1', '10', big, 'a'], unchanged: [] } },
      { tag: 'insert', relationOid: itemsOid, new: { values: ['2', '20', null, ''], unchanged: [] } },
    ]);
    // The TOASTed value was not touched: sent as 'u', null in values and listed as unchanged.
    expect(ch[1]).toEqual([{ tag: 'update', relationOid: itemsOid, oldKind: null, old: null, new: { values: ['1', '11', null, 'a'], unchanged: [2] } }]);
    expect(ch[2]).toEqual([
      {
        tag: 'update',
        relationOid: itemsOid,
        oldKind: 'K',
        old: { values: ['2', null, null, null], unchanged: [] },
        new: { values: ['3', '20', null, ''], unchanged: [] },
      },
    ]);
    expect(ch[3]).toEqual([{ tag: 'delete', relationOid: itemsOid, oldKind: 'K', old: { values: ['3', null, null, null], unchanged: [] } }]);
    expect(ch[4]).toHaveLength(1);
    const msg = ch[4]![0]!;
    expect(msg).toMatchObject({ tag: 'message', transactional: true, prefix: 'cdp.test' });
    if (msg.tag !== 'message') throw new Error('unreachable');
    expect(msg.content.toString('utf8')).toBe('hello');
    expect(msg.lsn).toBeGreaterThanOrEqual(received[4]!.begin.finalLsn - 1_000_000);
    expect(ch[5]).toEqual([{ tag: 'insert', relationOid: itemsOid, new: { values: ['4', null, null, unicode], unchanged: [] } }]);
    expect(ch[6]).toEqual([
      { tag: 'insert', relationOid: fullOid, new: { values: ['1', 'x'], unchanged: [] } },
      { tag: 'update', relationOid: fullOid, oldKind: 'O', old: { values: ['1', 'x'], unchanged: [] }, new: { values: ['1', 'y'], unchanged: [] } },
      { tag: 'delete', relationOid: fullOid, oldKind: 'O', old: { values: ['1', 'y'], unchanged: [] } },
    ]);
    expect(ch[7]).toEqual([{ tag: 'truncate', cascade: false, restartIdentity: true, relationOids: [itemsOid] }]);

    expect(reader.relations.get(itemsOid)).toEqual({
      tag: 'relation',
      oid: itemsOid,
      schema: 'public',
      name: 'items',
      replicaIdentity: 'd',
      columns: [
        { flags: 1, name: 'id', typeOid: 20, typmod: -1 },
        { flags: 0, name: 'n', typeOid: 23, typmod: -1 },
        { flags: 0, name: 'big', typeOid: 25, typmod: -1 },
        { flags: 0, name: 'note', typeOid: 25, typmod: -1 },
      ],
    });
    expect(reader.relations.get(fullOid)).toMatchObject({ name: 'full_rows', replicaIdentity: 'f' });

    // Transaction framing: begin.finalLsn = commit.commitLsn < commit.endLsn, in increasing order;
    // commit times are Unix microseconds of today.
    let prev = 0;
    for (const t of received) {
      expect(t.begin.finalLsn).toBe(t.commit.commitLsn);
      expect(t.commit.endLsn).toBeGreaterThan(t.commit.commitLsn);
      expect(t.commit.commitLsn).toBeGreaterThan(prev);
      prev = t.commit.endLsn;
      expect(t.commit.commitTime).toBe(t.begin.commitTime);
      expect(Math.abs(t.commit.commitTime / 1000 - Date.now())).toBeLessThan(10 * 60_000);
    }
    expect(rs.receivedLsn).toBeGreaterThanOrEqual(received[7]!.commit.commitLsn);
  });

  it('never acknowledges by itself: the slot does not move while nothing is confirmed', async () => {
    const initial = await slotConfirmedFlush();
    // Status updates have been going out every 200 ms since start, and we hold 8 transactions.
    await sleep(1_500);
    expect(rs.confirmedLsn).toBe(0);
    expect(await slotConfirmedFlush()).toBe(initial);
    expect(initial).toBeLessThan(received[0]!.commit.commitLsn);
  });

  it('moves confirmed_flush_lsn exactly to the confirmed LSN, and not past it', async () => {
    const x = received[1]!.commit.endLsn; // transactions 1 and 2 are "durable downstream"
    rs.confirm(x);
    rs.confirm(x - 1); // never backwards
    expect(rs.confirmedLsn).toBe(x);
    rs.sendStatus();
    await waitFor(`confirmed_flush_lsn = ${formatLsn(x)}`, slotConfirmedFlush, (v) => v === x);

    // More data arrives and is received; time passes with status updates and keepalives.
    await tx(`INSERT INTO items VALUES (5, 50, NULL, 'late')`);
    const late = await reader.txn();
    received.push(late);
    expect(late.changes).toMatchObject([{ tag: 'insert', new: { values: ['5', '50', null, 'late'] } }]);
    await sleep(1_500);
    rs.sendStatus(true);
    await sleep(300);
    expect(await slotConfirmedFlush()).toBe(x);
    expect(rs.receivedLsn).toBeGreaterThan(x);
  });

  it('re-delivers unconfirmed transactions after a restart from the slot', async () => {
    await rs.close();
    await rs.close(); // idempotent
    await waitFor('slot to be released', slotActivePid, (p) => p === null);
    expect(await slotConfirmedFlush()).toBe(received[1]!.commit.endLsn);

    const again = newStream({ statusIntervalMs: 200 });
    await again.start(SLOT, 0, pluginOptions(PUB, serverVersionNum));
    const r2 = new Reader(again);
    const replay: Txn[] = [];
    for (let i = 2; i < received.length; i++) replay.push(await r2.txn());
    // Exactly the unconfirmed transactions, from the first one after the confirmed point.
    expect(replay.map((t) => t.commit.commitLsn)).toEqual(received.slice(2).map((t) => t.commit.commitLsn));
    expect(replay.map((t) => t.begin.xid)).toEqual(received.slice(2).map((t) => t.begin.xid));
    expect(replay[0]!.changes).toEqual(received[2]!.changes);

    // Confirm everything now: the next restart has nothing to re-deliver.
    const last = received[received.length - 1]!.commit.endLsn;
    again.confirm(last);
    await again.close(); // close() sends a last status update before CopyDone
    await waitFor('slot to be released', slotActivePid, (p) => p === null);
    expect(await slotConfirmedFlush()).toBe(last);

    await tx(`INSERT INTO items VALUES (6, 60, NULL, 'after')`);
    const third = newStream();
    await third.start(SLOT, 0, pluginOptions(PUB, serverVersionNum));
    const t = await new Reader(third).txn();
    expect(t.changes).toMatchObject([{ tag: 'insert', new: { values: ['6', '60', null, 'after'] } }]);
    third.confirm(t.commit.endLsn);
    await third.close();
    await waitFor('slot to be released', slotActivePid, (p) => p === null);
  });

  it('answers keepalives that request a reply while the consumer is not reading', async () => {
    // wal_sender_timeout can be set per replication connection (PostgreSQL 12+). With 2 s the server
    // requests a reply after 1 s of silence; the status timer is far away, so only the keepalive
    // replies from the socket handler keep the connection alive.
    const quick = new ReplicationStream({
      connectionString: dbUrl(DB, { options: '-c wal_sender_timeout=2s' }),
      log,
      statusIntervalMs: 3_600_000,
    });
    streams.push(quick);
    await quick.start(SLOT, 0, pluginOptions(PUB, serverVersionNum));
    await sleep(6_000); // nobody calls next()
    await tx(`INSERT INTO items VALUES (7, 70, NULL, 'kept alive')`);
    const r = new Reader(quick);
    const t = await r.txn();
    expect(t.changes).toMatchObject([{ tag: 'insert', new: { values: ['7', '70', null, 'kept alive'] } }]);
    expect(r.repliesRequested).toBeGreaterThanOrEqual(2);
    quick.confirm(t.commit.endLsn);
    await quick.close();
    await waitFor('slot to be released', slotActivePid, (p) => p === null);
  });

  it('keeps the connection alive from the status timer while back-pressure pauses the socket', async () => {
    const paused = new ReplicationStream({
      connectionString: dbUrl(DB, { options: '-c wal_sender_timeout=2s' }),
      log,
      statusIntervalMs: 300,
      highWaterMark: 2,
    });
    streams.push(paused);
    await paused.start(SLOT, 0, pluginOptions(PUB, serverVersionNum));
    for (let i = 0; i < 5; i++) await tx([`INSERT INTO items VALUES ($1::int, $1::int, NULL, 'bp')`, [100 + i]]);
    await sleep(6_000); // consumer blocked (on Kafka, say): buffer full, socket paused
    expect(paused.buffered).toBeGreaterThanOrEqual(2);
    expect(paused.buffered).toBeLessThan(50);
    expect(paused.isPaused).toBe(true);
    const r = new Reader(paused);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const t = await r.txn();
      ids.push((t.changes[0] as { new: { values: string[] } }).new.values[0]!);
    }
    expect(ids).toEqual(['100', '101', '102', '103', '104']);
    // Those were already in our socket buffer; a new transaction proves the walsender is still there.
    await tx(`INSERT INTO items VALUES (105, 105, NULL, 'still here')`);
    const t = await r.txn();
    expect(t.changes).toMatchObject([{ tag: 'insert', new: { values: ['105', '105', null, 'still here'] } }]);
    paused.confirm(t.commit.endLsn);
    await paused.close();
    await waitFor('slot to be released', slotActivePid, (p) => p === null);
  });

  it('bounds the buffer by bytes, not only by count: large rows pause the socket near highWaterBytes', async () => {
    // 40 rows of 256 KB (10 MB) against a 1 MiB byte bound and the default count bound (10,000
    // events, which these rows never reach): only the byte bound can pause the socket.
    const rows = 40;
    const rowText = randomBytes(128 * 1024).toString('hex');
    const limit = 1024 * 1024;
    const bounded = newStream({ statusIntervalMs: 300, highWaterBytes: limit });
    await bounded.start(SLOT, 0, pluginOptions(PUB, serverVersionNum));
    for (let i = 0; i < rows; i++) await tx([`INSERT INTO items VALUES ($1::int, $1::int, $2, 'big')`, [200 + i, rowText]]);
    await waitFor(
      'the socket to pause',
      async () => bounded.isPaused,
      (p) => p,
    );
    await sleep(1_000); // nobody reads: nothing more may arrive while paused
    expect(bounded.isPaused).toBe(true);
    // Past the bound by at most the rest of one socket read and one message (a row here).
    expect(bounded.bufferedBytes).toBeGreaterThanOrEqual(limit);
    expect(bounded.bufferedBytes).toBeLessThan(limit + 2 * rowText.length + 256 * 1024);
    expect(bounded.buffered).toBeLessThan(rows);

    const r = new Reader(bounded);
    const ids: string[] = [];
    let maxBytes = 0;
    for (let i = 0; i < rows; i++) {
      const t = await r.txn();
      const v = (t.changes[0] as { new: { values: (string | null)[] } }).new.values;
      expect(v[2]).toBe(rowText);
      ids.push(v[0]!);
      maxBytes = Math.max(maxBytes, bounded.bufferedBytes);
      bounded.confirm(t.commit.endLsn);
    }
    // Every row arrived, in order: reading resumed below half of the bound each time.
    expect(ids).toEqual(Array.from({ length: rows }, (_, i) => String(200 + i)));
    expect(maxBytes).toBeLessThan(limit + 2 * rowText.length + 256 * 1024);
    expect(bounded.bufferedBytes).toBeLessThanOrEqual(limit / 2); // keepalives may wait
    expect(bounded.isPaused).toBe(false);
    await bounded.close();
    await waitFor('slot to be released', slotActivePid, (p) => p === null);
  });

  it('rejects a byte bound below 1', () => {
    expect(() => new ReplicationStream({ connectionString: dbUrl(DB), log, highWaterBytes: 0 })).toThrow(/highWaterBytes must be >= 1/);
  });

  it('fails start() with SQLSTATE 55006 (retryable) when the slot is in use, and close() is safe after it', async () => {
    const holder = newStream();
    await holder.start(SLOT, 0, pluginOptions(PUB, serverVersionNum));
    const second = newStream();
    const err = await second.start(SLOT, 0, pluginOptions(PUB, serverVersionNum)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).code).toBe(ErrorCodes.PG_ERROR);
    expect((err as CdpError).details.sqlstate).toBe('55006');
    expect((err as CdpError).canRetry).toBe(true);
    await expect(second[Symbol.asyncIterator]().next()).rejects.toBe(err);
    await second.close();
    await second.close();

    // Connection cut mid-stream (the walsender is terminated): iteration ends with a retryable
    // CdpError keeping the SQLSTATE (57P01) or, if the socket went first, SOURCE_UNREACHABLE.
    const it = holder[Symbol.asyncIterator]();
    const pid = await waitFor('walsender pid', slotActivePid, (p) => p !== null);
    await db.query('SELECT pg_terminate_backend($1)', [pid]);
    let cut: unknown;
    try {
      for (;;) await it.next();
    } catch (e) {
      cut = e;
    }
    expect(cut).toBeInstanceOf(CdpError);
    expect([ErrorCodes.PG_ERROR, ErrorCodes.SOURCE_UNREACHABLE]).toContain((cut as CdpError).code);
    expect((cut as CdpError).canRetry).toBe(true);
    if ((cut as CdpError).code === ErrorCodes.PG_ERROR) expect((cut as CdpError).details.sqlstate).toBe('57P01');
    await holder.close();
    await holder.close();
    holder.sendStatus(); // no-op after close
    await waitFor('slot to be released', slotActivePid, (p) => p === null);
  });

  it('fails with SQLSTATE 42704 (not retryable) for a missing slot', async () => {
    const rs2 = newStream();
    const err = await rs2.start(`${SLOT}_missing`, 0, pluginOptions(PUB, serverVersionNum)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).details.sqlstate).toBe('42704');
    expect((err as CdpError).canRetry).toBe(false);
    await rs2.close();
  });

  it('fails with SOURCE_UNREACHABLE (retryable) when nothing listens', async () => {
    const rs3 = new ReplicationStream({ connectionString: 'postgres://postgres@127.0.0.1:1/postgres', log });
    streams.push(rs3);
    const err = await rs3.identifySystem().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).code).toBe(ErrorCodes.SOURCE_UNREACHABLE);
    expect((err as CdpError).canRetry).toBe(true);
    expect((err as CdpError).details.errno).toBe('ECONNREFUSED');
    await rs3.close();
  });
});
