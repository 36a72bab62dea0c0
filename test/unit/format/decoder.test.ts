import { describe, expect, it } from 'vitest';
import { keyringOf, parseMasterKey } from '../../../src/archive/crypto.js';
import { encodeSegment, readSegment } from '../../../src/archive/segment.js';
import { segmentKey } from '../../../src/archive/layout.js';
import { emptyEvent, encodeChange, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { IntegrityError } from '../../../src/errors.js';
import { ChangeEventDecoder } from '../../../src/format/decoder.js';
import { decodeBlockGeneric, EventDecoder } from '../../../src/format/event-codec.js';

// Segments written today (format 2) give back exactly the events written; the format-1 decoder
// reads exactly what avsc reads.

const openSegment = readSegment;

function sample(): ChangeEvent[] {
  const r1: RelationInfo = { oid: 16384, replicaIdentity: 'd', columns: ['id', 'ñame', 'doc'], types: ['bigint', 'text', 'jsonb'], key: [0] };
  const r1b: RelationInfo = { ...r1, columns: [...r1.columns, 'added'], types: [...r1.types, 'integer'] }; // after a DDL
  const out: ChangeEvent[] = [];
  const bigLsn = 2 ** 45 + 12345; // beyond 32 bits
  for (let i = 0; i < 3000; i++) {
    const rel = i < 1500 ? r1 : r1b;
    out.push(
      emptyEvent({
        op: (['INSERT', 'UPDATE', 'DELETE'] as const)[i % 3]!,
        database: 'db',
        schema: i % 7 === 0 ? 'other' : 'public',
        table: 't',
        commitLsn: bigLsn + Math.floor(i / 10),
        changeLsn: bigLsn + i,
        xid: 4_000_000_000 + i,
        commitTime: 1_795_000_000_000_000 + i,
        position: i % 10,
        relation: { ...rel },
        oldKind: i % 3 === 1 ? 'K' : null,
        old: i % 3 === 0 ? null : [String(i), null, null, ...(i >= 1500 ? [null] : [])],
        new: i % 3 === 2 ? null : [String(i), `välue ${i} 'q' \\ \n 😀`, i % 5 ? '{"a": [1, null]}' : null, ...(i >= 1500 ? ['7'] : [])],
        unchanged: i % 11 === 0 ? [2] : [],
      }),
    );
  }
  out.push(emptyEvent({ op: 'COMMIT', database: 'db', commitLsn: bigLsn + 300, position: 10, endLsn: bigLsn + 340 }));
  out.push(emptyEvent({ op: 'DDL', database: 'db', content: JSON.stringify({ command: 'ALTER TABLE t ADD added int' }), prefix: 'cdp.ddl' }));
  out.push(emptyEvent({ op: 'WATERMARK', database: 'db', commitLsn: -5, content: '{"partition":0}' }));
  return out;
}

describe('segment decoder', { timeout: 60_000 }, () => {
  it('format 2: gives back exactly the events written (zstandard and deflate, small and large blocks)', () => {
    const events = sample();
    for (const [codec, blockBytes] of [
      ['zstandard', 4096],
      ['deflate', 1 << 20],
    ] as const) {
      const seg = encodeSegment(events, { partition: 0, codec, blockBytes });
      const back = [...openSegment(seg.bytes, { expectedSha256: seg.name.sha256, decoder: new ChangeEventDecoder() }).blocks()].flat();
      expect(back).toEqual(events);
    }
  }, 60_000);

  it('format 1: EventDecoder reads exactly what avsc reads', () => {
    const events = sample();
    const block = Buffer.concat(events.map(encodeChange));
    expect(new EventDecoder().decodeBlock(block, events.length)).toEqual(decodeBlockGeneric(block, events.length));
    expect(new EventDecoder().decodeBlock(block, events.length)).toEqual(events);
  }, 60_000);

  it('shares relation objects while their bytes repeat, across blocks too, and notices a changed relation', () => {
    const seg = encodeSegment(sample(), { partition: 0, codec: 'zstandard', blockBytes: 4096 });
    const evs = [...openSegment(seg.bytes, { expectedSha256: seg.name.sha256, decoder: new ChangeEventDecoder() }).blocks()].flat();
    expect(evs[0]!.relation).toBe(evs[1]!.relation);
    expect(evs[1499]!.relation).not.toBe(evs[1500]!.relation);
    expect(evs[1500]!.relation!.columns).toEqual(['id', 'ñame', 'doc', 'added']);
  });

  it('reads encrypted segments and verifies SHA-256 first', () => {
    const keyring = keyringOf(parseMasterKey('11'.repeat(32), 'test'), { archive: 'cdp/db' });
    const seg = encodeSegment(sample(), { partition: 1, codec: 'zstandard', keyring });
    const fast = [
      ...openSegment(seg.bytes, { expectedSha256: seg.name.sha256, keyring, key: segmentKey('cdp/db', seg.name), decoder: new ChangeEventDecoder() }).blocks(),
    ].flat();
    expect(fast.length).toBe(3003);
    const bad = Buffer.from(seg.bytes);
    bad[bad.length - 1]! ^= 1;
    expect(() =>
      openSegment(bad, { expectedSha256: seg.name.sha256, keyring, key: segmentKey('cdp/db', seg.name), decoder: new ChangeEventDecoder() }),
    ).toThrow(IntegrityError);
  });
});
