import { afterAll, describe, expect, it } from 'vitest';
import { startArchiver } from '../../../src/archive/archiver.js';
import { restorablePoint } from '../../../src/archive/catalog.js';
import { startCapture } from '../../../src/capture/capture.js';
import { setup } from '../../../src/capture/setup.js';
import { archiveRoot } from '../../../src/config/config.js';
import { parseLsn } from '../../../src/util/lsn.js';
import type { ChangeEvent } from '../../../src/format/change-event.js';
import { context, freshSource, query, type Fixture } from '../capture/helpers.js';
import { readArchiveWithAvsc, testStore, uniqueChanges, waitFor } from './helpers.js';

// A real workload through capture + archive (both in-process, as `cdp run` composes them): the
// archive, read back with avsc's own container decoder and deduplicated by identity, replays to
// exactly the source table's contents, and every archived transaction is complete.

const fixtures: Fixture[] = [];
afterAll(async () => {
  for (const f of fixtures) await f.cleanup();
});

describe('capture + archive on a real workload', () => {
  it('the archive replays to exactly the source table, every transaction complete', async () => {
    const f = await freshSource('arch', 3);
    fixtures.push(f);
    const env = { ...f.env, CDP_SEGMENT_MAX_AGE_MS: '500', CDP_HEARTBEAT_INTERVAL_MS: '500' };
    await query(f.url, `CREATE TABLE items (id bigint PRIMARY KEY, qty int NOT NULL, note text, price numeric(12,2), at timestamptz DEFAULT now())`);
    const controller = new AbortController();
    const ctx = context(env, controller.signal);
    await setup(ctx);
    const capture = await startCapture(ctx);
    const archiver = await startArchiver(ctx, { clientSuffix: f.name });
    let target: number;
    try {
      await query(f.url, `INSERT INTO items (id, qty, note, price) SELECT g, g % 17, md5(g::text), (g * 1.25)::numeric FROM generate_series(1, 3000) g`);
      for (let i = 0; i < 150; i++) await query(f.url, `UPDATE items SET qty = qty + 1, note = note || 'u' WHERE id = $1`, [1 + ((i * 37) % 3000)]);
      await query(f.url, `DELETE FROM items WHERE id % 10 = 0`);
      await query(
        f.url,
        `BEGIN; INSERT INTO items (id, qty, note) VALUES (5000, 1, NULL); UPDATE items SET qty = 2 WHERE id = 5000; DELETE FROM items WHERE id = 5000; INSERT INTO items (id, qty, note) VALUES (5001, 3, 'it''s'); COMMIT`,
      );
      await query(f.url, `UPDATE items SET price = NULL WHERE id BETWEEN 100 AND 400`);
      target = parseLsn((await query<{ l: string }>(f.url, `SELECT pg_current_wal_lsn()::text AS l`))[0]!.l);
      const store = testStore(ctx.cfg);
      await waitFor('the restorable point to pass the workload', async () => {
        const p = await restorablePoint(store, archiveRoot(ctx.cfg));
        return p && p.lsn >= target;
      });
    } finally {
      controller.abort();
      await Promise.allSettled([capture.done, archiver.done]);
    }
    await archiver.done;

    const archive = await readArchiveWithAvsc(testStore(ctx.cfg), archiveRoot(ctx.cfg));
    const changes = uniqueChanges(archive.events).filter((e) => e.commitLsn <= target);
    // Every transaction is complete: its COMMIT marker's position = its number of data records.
    const byTxn = new Map<number, ChangeEvent[]>();
    for (const ev of changes) byTxn.set(ev.commitLsn, [...(byTxn.get(ev.commitLsn) ?? []), ev]);
    for (const [lsn, evs] of byTxn) {
      const commit = evs.find((e) => e.op === 'COMMIT');
      const data = evs.filter((e) => e.op !== 'COMMIT');
      if (data.length === 0) continue;
      expect(commit, `transaction ${lsn.toString(16)} has its COMMIT marker`).toBeDefined();
      expect(commit!.position).toBe(data.length);
      expect(data.map((e) => e.position)).toEqual(data.map((_, i) => i));
    }
    // Replay the archive into a map and compare with the whole table.
    const rows = new Map<string, Record<string, string | null>>();
    for (const ev of changes) {
      if (ev.table !== 'items') continue;
      const cols = ev.relation!.columns;
      const asRow = (vals: (string | null)[], prev?: Record<string, string | null>) =>
        Object.fromEntries(cols.map((c, i) => [c, ev.unchanged.includes(i) ? (prev?.[c] ?? null) : (vals[i] ?? null)]));
      if (ev.op === 'INSERT') rows.set(ev.new![0]!, asRow(ev.new!));
      else if (ev.op === 'UPDATE') {
        const oldId = ev.old?.[0] ?? ev.new![0]!;
        const prev = rows.get(oldId);
        rows.delete(oldId);
        rows.set(ev.new![0]!, asRow(ev.new!, prev));
      } else if (ev.op === 'DELETE') rows.delete(ev.old![0]!);
      else if (ev.op === 'TRUNCATE') rows.clear();
    }
    const source = await query<Record<string, string | null>>(
      f.url,
      `SELECT id::text AS id, qty::text AS qty, note, price::text AS price, at::text AS at FROM items ORDER BY items.id`,
    );
    const replayed = [...rows.values()].sort((a, b) => Number(a.id) - Number(b.id));
    expect(replayed.length).toBe(source.length);
    expect(replayed).toEqual(source);
  });
});
