import { Readable } from 'node:stream';
import { inflateRawSync } from 'node:zlib';
import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { sha256 } from '../../../src/s3/client.js';
import { decompress as zstdDecompress } from 'zstd-napi';
import { emptyEvent, encodeChange, type ChangeEvent } from '../../../src/format/change-event.js';
import { CdpError, IntegrityError } from '../../../src/errors.js';
import { keyringOf, parseMasterKey } from '../../../src/archive/crypto.js';
import { SEGMENT_MANIFEST_META, segmentKey, type SegmentManifest } from '../../../src/archive/layout.js';
import { cutReason, watermarkOnly } from '../../../src/archive/cut-policy.js';
import { encodeSegment, readLong, readSegment, readValuePrefix, SegmentWriter, writeLong } from '../../../src/archive/segment.js';

function txn(commitLsn: number, rows: number, partition = 0): ChangeEvent[] {
  const t = 1_700_000_000_000_000 + commitLsn;
  const out: ChangeEvent[] = [];
  for (let i = 0; i < rows; i++) {
    out.push(
      emptyEvent({
        op: i % 3 === 2 ? 'DELETE' : i % 3 === 1 ? 'UPDATE' : 'INSERT',
        database: 'db',
        commitLsn,
        changeLsn: commitLsn - 100 + i,
        xid: 1000 + commitLsn,
        commitTime: t,
        position: i,
        schema: 'public',
        table: 't',
        relation: { oid: 16384, replicaIdentity: 'd', columns: ['id', 'v', 'note'], types: ['bigint', 'text', 'text'], key: [0] },
        new: [String(commitLsn * 1000 + i), `value ${i}`, i % 5 === 0 ? null : 'x'.repeat(i % 40)],
        unchanged: i % 7 === 0 ? [2] : [],
      }),
    );
  }
  out.push(emptyEvent({ op: 'COMMIT', database: 'db', commitLsn, endLsn: commitLsn + 8, xid: 1000 + commitLsn, commitTime: t, position: rows }));
  out.push(emptyEvent({ op: 'WATERMARK', database: 'db', commitLsn, commitTime: t, content: JSON.stringify({ partition }) }));
  return out;
}

/** Reads a container with avsc's own decoder (not ours), codecs registered here. */
async function readWithAvsc(bytes: Buffer): Promise<{ records: ChangeEvent[]; meta: Record<string, Buffer> }> {
  const decoder = new avro.streams.BlockDecoder({
    codecs: {
      zstandard: (buf: Buffer, cb: (err: Error | null, out?: Buffer) => void) => cb(null, zstdDecompress(buf)),
      deflate: (buf: Buffer, cb: (err: Error | null, out?: Buffer) => void) => cb(null, inflateRawSync(buf)),
    },
  });
  let meta: Record<string, Buffer> = {};
  decoder.on('metadata', (_t: unknown, _c: unknown, header: { meta: Record<string, Buffer> }) => (meta = header.meta));
  const records: ChangeEvent[] = [];
  Readable.from([bytes]).pipe(decoder);
  for await (const r of decoder) records.push(r as ChangeEvent);
  return { records, meta };
}

describe('avro varints', () => {
  it('round-trips longs (positive up to 2^53, negative down to -2^52)', () => {
    for (const n of [0, 1, -1, 63, 64, -64, -65, 2 ** 31, 2 ** 32 + 5, Number.MAX_SAFE_INTEGER, -(2 ** 52), 0x16b3748]) {
      const b = writeLong(n);
      expect(readLong(b, 0)).toEqual([n, b.length]);
      // avsc's own long type accepts |n| <= 2^52 (its documented precision limit).
      if (Math.abs(n) <= 2 ** 52) expect(b.equals(avro.Type.forSchema('long').toBuffer(n))).toBe(true);
    }
  });
  it('reads the manifest fields from an encoded value', () => {
    const ev = txn(0x1_0000_0010, 1)[0]!;
    expect(readValuePrefix(encodeChange(ev))).toEqual({ op: 0, commitLsn: ev.commitLsn, commitTime: ev.commitTime });
  });
});

describe('segment writer and reader', () => {
  for (const codec of ['zstandard', 'deflate'] as const) {
    it(`round-trips with ${codec}, readable by avsc's own container decoder`, async () => {
      const events = [...txn(0x3000, 50), ...txn(0x3100, 1), ...txn(0x2f00, 3)];
      const seg = encodeSegment(events, { partition: 3, codec, firstOffset: 1000, blockBytes: 512 });
      expect(seg.name).toMatchObject({ partition: 3, maxLsn: 0x3100, firstOffset: '1000', lastOffset: String(1000 + events.length - 1) });
      expect(seg.manifest).toMatchObject<Partial<SegmentManifest>>({
        count: events.length,
        minLsn: 0x2f00,
        maxLsn: 0x3100,
        watermarkLsn: 0x3100,
        watermarkTime: 1_700_000_000_000_000 + 0x3100,
        codec,
      });
      const opened = readSegment(seg.bytes, { expectedSha256: seg.name.sha256 });
      expect(opened.manifest).toEqual(seg.manifest);
      const mine: ChangeEvent[] = [];
      for await (const ev of opened.events()) mine.push(ev);
      expect(mine).toEqual(events);
      // Standard Avro tools read it: format 2 holds one ChangeBatch datum per block (src/format/batch.ts).
      const theirs = await readWithAvsc(seg.bytes);
      expect(theirs.records.reduce((n, r) => n + (r as unknown as { count: number }).count, 0)).toBe(events.length);
      expect(theirs.meta['cdp.format']!.toString()).toBe('2');
      expect(JSON.parse(theirs.meta[SEGMENT_MANIFEST_META]!.toString())).toEqual(seg.manifest);
      expect(theirs.meta['avro.codec']!.toString()).toBe(codec);
    });
  }

  it('is deterministic: the same records cut the same way give the same bytes and name', () => {
    const events = txn(0x5000, 20);
    const a = encodeSegment(events, { partition: 1, codec: 'zstandard', firstOffset: 7 });
    const b = encodeSegment(events, { partition: 1, codec: 'zstandard', firstOffset: 7 });
    expect(a.bytes.equals(b.bytes)).toBe(true);
    expect(a.name).toEqual(b.name);
  });

  it('detects altered bytes by checksum before anything else (IntegrityError naming the key)', () => {
    const seg = encodeSegment(txn(0x6000, 30), { partition: 0, codec: 'zstandard' });
    const bad = Buffer.from(seg.bytes);
    bad[bad.length - 40] ^= 0x01;
    let err: unknown;
    try {
      readSegment(bad, { expectedSha256: seg.name.sha256, key: 'x/segments/p0000/k.avro' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as IntegrityError).exitCode).toBe(3);
    expect((err as Error).message).toContain('x/segments/p0000/k.avro');
  });

  it('reports a structurally broken block even when the caller trusts the bytes', () => {
    const seg = encodeSegment(txn(0x6000, 30), { partition: 0, codec: 'deflate' });
    const bad = Buffer.from(seg.bytes);
    bad[bad.length - 30] ^= 0xff;
    const opened = readSegment(bad, { expectedSha256: sha256(bad) });
    expect(() => [...opened.blocks()]).toThrow(IntegrityError);
  });

  it('rejects a value that is not a ChangeEvent with a clear error naming the offset', () => {
    const w = new SegmentWriter({ partition: 2, codec: 'zstandard' });
    expect(() => w.append(Buffer.from([0x7f]), '42')).toThrow(/offset 42/);
  });
});

describe('segment cuts', () => {
  it('tracks raw size (what segmentMaxBytes bounds), compresses block by block, and ages from the first record', () => {
    const w = new SegmentWriter({ partition: 0, codec: 'zstandard', blockBytes: 4096 });
    const values = txn(0x7000, 2000).map(encodeChange);
    let raw = 0;
    for (const [i, v] of values.entries()) {
      w.append(v, String(i));
      raw += v.length;
    }
    expect(w.rawBytes).toBe(raw);
    expect(w.memoryBytes).toBeLessThan(raw / 2); // closed blocks are held compressed
    const seg = w.finish();
    expect(seg.rawBytes).toBe(raw);
    expect(seg.bytes.length).toBeLessThan(raw);
  });
});

describe('client-side encryption', () => {
  const keyA = keyringOf(parseMasterKey('11'.repeat(32), 'test'), { archive: 'cdp/db' });
  const keyB = keyringOf(parseMasterKey(Buffer.alloc(32, 2).toString('base64'), 'test'), { archive: 'cdp/db' });

  it('round-trips an encrypted segment and the stored bytes do not show the data', async () => {
    const events = txn(0x8000, 40);
    const seg = encodeSegment(events, { partition: 0, codec: 'zstandard', keyring: keyA });
    expect(seg.bytes.subarray(0, 8).toString()).toBe('KCDPENC2');
    expect(seg.bytes.includes(Buffer.from('Obj\x01'))).toBe(false);
    const got: ChangeEvent[] = [];
    for await (const ev of readSegment(seg.bytes, { expectedSha256: seg.name.sha256, keyring: keyA, key: segmentKey('cdp/db', seg.name) }).events())
      got.push(ev);
    expect(got).toEqual(events);
  });

  it('a wrong key or no key gives CDP_ENCRYPTION (exit 3) naming the expected key id', () => {
    const seg = encodeSegment(txn(0x8000, 4), { partition: 0, codec: 'zstandard', keyring: keyA });
    for (const keyring of [keyB, undefined]) {
      let err: unknown;
      try {
        readSegment(seg.bytes, { expectedSha256: seg.name.sha256, keyring, key: segmentKey('cdp/db', seg.name) });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(CdpError);
      expect((err as CdpError).code).toBe('CDP_ENCRYPTION');
      expect((err as CdpError).exitCode).toBe(3);
      expect((err as Error).message).toContain(keyA.current.id);
    }
  });

  it('rejects malformed master keys', () => {
    expect(() => parseMasterKey('abcd', 'archive.encryptionKeyFile')).toThrow(/32-byte key/);
    expect(keyA.current.id).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe('cut policy', () => {
  const limits = { maxBytes: 1000, maxAgeMs: 5000 };
  it('cuts by size at segmentMaxBytes of raw Avro, by age from the first record, never an empty segment', () => {
    expect(cutReason(undefined, 10_000, limits)).toBeUndefined();
    expect(cutReason({ count: 0, rawBytes: 0, createdAt: 0 }, 10_000, limits)).toBeUndefined();
    expect(cutReason({ count: 3, rawBytes: 999, createdAt: 1000 }, 5999, limits)).toBeUndefined();
    expect(cutReason({ count: 3, rawBytes: 1000, createdAt: 1000 }, 1000, limits)).toBe('size');
    expect(cutReason({ count: 1, rawBytes: 10, createdAt: 1000 }, 6000, limits)).toBe('age');
  });
  it('a SegmentWriter reports what the policy needs', () => {
    const w = new SegmentWriter({ partition: 0, codec: 'zstandard' });
    const before = Date.now();
    for (const [i, ev] of txn(0x9000, 30).entries()) w.appendEvent(ev, String(i));
    expect(cutReason(w, w.createdAt + 4999, limits)).toBe('size');
    expect(w.createdAt).toBeLessThanOrEqual(before + 1);
    const small = new SegmentWriter({ partition: 0, codec: 'zstandard' });
    small.appendEvent(txn(0x9000, 1)[0]!, '0');
    expect(cutReason(small, small.createdAt + 4999, limits)).toBeUndefined();
    expect(cutReason(small, small.createdAt + 5000, limits)).toBe('age');
  });

  // Issue 14: idle cheap, busy fast.
  const busy = { maxBytes: 1000, maxAgeMs: 5000, minAgeMs: 200, idleMaxAgeMs: 600_000 };
  const wm = (lsn: number) => emptyEvent({ op: 'WATERMARK', database: 'db', commitLsn: lsn, commitTime: lsn, content: '{"partition":0}' });
  it('a segment of watermarks only (an idle database) waits idleSegmentMaxAgeMs; one change makes it an ordinary segment again', () => {
    const w = new SegmentWriter({ partition: 0, codec: 'zstandard' });
    w.appendEvent(wm(0x100), '0');
    w.appendEvent(wm(0x200), '1');
    expect(w.changes).toBe(0);
    expect(watermarkOnly(w)).toBe(true);
    expect(w.watermarkLsn).toBe(0x200);
    expect(cutReason(w, w.createdAt + 599_999, busy)).toBeUndefined();
    expect(cutReason(w, w.createdAt + 600_000, busy)).toBe('idle');
    // Without idleMaxAgeMs the old rule (maxAgeMs from the first record) holds.
    expect(cutReason(w, w.createdAt + 5000, limits)).toBe('idle');
    w.appendEvent(txn(0x300, 1)[0]!, '2');
    expect(watermarkOnly(w)).toBe(false);
    const first = w.firstChangeAt;
    expect(first).toBeGreaterThanOrEqual(w.createdAt);
    // Holding changes and not ending with a watermark: only the age rule, counted from the first change.
    expect(w.endsWithWatermark).toBe(false);
    expect(cutReason(w, first + 4999, busy)).toBeUndefined();
    expect(cutReason(w, first + 5000, busy)).toBe('age');
  });
  it('a segment with changes is cut at the first watermark once its first change is segmentMinAgeMs old', () => {
    const w = new SegmentWriter({ partition: 0, codec: 'zstandard' });
    w.appendEvent(txn(0x300, 1)[0]!, '0');
    w.appendEvent(wm(0x300), '1');
    expect(w.endsWithWatermark).toBe(true);
    expect(cutReason(w, w.firstChangeAt + 199, busy)).toBeUndefined();
    expect(cutReason(w, w.firstChangeAt + 200, busy)).toBe('watermark');
    // Without minAgeMs (the old policy) a watermark changes nothing.
    expect(cutReason(w, w.firstChangeAt + 200, limits)).toBeUndefined();
  });
});
