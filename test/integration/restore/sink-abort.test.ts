import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { abandonLive, openOutput } from '../../../src/restore/sink.js';
import { createDatabase, dropDatabase, rand, withClient } from './helpers.js';

// A live restore that fails anywhere but in a statement (a corrupt segment, a gap, a refused DDL)
// while the sink still holds part of a group: the target keeps the whole group with its cursor or
// none of it, on the real server. Before abandonLive, the ROLLBACK overtook the queued rest of the
// group, which then committed on its own with its cursor update: row 1 lost on resume.

const db = `cdp_sinkab_${rand()}`;
let url: string;

beforeAll(async () => {
  url = await createDatabase(db);
  await withClient(url, (c) => c.query('CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE cur (n int); INSERT INTO cur VALUES (0);'));
});
afterAll(async () => {
  await dropDatabase(db);
});

describe('live sink after a failure elsewhere', () => {
  it('rolls back the open group whole, its cursor with it', async () => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    client.on('error', () => {});
    const { sink } = await openOutput({ dryRun: false }, client, undefined as never);
    // One target group in two ops (a run is cut at 1 MB, a COPY cuts it too); the first still runs.
    await sink.exec('BEGIN; INSERT INTO t VALUES (1); SELECT pg_sleep(0.5);');
    await sink.exec('INSERT INTO t VALUES (2); UPDATE cur SET n = 2; COMMIT;');
    await abandonLive(sink, client);
    await client.end();
    const state = await withClient(url, async (c) => ({
      rows: (await c.query<{ id: number }>('SELECT id FROM t ORDER BY id')).rows.map((r) => r.id),
      cursor: (await c.query<{ n: number }>('SELECT n FROM cur')).rows[0]!.n,
    }));
    expect(state).toEqual({ rows: [], cursor: 0 });
  });
});
