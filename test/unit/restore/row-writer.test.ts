import { describe, expect, it } from 'vitest';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { RowWriter, type WriteLimits } from '../../../src/restore/row-writer.js';
import { SqlQueue } from '../../../src/restore/sql-queue.js';
import { RecordingSink } from './helpers.js';

// Row changes to statements with a plain object for the owners: no Applier, no stream.
const P: RelationInfo = { oid: 1, replicaIdentity: 'd', columns: ['id', 'v'], types: ['integer', 'text'], key: [0] };
const U: RelationInfo = { oid: 2, replicaIdentity: 'd', columns: ['id', 'v'], types: ['integer', 'text'], key: [0] };
const row = (op: ChangeEvent['op'], table: string, relation: RelationInfo, id: string, v: string | null): ChangeEvent =>
  emptyEvent({
    op,
    database: 'db',
    schema: 'public',
    table,
    relation,
    new: op === 'DELETE' ? null : [id, v],
    old: op === 'DELETE' ? [id, null] : null,
    oldKind: op === 'DELETE' ? 'K' : null,
  });

function writer(limits = {}) {
  const sink = new RecordingSink();
  const counts = { statements: 0 };
  const out = new SqlQueue(sink, counts);
  const owners = { ownerRunner: (t: { table: string }) => (t.table === 'u' ? 'app' : undefined) };
  const w = new RowWriter(out, owners, { sessionSql: 'SET x = 1;', ...limits });
  const text = async () => {
    out.cut();
    await out.send();
    return sink.text;
  };
  return { w, counts, text };
}

/** A writer whose COPYs are recorded as the keys (first column) of their rows, one list per COPY. */
function copyRecorder(limits: WriteLimits) {
  const sent: string[] = [];
  const sink = new RecordingSink();
  sink.copy = async (_sql: string, data: string) => void sent.push(data);
  const out = new SqlQueue(sink, { statements: 0 });
  const w = new RowWriter(out, { ownerRunner: () => undefined }, limits);
  const keys = () =>
    sent.map((d) =>
      d
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('\t')[0]),
    );
  return { w, out, sink, keys };
}

describe('RowWriter', () => {
  it('folds a coalesced table to its net effect: deletes, then updates, then inserts', async () => {
    const { w, counts, text } = writer();
    w.write(row('INSERT', 'p', P, '1', 'a'), 'p', true);
    w.write(row('UPDATE', 'p', P, '1', 'b'), 'p', true);
    w.write(row('UPDATE', 'p', P, '2', 'c'), 'p', true);
    w.write(row('DELETE', 'p', P, '3', null), 'p', true);
    expect(w.bufferedRows).toBe(3);
    w.flushAll();
    expect(w.bufferedRows).toBe(0);
    const sql = await text();
    expect(
      sql
        .split('\n')
        .filter((l) => /^(INSERT|UPDATE|DELETE)/.test(l))
        .map((l) => l.split(' ')[0]),
    ).toEqual(['DELETE', 'UPDATE', 'INSERT']);
    expect(sql).toContain(`('1'::integer, 'b'::text)`);
    expect(counts.statements).toBe(3);
  });

  it('writes every buffered table before a change of a user-code table, and that change as its owner', async () => {
    const { w, text } = writer();
    w.write(row('UPDATE', 'p', P, '1', 'x'), 'p', true);
    w.write(row('INSERT', 'u', U, '1', 'y'), 'u', false);
    expect(w.bufferedRows).toBe(0);
    // A later change of a coalesced table first writes the user-code table's batch.
    w.write(row('INSERT', 'p', P, '2', 'z'), 'p', true);
    w.flushAll();
    const sql = await text();
    const update = sql.indexOf('UPDATE "public"."p"');
    const asOwner = sql.indexOf('PERFORM pg_temp.cdp_as(');
    const insertP = sql.indexOf('INSERT INTO "public"."p"');
    expect(update).toBeGreaterThanOrEqual(0);
    expect(update).toBeLessThan(asOwner);
    expect(asOwner).toBeLessThan(insertP);
    expect(sql).toContain('OWNER TO "app"');
    expect(sql).toContain('RESET ALL; SET x = 1;\n');
  });

  it('batches stream-order inserts into one COPY from copyMinRows rows, and writes one UPDATE per change of a table it may not reorder', async () => {
    const { w, text } = writer({ copyMinRows: 3 });
    for (const id of ['1', '2', '3']) w.write(row('INSERT', 'p', P, id, 'v'), 'p', false);
    w.write(row('UPDATE', 'p', P, '1', 'a'), 'p', false);
    w.write(row('UPDATE', 'p', P, '1', 'b'), 'p', false);
    w.flushAll();
    const sql = await text();
    expect(sql).toContain('1\tv\n2\tv\n3\tv\n');
    expect(sql.match(/^UPDATE /gm)?.length).toBe(2);
    expect(sql.indexOf("'a'::text")).toBeLessThan(sql.indexOf("'b'::text"));
  });

  it('cuts COPYs by characters as well as rows, coalesced or in stream order, so none outgrows a string', async () => {
    for (const reorderable of [true, false]) {
      const { w, out, keys } = copyRecorder({ copyMinRows: 2, copyMaxChars: 100 });
      // 1 + 30 + 3 (two columns, separators) = 34 characters a row: two rows a COPY.
      for (let i = 1; i <= 5; i++) w.write(row('INSERT', 'p', P, String(i), 'x'.repeat(30)), 'p', reorderable);
      w.flushAll();
      await out.send();
      expect(keys()).toEqual([['1', '2'], ['3', '4'], ['5']]);
    }
  });

  it('writes a stream-order batch out once its values reach batchMaxChars, not only at its row bound', async () => {
    const { w, out, sink, keys } = copyRecorder({ copyMinRows: 2, batchMaxChars: 70 });
    // 1 + 30 = 31 characters of values a row: two rows a batch, each written as the next arrives.
    for (let i = 1; i <= 4; i++) w.write(row('INSERT', 'p', P, String(i), 'x'.repeat(30)), 'p', false);
    expect(out.queued).toBe(1);
    // Updates the coalescer refuses (a key change) are batched in stream order too.
    const keyChange = (from: string, to: string) => ({ ...row('UPDATE', 'p', P, to, 'y'.repeat(30)), oldKind: 'K', old: [from, null] });
    w.write(keyChange('1', '11'), 'p', true);
    w.write(keyChange('2', '12'), 'p', true);
    w.write(keyChange('3', '13'), 'p', true);
    w.flushAll();
    out.cut();
    await out.send();
    expect(keys()).toEqual([
      ['1', '2'],
      ['3', '4'],
    ]);
    const updates = sink.text.split('\n').filter((l) => l.startsWith('UPDATE '));
    expect(updates.length).toBe(2);
  });

  describe('keeping a load (retainLoads)', () => {
    const load = (w: RowWriter, from: number, to: number) => {
      for (let i = from; i <= to; i++) w.write(row('INSERT', 'p', P, String(i), 'v'), 'p', true);
    };

    it('keeps a buffer of inserts past its window, so later updates and deletes fold into the rows', async () => {
      const { w, text } = writer({ netMaxRows: 10, copyMinRows: 2, retainLoads: true });
      load(w, 1, 50);
      // 50 rows, five windows: nothing written, the writer says it is keeping a load.
      expect(w.bufferedRows).toBe(50);
      expect(w.retaining).toBe(true);
      for (let i = 1; i <= 20; i++) w.write(row('UPDATE', 'p', P, String(i), 'u'), 'p', true);
      for (let i = 41; i <= 50; i++) w.write(row('DELETE', 'p', P, String(i), null), 'p', true);
      expect(w.bufferedRows).toBe(40);
      w.flushAll();
      expect(w.retaining).toBe(false);
      const sql = await text();
      // One COPY of the net rows, no UPDATE and no DELETE: the target never sees the folded changes.
      expect(sql).not.toMatch(/^(UPDATE|DELETE) /m);
      const copied = sql.split('\n').filter((l) => /^\d+\t/.test(l));
      expect(copied).toEqual([...Array.from({ length: 20 }, (_, i) => `${i + 1}\tu`), ...Array.from({ length: 20 }, (_, i) => `${i + 21}\tv`)]);
    });

    it('writes a window out as before when it is not nearly all inserts, or without retainLoads', async () => {
      for (const retainLoads of [true, false]) {
        const { w } = writer({ netMaxRows: 10, copyMinRows: 2, retainLoads });
        // A third of the rows are updates of rows the buffer does not hold (an OLTP mix).
        for (let i = 1; i <= 30; i++) w.write(row(i % 3 === 0 ? 'UPDATE' : 'INSERT', 'p', P, String(i), 'v'), 'p', true);
        expect(w.retaining).toBe(false);
        expect(w.bufferedRows).toBeLessThan(10);
        const { w: w2 } = writer({ netMaxRows: 10, copyMinRows: 2, retainLoads: false });
        load(w2, 1, 50);
        expect(w2.retaining).toBe(false);
        expect(w2.bufferedRows).toBeLessThan(10);
      }
    });

    it('stops keeping when what is left after one table is written out is no load', () => {
      const { w } = writer({ netMaxRows: 10, copyMinRows: 2, retainLoads: true });
      load(w, 1, 15);
      w.write(row('UPDATE', 'q', P, '1', 'u'), 'q', true);
      expect(w.retaining).toBe(true);
      // A key change in p writes p out; q's update is all that is left.
      const keyChange = row('UPDATE', 'p', P, '100', 'v');
      keyChange.old = ['1', null];
      keyChange.oldKind = 'K';
      w.write(keyChange, 'p', true);
      expect(w.bufferedRows).toBe(1);
      expect(w.retaining).toBe(false);
    });

    it('builds each COPY of a write-out as it is sent: PostgreSQL has the first before node builds the next', async () => {
      const sent: string[] = [];
      const sink = new RecordingSink();
      const out = new SqlQueue(sink, { statements: 0 });
      const w = new RowWriter(out, { ownerRunner: () => undefined }, { netMaxRows: 10, copyMinRows: 2, insertMaxRows: 10, retainLoads: true });
      const evs = Array.from({ length: 30 }, (_, i) => row('INSERT', 'p', P, String(i + 1), 'v'));
      for (const e of evs) w.write(e, 'p', true);
      w.flushAll();
      // Seen through the rows themselves (which nothing changes once written out, in the product):
      // a row changed while the first COPY is in the sink's hands shows in the second one's text.
      sink.copy = async (sql: string, data: string) => {
        sent.push(data.split('\n')[0]!);
        evs[10]!.new![1] = 'built later';
      };
      await out.send();
      expect(sent).toEqual(['1\tv', '11\tbuilt later', '21\tv']);
    });

    it('writes a kept load out once it reaches netMaxBytes', async () => {
      // rowBytes of ['1', 'v'] is 96 + 25 + 25: ~150 bytes a row, so 3,000 bytes are ~20 rows.
      const { w, text } = writer({ netMaxRows: 10, copyMinRows: 2, retainLoads: true, netMaxBytes: 3_000 });
      load(w, 1, 25);
      expect(w.bufferedRows).toBeLessThan(10);
      expect(await text()).toContain('1\tv\n2\tv\n');
    });
  });
});
