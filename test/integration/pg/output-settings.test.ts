import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pluginOptions, ReplicationStream } from '../../../src/pg/replication-stream.js';
import { adminUrl, createDatabase, dropDatabase, withClient } from '../../support/stack.js';

// pgoutput formats values with the walsender session's settings. A database default of
// DateStyle 'SQL, DMY', IntervalStyle 'sql_standard' and extra_float_digits = 0 must not reach
// the stream: the replication connection forces ISO / postgres / 3, as PostgreSQL's own
// logical replication does.

const DB = `cdp_fmt_${randomBytes(4).toString('hex')}`;
const SLOT = `${DB}_slot`;
const PUB = `${DB}_pub`;
const log = pino({ level: process.env.CDP_LOG_LEVEL ?? 'warn' });
let url = '';
let rs: ReplicationStream | undefined;

beforeAll(async () => {
  url = await createDatabase(DB);
  await withClient(adminUrl(), async (c) => {
    await c.query(`ALTER DATABASE ${DB} SET datestyle = 'SQL, DMY'`);
    await c.query(`ALTER DATABASE ${DB} SET intervalstyle = 'sql_standard'`);
    await c.query(`ALTER DATABASE ${DB} SET extra_float_digits = 0`);
  });
  await withClient(url, async (c) => {
    await c.query(`CREATE TABLE t (id int PRIMARY KEY, d date, ts timestamptz, f float8, r real, iv interval)`);
    await c.query(`CREATE PUBLICATION ${PUB} FOR TABLE t`);
    await c.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [SLOT]);
  });
}, 120_000);

afterAll(async () => {
  await rs?.close();
  await dropDatabase(DB);
}, 60_000);

const ROW = `(1, DATE '2024-03-07', TIMESTAMPTZ '2024-03-07 10:11:12.345678+00', 0.1::float8 + 0.2::float8, 0.1::real, INTERVAL '1 year 2 mons 3 days 04:05:06.5')`;

describe('replication connection output settings', () => {
  it('decodes values as ISO / postgres / extra_float_digits=3 whatever the database defaults', async () => {
    const [expected, plain] = await withClient(url, async (c) => {
      const sel = `SELECT d::text, ts::text, f::text, r::text, iv::text FROM (VALUES ${ROW}) v(id, d, ts, f, r, iv)`;
      const p = (await c.query({ text: sel, rowMode: 'array' })).rows[0] as string[];
      await c.query(`SET datestyle = ISO; SET intervalstyle = postgres; SET extra_float_digits = 3`);
      const e = (await c.query({ text: sel, rowMode: 'array' })).rows[0] as string[];
      await c.query(`INSERT INTO t VALUES ${ROW}`);
      return [e, p];
    });
    // The database defaults really are in effect on an ordinary session (the test means something).
    expect(plain[0]).toBe('07/03/2024');
    expect(plain[2]).toBe('0.3');
    expect(plain[4]).not.toBe(expected[4]);
    expect(expected[2]).toBe('0.30000000000000004');

    const version = await withClient(url, async (c) => Number((await c.query('SHOW server_version_num')).rows[0].server_version_num));
    rs = new ReplicationStream({ connectionString: url, log });
    await rs.start(SLOT, 0, pluginOptions(PUB, version));
    let values: (string | null)[] | undefined;
    const deadline = Date.now() + 60_000;
    for await (const ev of rs) {
      if (ev.kind === 'data' && ev.message.tag === 'insert') {
        values = ev.message.new.values;
        break;
      }
      if (Date.now() > deadline) throw new Error('no insert within 60 s');
    }
    expect(values!.slice(1)).toEqual(expected);
  }, 120_000);
});
