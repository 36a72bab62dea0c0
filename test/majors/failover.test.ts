import { afterAll, describe, expect, it } from 'vitest';
import { pipelineEnv, rand, runCli, stackEnvironment } from '../integration/restore/helpers.js';
import { withClient } from '../support/stack.js';
import { createDb, deleteTopics, dropDb, type Major } from './support.js';

// source.failoverSlot (CDP_FAILOVER_SLOT): on 17+ setup creates the slot with failover = true (a
// standby with sync_replication_slots keeps a copy, capture/failover.ts); on 15 and 16 setup
// refuses it and creates nothing, since no standby could carry the slot there.

stackEnvironment();
const made: Array<[Major, string]> = [];

afterAll(async () => {
  for (const [m, db] of made) await dropDb(m, db);
  await deleteTopics(made.map(([, db]) => db));
});

async function source(major: Major): Promise<{ url: string; env: Record<string, string> }> {
  const name = `fo${major}_${rand()}`;
  const url = await createDb(major, name);
  made.push([major, name]);
  await withClient(url, (c) => c.query('CREATE TABLE t (id int PRIMARY KEY)'));
  return { url, env: pipelineEnv(name, url, 'test-failover') };
}

const slotFailover = (url: string, slot: string) =>
  withClient(url, async (c) =>
    (await c.query<{ failover: boolean }>('SELECT failover FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows.map((r) => r.failover),
  );

describe('failover slots', () => {
  it('17 and 18: setup makes a failover slot when asked, a plain one otherwise, and warns about a slot that differs', async () => {
    for (const m of [17, 18] as Major[]) {
      const a = await source(m);
      const r = await runCli(['setup', '--no-basebackup'], { ...a.env, CDP_FAILOVER_SLOT: 'true' });
      expect(r.code, r.stderr).toBe(0);
      expect(await slotFailover(a.url, a.env.CDP_SLOT!)).toEqual([true]);
      const b = await source(m);
      const plain = await runCli(['setup', '--no-basebackup'], b.env);
      expect(plain.code, plain.stderr).toBe(0);
      expect(await slotFailover(b.url, b.env.CDP_SLOT!)).toEqual([false]);
      const again = await runCli(['setup', '--no-basebackup'], { ...b.env, CDP_FAILOVER_SLOT: 'true' });
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).toContain(`slot ${b.env.CDP_SLOT} exists with failover = false, but source.failoverSlot is true`);
    }
  });

  it('15 and 16: refused before anything is created', async () => {
    for (const m of [15, 16] as Major[]) {
      const a = await source(m);
      const r = await runCli(['setup', '--no-basebackup'], { ...a.env, CDP_FAILOVER_SLOT: 'true' });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('source.failoverSlot needs PostgreSQL 17 or newer');
      expect(
        await withClient(a.url, async (c) => (await c.query('SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1', [a.env.CDP_SLOT])).rowCount),
      ).toBe(0);
    }
  });
});
