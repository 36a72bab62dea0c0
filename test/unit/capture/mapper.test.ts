import { hmacPads, signMessage } from '../../../src/capture/ddl-auth.js';
import { describe, expect, it } from 'vitest';
import { ChangeMapper, messageText, PREFIX } from '../../../src/capture/mapper.js';
import { decodeChange, encodeChange, kafkaKey, type ChangeEvent } from '../../../src/format/change-event.js';
import { groupTransactions, type ReplayItem } from '../../../src/restore/merge.js';
import type { Relation } from '../../../src/pg/pgoutput.js';

const rel: Relation = {
  tag: 'relation',
  oid: 16384,
  schema: 'public',
  name: 'items',
  replicaIdentity: 'd',
  columns: [
    { flags: 1, name: 'id', typeOid: 20, typmod: -1 },
    { flags: 0, name: 'body', typeOid: 25, typmod: -1 },
    { flags: 0, name: 'price', typeOid: 1700, typmod: 655366 },
  ],
};
const TYPES = ['bigint', 'text', 'numeric(10,2)'];

function mapper(): ChangeMapper {
  const m = new ChangeMapper('shop');
  m.relation(rel, TYPES);
  return m;
}

const begin = { tag: 'begin' as const, finalLsn: 0x5000, commitTime: 1_700_000_000_000_000, xid: 901 };
const commit = { tag: 'commit' as const, flags: 0, commitLsn: 0x5000, endLsn: 0x5030, commitTime: begin.commitTime };

const [ikey, okey] = hmacPads(Buffer.alloc(32, 7));
const key = { ikey, okey };

describe('ChangeMapper', () => {
  it('builds RelationInfo with key indexes from the column flags', () => {
    const info = new ChangeMapper('db').relation(rel, TYPES);
    expect(info).toEqual({ oid: 16384, replicaIdentity: 'd', columns: ['id', 'body', 'price'], types: TYPES, key: [0] });
  });

  it('stamps changes with the Begin commit LSN, xid, time and positions, and closes with a COMMIT marker', () => {
    const m = mapper();
    m.begin(begin);
    const a = m.insert({ tag: 'insert', relationOid: 16384, new: { values: ['1', 'x', '1.50'], unchanged: [] } }, 0x4000)!;
    const b = m.update({ tag: 'update', relationOid: 16384, oldKind: null, old: null, new: { values: ['1', null, '2.00'], unchanged: [1] } }, 0x4100)!;
    const c = m.delete({ tag: 'delete', relationOid: 16384, oldKind: 'K', old: { values: ['1', null, null], unchanged: [] } }, 0x4200)!;
    const end = m.commit(commit, 0x5000);
    expect([a.position, b.position, c.position, end?.position]).toEqual([0, 1, 2, 3]);
    for (const e of [a, b, c, end!]) {
      expect(e.commitLsn).toBe(0x5000);
      expect(e.xid).toBe(901);
      expect(e.commitTime).toBe(begin.commitTime);
      expect(e.database).toBe('shop');
    }
    expect(a).toMatchObject({ op: 'INSERT', schema: 'public', table: 'items', changeLsn: 0x4000, new: ['1', 'x', '1.50'], old: null, unchanged: [] });
    // NULL and unchanged TOAST stay distinct: body is null in `new` but listed in `unchanged`.
    expect(b).toMatchObject({ op: 'UPDATE', oldKind: null, old: null, new: ['1', null, '2.00'], unchanged: [1] });
    expect(c).toMatchObject({ op: 'DELETE', oldKind: 'K', old: ['1', null, null], new: null });
    expect(end).toMatchObject({ op: 'COMMIT', endLsn: 0x5030, schema: '', table: '', relation: null });
    expect(a.relation?.key).toEqual([0]);
    expect(kafkaKey(a)).toBe('public\u0000items\u00001');
    expect(kafkaKey(c)).toBe('public\u0000items\u00001');
    // Every event survives the Avro schema unchanged.
    for (const e of [a, b, c, end!]) expect(decodeChange(encodeChange(e))).toEqual(e);
  });

  it('keeps the whole old row for REPLICA IDENTITY FULL', () => {
    const m = new ChangeMapper('db');
    m.relation({ ...rel, replicaIdentity: 'f', columns: rel.columns.map((c) => ({ ...c, flags: 1 })) }, TYPES);
    m.begin(begin);
    const u = m.update(
      {
        tag: 'update',
        relationOid: 16384,
        oldKind: 'O',
        old: { values: ['1', 'big', '1.00'], unchanged: [] },
        new: { values: ['1', null, '2.00'], unchanged: [1] },
      },
      1,
    )!;
    expect(u).toMatchObject({ oldKind: 'O', old: ['1', 'big', '1.00'], unchanged: [1] });
    expect(u.relation?.key).toEqual([0, 1, 2]);
  });

  it('drops heartbeats, maps DDL / SEQUENCES / other messages, and numbers them as data records', () => {
    const m = mapper();
    m.begin(begin);
    expect(m.message({ tag: 'message', transactional: true, lsn: 1, prefix: PREFIX.heartbeat, content: Buffer.from('now') }, 1)).toBeNull();
    m.messageKey = key;
    const ddl = m.message(
      { tag: 'message', transactional: true, lsn: 2, prefix: PREFIX.ddl, content: Buffer.from(signMessage(key, '{"command":"ALTER TABLE t ADD c int"}')) },
      2,
    );
    const seq = m.message(
      { tag: 'message', transactional: true, lsn: 3, prefix: PREFIX.sequences, content: Buffer.from(signMessage(key, '{"public.s":5}')) },
      3,
    );
    const other = m.message({ tag: 'message', transactional: true, lsn: 4, prefix: 'app', content: Buffer.from([0xff, 0x00]) }, 4);
    expect(ddl).toMatchObject({ op: 'DDL', position: 0, content: '{"command":"ALTER TABLE t ADD c int"}', prefix: 'cdp.ddl' });
    expect(seq).toMatchObject({ op: 'SEQUENCES', position: 1, content: '{"public.s":5}' });
    expect(other).toMatchObject({ op: 'MESSAGE', position: 2, content: '\\xff00', prefix: 'app' });
    expect(m.commit(commit)?.position).toBe(3);
  });

  it('drops cdp.ddl / cdp.sequences messages that are not signed with the key, and reports each', () => {
    const m = mapper();
    const forged: string[] = [];
    m.messageKey = key;
    m.onForged = (prefix, why) => forged.push(`${prefix}: ${why}`);
    m.begin(begin);
    const other = { ikey: Buffer.alloc(64, 1), okey: Buffer.alloc(64, 2) };
    const msg = (prefix: string, content: string) => m.message({ tag: 'message', transactional: true, lsn: 2, prefix, content: Buffer.from(content) }, 2);
    expect(msg(PREFIX.ddl, '{"command":"DROP TABLE t"}')).toBeNull();
    expect(msg(PREFIX.ddl, signMessage(other, '{"command":"DROP TABLE t"}'))).toBeNull();
    const good = JSON.parse(signMessage(key, '{"command":"ALTER TABLE t ADD c int"}')) as { body: string; mac: string };
    expect(msg(PREFIX.ddl, JSON.stringify({ body: '{"command":"DROP TABLE t"}', mac: good.mac }))).toBeNull();
    expect(msg(PREFIX.sequences, '{"public.s":99999999}')).toBeNull();
    expect(forged).toEqual([
      'cdp.ddl: not a signed message (no body)',
      'cdp.ddl: MAC mismatch',
      'cdp.ddl: MAC mismatch',
      'cdp.sequences: not a signed message (no body)',
    ]);
    expect(m.forgedDropped).toBe(4);
    // Without a key (DDL capture not installed) nothing with our prefixes is trusted.
    m.messageKey = undefined;
    expect(msg(PREFIX.ddl, signMessage(key, '{"command":"x"}'))).toBeNull();
    // Other prefixes are the users' own messages, kept as they are.
    expect(msg('app', '{"command":"DROP TABLE t"}')).toMatchObject({ op: 'MESSAGE' });
  });

  it('a heartbeat-only transaction has no COMMIT marker', () => {
    const m = mapper();
    m.begin(begin);
    m.message({ tag: 'message', transactional: true, lsn: 1, prefix: PREFIX.heartbeat, content: Buffer.from('x') }, 1);
    expect(m.commit(commit)).toBeNull();
    expect(m.inTransaction).toBe(false);
  });

  it('maps TRUNCATE with its relations and options', () => {
    const m = mapper();
    m.relation({ ...rel, oid: 7, name: 'other', schema: 'sales' }, TYPES);
    m.begin(begin);
    const one = m.truncate({ tag: 'truncate', cascade: false, restartIdentity: true, relationOids: [16384] }, 9);
    const two = m.truncate({ tag: 'truncate', cascade: true, restartIdentity: false, relationOids: [16384, 7] }, 10);
    expect(one).toMatchObject({ op: 'TRUNCATE', schema: 'public', table: 'items', position: 0 });
    expect(JSON.parse(one.content!)).toEqual({ relations: [['public', 'items']], cascade: false, restartIdentity: true });
    expect(two).toMatchObject({ schema: '', table: '', position: 1 });
    expect(JSON.parse(two.content!)).toEqual({
      relations: [
        ['public', 'items'],
        ['sales', 'other'],
      ],
      cascade: true,
      restartIdentity: false,
    });
  });

  it('drops a non-transactional message (no transaction, no COMMIT marker) and counts it; restore groups what follows', async () => {
    const m = mapper();
    const out: (ChangeEvent | null)[] = [];
    out.push(m.message({ tag: 'message', transactional: false, lsn: 0x777, prefix: 'app', content: Buffer.from('hi') }, 0x777));
    m.begin(begin);
    out.push(m.insert({ tag: 'insert', relationOid: 16384, new: { values: ['1', 'x', '1.50'], unchanged: [] } }, 0x4000)!);
    // pgoutput does not interleave them with a transaction, but even so one is not part of it.
    out.push(m.message({ tag: 'message', transactional: false, lsn: 0x4050, prefix: 'app', content: Buffer.from('in') }, 0x4050));
    out.push(m.commit(commit));
    expect(out[0]).toBeNull();
    expect(out[2]).toBeNull();
    expect(m.nonTransactionalDropped).toBe(2);
    const events = out.filter((e): e is ChangeEvent => e !== null).map((e) => decodeChange(encodeChange(e)));
    async function* chunks() {
      yield events;
    }
    const items: ReplayItem[] = [];
    for await (const it of groupTransactions(chunks(), () => 'apply')) items.push(it);
    expect(items.map((i) => i.type)).toEqual(['begin', 'changes', 'commit', 'end']);
    expect(items[2]).toMatchObject({ type: 'commit', count: 1, txn: { commitLsn: 0x5000, xid: 901 } });
  });

  it('refuses protocol violations', () => {
    const m = mapper();
    expect(() => m.insert({ tag: 'insert', relationOid: 16384, new: { values: ['1', 'x', '1'], unchanged: [] } }, 1)!).toThrow(/outside a transaction/);
    m.begin(begin);
    expect(() => m.insert({ tag: 'insert', relationOid: 99, new: { values: [], unchanged: [] } }, 1)!).toThrow(/before its Relation/);
    expect(() => m.begin(begin)).toThrow(/inside the open transaction/);
    expect(() => m.commit({ ...commit, commitLsn: 1 })).toThrow(/differs/);
    expect(() => m.message({ tag: 'message', transactional: true, lsn: 1, prefix: 'x', content: Buffer.alloc(0) }, 1)).not.toThrow();
  });

  it('messageText keeps valid UTF-8 and hex-encodes anything else losslessly', () => {
    expect(messageText(Buffer.from('héllo 𝄞'))).toBe('héllo 𝄞');
    expect(messageText(Buffer.from([0xc3]))).toBe('\\xc3');
    expect(messageText(Buffer.from('\uFFFD'))).toBe('\uFFFD');
  });
});

describe('the engine schema', () => {
  it('never lets a row of katya_cdp (its key, its configuration) into the stream, and numbers the rest without a gap', () => {
    const m = new ChangeMapper('db');
    m.relation(
      { tag: 'relation', oid: 1, schema: 'katya_cdp', name: 'secret', replicaIdentity: 'd', columns: [{ flags: 1, name: 'id', typeOid: 23, typmod: -1 }] },
      ['integer'],
    );
    m.relation({ tag: 'relation', oid: 2, schema: 'public', name: 't', replicaIdentity: 'd', columns: [{ flags: 1, name: 'id', typeOid: 23, typmod: -1 }] }, [
      'integer',
    ]);
    m.begin({ tag: 'begin', finalLsn: 100, commitTime: 1, xid: 5 });
    expect(m.insert({ tag: 'insert', relationOid: 1, new: { values: ['1'], unchanged: [] } }, 10)).toBeNull();
    expect(m.update({ tag: 'update', relationOid: 1, oldKind: null, old: null, new: { values: ['1'], unchanged: [] } }, 11)).toBeNull();
    expect(m.delete({ tag: 'delete', relationOid: 1, oldKind: 'K', old: { values: ['1'], unchanged: [] } }, 12)).toBeNull();
    expect(m.insert({ tag: 'insert', relationOid: 2, new: { values: ['1'], unchanged: [] } }, 13)?.position).toBe(0);
    expect(m.commit({ tag: 'commit', flags: 0, commitLsn: 100, endLsn: 120, commitTime: 1 })?.position).toBe(1);
  });
});
