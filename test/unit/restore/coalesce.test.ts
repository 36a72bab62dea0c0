import { describe, expect, it } from 'vitest';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { Coalescer } from '../../../src/restore/coalesce.js';

const REL: RelationInfo = { oid: 1, replicaIdentity: 'd', columns: ['id', 'a', 'b'], types: ['bigint', 'text', 'text'], key: [0] };
const ref = { schema: 'public', table: 't', relation: REL };
const ev = (e: Partial<ChangeEvent>): ChangeEvent => emptyEvent({ database: 'db', schema: 'public', table: 't', relation: REL, op: 'INSERT', ...e });
const ins = (id: string, a: string, b: string) => ev({ op: 'INSERT', new: [id, a, b] });
const upd = (id: string, a: string | null, b: string | null, unchanged: number[] = []) => ev({ op: 'UPDATE', new: [id, a, b], unchanged });
const del = (id: string) => ev({ op: 'DELETE', new: null, oldKind: 'K', old: [id, null, null] });

function fold(...evs: ChangeEvent[]) {
  const c = new Coalescer();
  const refused: number[] = [];
  evs.forEach((e, i) => {
    if (!c.add('t', ref, e)) refused.push(i);
  });
  return { c, refused, out: c.drain('t') };
}

describe('Coalescer (net effect per key)', () => {
  it('insert then updates is one insert of the final row; an unchanged TOAST column keeps the inserted value', () => {
    const { out, refused } = fold(ins('1', 'a', 'big'), upd('1', 'a2', null, [2]), upd('1', 'a3', null, [2]));
    expect(refused).toEqual([]);
    expect(out).toMatchObject({ deletes: [], updates: [], inserts: [['1', 'a3', 'big']] });
  });

  it('insert then delete is nothing; delete then insert is a replace (delete, then insert)', () => {
    expect(fold(ins('1', 'a', 'b'), del('1')).out).toMatchObject({ deletes: [], updates: [], inserts: [] });
    expect(fold(del('1'), ins('1', 'x', 'y')).out).toMatchObject({ deletes: [['1']], updates: [], inserts: [['1', 'x', 'y']] });
  });

  it('updates merge into one with the union of assigned columns; update then delete is a delete', () => {
    const { out } = fold(upd('1', 'a', null, [2]), upd('1', null, 'b', [1]));
    expect(out!.updates).toEqual([{ setCols: [1, 2], rows: [{ key: ['1'], values: ['1', 'a', 'b'] }] }]);
    expect(fold(upd('2', 'a', 'b'), del('2')).out).toMatchObject({ deletes: [['2']], updates: [], inserts: [] });
  });

  it('groups updates by their assigned columns, whichever array they came in (one UPDATE per set)', () => {
    // unchanged [2] makes updateColumns build a new array for every change: equal sets, distinct arrays.
    const { out } = fold(upd('1', 'a', null, [2]), upd('2', 'b', 'x'), upd('3', 'c', null, [2]), upd('2', 'y', null, [2]));
    expect(out!.updates).toEqual([
      {
        setCols: [1],
        rows: [
          { key: ['1'], values: ['1', 'a', null] },
          { key: ['3'], values: ['3', 'c', null] },
        ],
      },
      { setCols: [1, 2], rows: [{ key: ['2'], values: ['2', 'y', 'x'] }] },
    ]);
    // The folded row's columns grew without changing the array other rows share.
    expect(fold(upd('1', 'a', 'b'), upd('2', 'c', 'd')).out!.updates).toEqual([
      {
        setCols: [1, 2],
        rows: [
          { key: ['1'], values: ['1', 'a', 'b'] },
          { key: ['2'], values: ['2', 'c', 'd'] },
        ],
      },
    ]);
  });

  it('refuses a key change, an update or delete after a delete, an insert over a live row', () => {
    const keyChange = ev({ op: 'UPDATE', oldKind: 'K', old: ['1', null, null], new: ['2', 'a', 'b'] });
    expect(fold(keyChange).refused).toEqual([0]);
    expect(fold(del('1'), upd('1', 'a', 'b')).refused).toEqual([1]);
    expect(fold(del('1'), del('1')).refused).toEqual([1]);
    expect(fold(ins('1', 'a', 'b'), ins('1', 'a', 'b')).refused).toEqual([1]);
  });

  it('keys of a composite key do not collide (key columns are NOT NULL and text holds no NUL, the separator)', () => {
    const rel2: RelationInfo = { ...REL, key: [0, 1] };
    const r2 = { ...ref, relation: rel2 };
    const c = new Coalescer();
    for (const row of [
      ['a', 'b', '1'],
      ['ab', '', '2'],
      ['a\u0001', 'b', '3'],
      ['a', '\u0001b', '4'],
    ] as Array<(string | null)[]>) {
      expect(c.add('t', r2, emptyEvent({ database: 'db', schema: 'public', table: 't', relation: rel2, op: 'INSERT', new: row }))).toBe(true);
    }
    expect(c.drain('t')!.inserts.length).toBe(4);
  });

  it('accounts the bytes it holds and returns to zero when drained', () => {
    const c = new Coalescer();
    c.add('t', ref, ins('1', 'x'.repeat(1000), 'y'));
    c.add('t', ref, ins('2', 'x', 'y'));
    expect(c.rows).toBe(2);
    expect(c.bytes).toBeGreaterThan(1000);
    c.add('t', ref, del('2'));
    expect(c.rows).toBe(1);
    // An update folded into a held row: the bytes follow its values, up and down.
    const held = c.bytes;
    c.add('t', ref, upd('1', 'x'.repeat(5000), 'y'));
    expect(c.bytes).toBe(held + 4000);
    c.add('t', ref, upd('3', 'a', 'b'));
    const two = c.bytes;
    c.add('t', ref, upd('3', 'a'.repeat(101), 'b'));
    expect(c.bytes).toBe(two + 100);
    c.add('t', ref, upd('1', 'x', 'y'));
    expect(c.bytes).toBe(two + 100 - 4999);
    c.drain('t');
    expect([c.rows, c.bytes, c.size]).toEqual([0, 0, 0]);
  });

  it('counts the inserts it holds (folded updates stay inserts; a delete, a replace or an update is not one)', () => {
    const c = new Coalescer();
    const u = { ...ref, table: 'u' };
    for (const e of [ins('1', 'a', 'b'), ins('2', 'a', 'b'), upd('1', 'x', 'y'), upd('3', 'x', 'y'), del('4'), ins('4', 'n', 'n')]) c.add('t', ref, e);
    c.add('u', u, ins('1', 'a', 'b'));
    expect([c.rows, c.inserts]).toEqual([5, 3]);
    c.add('t', ref, del('2'));
    expect([c.rows, c.inserts]).toEqual([4, 2]);
    c.drain('t');
    expect([c.rows, c.inserts]).toEqual([1, 1]);
    c.drain('u');
    expect([c.rows, c.inserts]).toEqual([0, 0]);
  });

  it('keeps the slots of removed keys bounded, and the order of the rest, under insert/delete churn', () => {
    const c = new Coalescer();
    // Live rows interleaved with keys inserted and deleted again (a queue table in one transaction).
    for (let i = 0; i < 50_000; i++) {
      expect(c.add('t', ref, ins(`q${i}`, 'x', 'y'))).toBe(true);
      if (i % 1000 === 0) expect(c.add('t', ref, ins(`live${i}`, 'a', 'b'))).toBe(true);
      expect(c.add('t', ref, del(`q${i}`))).toBe(true);
    }
    expect(c.rows).toBe(50);
    // Without compaction every insert kept its slot: 50,050.
    expect(c.slotsHeld).toBeLessThanOrEqual(50 + 2 * 4096);
    // Updates and deletes of live keys still find their rows after the renumbering.
    expect(c.add('t', ref, upd('live0', 'a2', 'b2'))).toBe(true);
    expect(c.add('t', ref, del('live1000'))).toBe(true);
    const out = c.drain('t')!;
    const live = Array.from({ length: 50 }, (_, k) => `live${k * 1000}`).filter((k) => k !== 'live1000');
    expect(out.inserts.map((r) => r[0])).toEqual(live);
    expect(out.inserts[0]).toEqual(['live0', 'a2', 'b2']);
    expect([out.deletes, out.updates]).toEqual([[], []]);
  });
});
