import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { PipelinedRun, submitRun } from '../../../src/restore/pipelined-run.js';
import { openOutput } from '../../../src/restore/sink.js';
import { createDatabase, dropDatabase, rand } from './helpers.js';

// The live sink sends the ops queued while the previous message ran as one simple-query message,
// every COPY's data written behind it without waiting for the server's CopyInResponse. On the real
// server: the statements run in order with their data; a failure anywhere in the message runs
// nothing after it, the data still arriving is dropped, and the session stays usable.

const db = `cdp_piperun_${rand()}`;
let url: string;
let c: pg.Client;

const rows = async () => (await c.query<{ id: number; v: string }>('SELECT id, v FROM t ORDER BY id')).rows.map((r) => `${r.id}:${r.v}`);
const cursor = async () => (await c.query<{ n: number }>('SELECT n FROM cur')).rows[0]!.n;

beforeAll(async () => {
  url = await createDatabase(db);
  c = new pg.Client({ connectionString: url });
  await c.connect();
  c.on('error', () => {});
  await c.query('CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); CREATE TABLE cur (n int); INSERT INTO cur VALUES (0);');
});
afterAll(async () => {
  await c.end();
  await dropDatabase(db);
});
beforeEach(async () => {
  await c.query('TRUNCATE t; UPDATE cur SET n = 0');
});

describe('a pipelined message on the real server', () => {
  it('runs statements and COPYs in order, each COPY with its own data', async () => {
    await submitRun(
      c,
      new PipelinedRun([
        'BEGIN; DELETE FROM t;',
        { copy: 'COPY t (id, v) FROM STDIN', data: '1\tone\n2\ttwo\\ttab\n' },
        "UPDATE t SET v = v || '!' WHERE id = 1;",
        { copy: 'COPY t (id, v) FROM STDIN', data: '3\tthree\n' },
        'UPDATE cur SET n = 1; COMMIT;',
      ]),
    );
    expect(await rows()).toEqual(['1:one!', '2:two\ttab', '3:three']);
    expect(await cursor()).toBe(1);
  });

  it('a statement failing before a COPY: nothing after it runs, the COPY data is dropped, the session goes on', async () => {
    const run = new PipelinedRun([
      'BEGIN; INSERT INTO t VALUES (1, $$a$$); SELECT 1/0;',
      { copy: 'COPY t (id, v) FROM STDIN', data: '2\tb\n' },
      'UPDATE cur SET n = 1; COMMIT;',
    ]);
    await expect(submitRun(c, run)).rejects.toThrow(/division by zero/);
    expect((await c.query('ROLLBACK')).command).toBe('ROLLBACK');
    expect(await rows()).toEqual([]);
    expect(await cursor()).toBe(0);
  });

  it('bad COPY data: the rest of the message and the next COPY data are dropped', async () => {
    const run = new PipelinedRun([
      'BEGIN;',
      { copy: 'COPY t (id, v) FROM STDIN', data: '1\ta\nx\tbad\n' },
      { copy: 'COPY t (id, v) FROM STDIN', data: '3\tc\n' },
      'UPDATE cur SET n = 1; COMMIT;',
    ]);
    await expect(submitRun(c, run)).rejects.toThrow(/invalid input syntax for type integer/);
    await c.query('ROLLBACK');
    expect(await rows()).toEqual([]);
    expect(await cursor()).toBe(0);
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('a group committed inside the message stays; the failing one after it does not', async () => {
    const run = new PipelinedRun([
      'BEGIN;',
      { copy: 'COPY t (id, v) FROM STDIN', data: '1\ta\n' },
      'UPDATE cur SET n = 1; COMMIT;\nBEGIN;',
      { copy: 'COPY t (id, v) FROM STDIN', data: '1\tduplicate\n' },
      'UPDATE cur SET n = 2; COMMIT;',
    ]);
    await expect(submitRun(c, run)).rejects.toThrow(/duplicate key/);
    await c.query('ROLLBACK');
    expect(await rows()).toEqual(['1:a']);
    expect(await cursor()).toBe(1);
  });

  it('the live sink: ops queued behind a running one reach the server whole and in order', async () => {
    const { sink } = await openOutput({ dryRun: false }, c, undefined as never);
    await sink.exec('BEGIN; SELECT pg_sleep(0.2);');
    const n = 300;
    for (let i = 0; i < n; i++) {
      if (i % 3 === 0) await sink.copy('COPY t (id, v) FROM STDIN', `${i}\tv${i}\n${i + 1}\tw${i}\n`);
      else if (i % 3 === 1) await sink.exec(`UPDATE t SET v = v || '+' WHERE id = ${i};`);
      else await sink.exec(`DELETE FROM t WHERE id = ${i - 2}; UPDATE cur SET n = ${i};`);
    }
    await sink.exec('COMMIT;');
    await sink.drain();
    const expected: string[] = [];
    for (let i = 0; i < n; i += 3) expected.push(`${i + 1}:w${i}+`);
    expect(await rows()).toEqual(expected);
    expect(await cursor()).toBe(n - 1);
  });
});
