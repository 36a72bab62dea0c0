import type { Keyring } from '../archive/crypto.js';
import { decryptObject, isEncrypted } from '../archive/crypto.js';
import { decompressBlock } from '../archive/codec.js';
import { SEGMENT_MANIFEST_META, type SegmentManifest } from '../archive/layout.js';
import { readSegment } from '../archive/segment.js';
import { changeEventSchemaText, type ChangeEvent, type Op, type RelationInfo } from '../events/change-event.js';
import { IntegrityError, toError } from '../errors.js';
import { sha256 } from '../s3/client.js';

// A decoder specialised for schemas/change-event.avsc, for restore's hot path. avsc's generic
// decoder builds every string of every record, including the relation description that each row
// change carries (columns and types: ~11 strings and 3 arrays per change); measured at ~6 µs per
// change, it capped restore below Postgres's own apply. Here a relation whose encoded bytes equal
// the previous one of the same oid is shared, not rebuilt (the applier then compares relations by
// identity), and database/schema/table strings are reused while they repeat. The Avro binary
// encoding (Avro 1.11 specification, "Binary Encoding"): long = zigzag varint; string = long
// length + UTF-8; union = long branch index; array = blocks of (long count [, long byte size when
// count < 0]) ending with count 0.
//
// Used only when the segment's writer schema is exactly ours; anything else goes through the
// archive's generic reader (readSegment). The container checks are the same: SHA-256 of the stored
// bytes first, then decryption, sync markers, block and record counts.

const MAGIC = Buffer.from([0x4f, 0x62, 0x6a, 0x01]);
const OPS: Op[] = ['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'DDL', 'MESSAGE', 'SEQUENCES', 'COMMIT', 'WATERMARK'];
const OUR_SCHEMA = JSON.stringify(JSON.parse(changeEventSchemaText));

type Utf8Buffer = Buffer & { utf8Slice(start: number, end: number): string };

class Reader {
  pos = 0;
  constructor(readonly buf: Utf8Buffer) {}

  long(): number {
    const b = this.buf;
    let byte = b[this.pos++]!;
    let n = byte & 0x7f;
    if (byte & 0x80) {
      let shift = 7;
      let mul = 128;
      do {
        byte = b[this.pos++]!;
        if (byte === undefined) throw new RangeError('truncated long');
        if (shift < 28) n |= (byte & 0x7f) << shift;
        else n += (byte & 0x7f) * mul;
        shift += 7;
        mul *= 128;
      } while (byte & 0x80);
      if (shift > 28) return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
    }
    return (n >>> 1) ^ -(n & 1);
  }

  string(): string {
    const len = this.long();
    const start = this.pos;
    this.pos += len;
    if (this.pos > this.buf.length) throw new RangeError('truncated string');
    return this.buf.utf8Slice(start, this.pos);
  }

  skipString(): void {
    const len = this.long();
    this.pos += len;
  }

  /** A string, reused when its bytes equal the last one decoded in this slot. */
  interned(slot: { bytes: Buffer | undefined; value: string }): string {
    const len = this.long();
    const start = this.pos;
    this.pos += len;
    const b = this.buf;
    const last = slot.bytes;
    if (last && last.length === len && b.compare(last, 0, len, start, this.pos) === 0) return slot.value;
    slot.bytes = Buffer.from(b.subarray(start, this.pos));
    slot.value = b.utf8Slice(start, this.pos);
    return slot.value;
  }

  nullableString(): string | null {
    return this.long() === 0 ? null : this.string();
  }

  stringArray(): string[] {
    const out: string[] = [];
    for (;;) {
      let n = this.long();
      if (n === 0) return out;
      if (n < 0) {
        n = -n;
        this.long();
      }
      for (let i = 0; i < n; i++) out.push(this.string());
    }
  }

  intArray(): number[] {
    const out: number[] = [];
    for (;;) {
      let n = this.long();
      if (n === 0) return out;
      if (n < 0) {
        n = -n;
        this.long();
      }
      for (let i = 0; i < n; i++) out.push(this.long());
    }
  }

  skipArray(item: () => void): void {
    for (;;) {
      let n = this.long();
      if (n === 0) return;
      if (n < 0) {
        n = -n;
        this.long();
      }
      for (let i = 0; i < n; i++) item();
    }
  }

  values(): (string | null)[] {
    const out: (string | null)[] = [];
    for (;;) {
      let n = this.long();
      if (n === 0) return out;
      if (n < 0) {
        n = -n;
        this.long();
      }
      for (let i = 0; i < n; i++) out.push(this.long() === 0 ? null : this.string());
    }
  }
}

/** Decodes records; keeps the relation and string caches across blocks and segments. */
export class ChangeEventDecoder {
  private readonly relations = new Map<number, { bytes: Buffer; info: RelationInfo }>();
  private readonly db = { bytes: undefined as Buffer | undefined, value: '' };
  private readonly schema = { bytes: undefined as Buffer | undefined, value: '' };
  private readonly table = { bytes: undefined as Buffer | undefined, value: '' };

  decodeBlock(data: Buffer, count: number): ChangeEvent[] {
    const r = new Reader(data as Utf8Buffer);
    const out = new Array<ChangeEvent>(count);
    for (let i = 0; i < count; i++) out[i] = this.record(r);
    if (r.pos !== data.length) throw new RangeError(r.pos > data.length ? 'truncated record' : 'trailing bytes in block');
    return out;
  }

  private relation(r: Reader): RelationInfo {
    const start = r.pos;
    const oid = r.long();
    r.skipString();
    r.skipArray(() => r.skipString());
    r.skipArray(() => r.skipString());
    r.skipArray(() => void r.long());
    const end = r.pos;
    const cached = this.relations.get(oid);
    const buf = r.buf;
    if (cached && cached.bytes.length === end - start && buf.compare(cached.bytes, 0, cached.bytes.length, start, end) === 0) return cached.info;
    r.pos = start;
    const info: RelationInfo = { oid: r.long(), replicaIdentity: r.string(), columns: r.stringArray(), types: r.stringArray(), key: r.intArray() };
    this.relations.set(oid, { bytes: Buffer.from(buf.subarray(start, end)), info });
    return info;
  }

  private record(r: Reader): ChangeEvent {
    const opIndex = r.long();
    const op = OPS[opIndex];
    if (op === undefined) throw new RangeError(`bad op index ${opIndex}`);
    const database = r.interned(this.db);
    const commitLsn = r.long();
    const changeLsn = r.long();
    const endLsn = r.long();
    const xid = r.long();
    const commitTime = r.long();
    const position = r.long();
    const schema = r.interned(this.schema);
    const table = r.interned(this.table);
    const relation = r.long() === 0 ? null : this.relation(r);
    const oldKind = r.nullableString();
    const old = r.long() === 0 ? null : r.values();
    const nw = r.long() === 0 ? null : r.values();
    const unchanged = r.intArray();
    const content = r.nullableString();
    const prefix = r.nullableString();
    return { op, database, commitLsn, changeLsn, endLsn, xid, commitTime, position, schema, table, relation, oldKind, old, new: nw, unchanged, content, prefix };
  }
}

function readLong(buf: Buffer, pos: number): [number, number] {
  const r = new Reader(buf as Utf8Buffer);
  r.pos = pos;
  const v = r.long();
  return [v, r.pos];
}

export interface FastSegment {
  manifest: SegmentManifest;
  blocks(): Iterable<ChangeEvent[]>;
}

/**
 * Opens a stored segment like readSegment (SHA-256 first, then decryption), decoding with
 * `decoder` when the writer schema is ours and with the archive's generic reader otherwise.
 */
export function openSegment(bytes: Buffer, opts: { expectedSha256: string; keyring?: Keyring; key?: string; decoder: ChangeEventDecoder }): FastSegment {
  const what = opts.key ? `segment ${opts.key}` : 'segment';
  const actual = sha256(bytes);
  if (actual !== opts.expectedSha256) {
    throw new IntegrityError(`${what}: SHA-256 of the stored bytes is ${actual}, its name says ${opts.expectedSha256}; the object was altered or truncated. Run cdp verify, and restore it from the offsite copy (cdp replicate)`, {
      details: { key: opts.key, expected: opts.expectedSha256, actual },
    });
  }
  const plain = isEncrypted(bytes) ? decryptObject(bytes, opts.keyring, what) : bytes;
  let meta: Map<string, Buffer>;
  let sync: Buffer;
  let pos: number;
  let manifest: SegmentManifest;
  try {
    if (plain.length < 4 || !MAGIC.equals(plain.subarray(0, 4))) throw new Error('bad magic');
    meta = new Map();
    pos = 4;
    for (;;) {
      let n: number;
      [n, pos] = readLong(plain, pos);
      if (n === 0) break;
      if (n < 0) {
        [, pos] = readLong(plain, pos);
        n = -n;
      }
      for (let i = 0; i < n; i++) {
        let len: number;
        [len, pos] = readLong(plain, pos);
        const k = plain.subarray(pos, pos + len).toString('utf8');
        pos += len;
        [len, pos] = readLong(plain, pos);
        meta.set(k, plain.subarray(pos, pos + len));
        pos += len;
      }
    }
    if (pos + 16 > plain.length) throw new Error('truncated header');
    sync = plain.subarray(pos, pos + 16);
    pos += 16;
    const m = meta.get(SEGMENT_MANIFEST_META);
    if (!m) throw new Error(`no ${SEGMENT_MANIFEST_META} metadata`);
    manifest = JSON.parse(m.toString('utf8')) as SegmentManifest;
  } catch (err) {
    throw new IntegrityError(`${what}: unreadable segment header (${toError(err).message})`, { cause: err, details: { key: opts.key } });
  }
  const schemaText = meta.get('avro.schema')?.toString('utf8');
  let ours = false;
  try {
    ours = schemaText !== undefined && JSON.stringify(JSON.parse(schemaText)) === OUR_SCHEMA;
  } catch {
    ours = false;
  }
  if (!ours) {
    const generic = readSegment(bytes, { expectedSha256: opts.expectedSha256, keyring: opts.keyring, key: opts.key });
    return { manifest: generic.manifest, blocks: () => generic.blocks() };
  }
  const codec = meta.get('avro.codec')?.toString('utf8') ?? 'null';
  const start = pos;
  return {
    manifest,
    blocks: function* () {
      let p = start;
      let seen = 0;
      while (p < plain.length) {
        let out: ChangeEvent[];
        try {
          let count: number;
          let size: number;
          [count, p] = readLong(plain, p);
          [size, p] = readLong(plain, p);
          if (size < 0 || p + size + 16 > plain.length) throw new RangeError('block extends past the end');
          const data = decompressBlock(codec, plain.subarray(p, p + size));
          p += size;
          if (!sync.equals(plain.subarray(p, p + 16))) throw new RangeError('sync marker mismatch');
          p += 16;
          out = opts.decoder.decodeBlock(data, count);
        } catch (err) {
          throw new IntegrityError(`${what}: corrupt block after ${seen} records (${toError(err).message})`, { cause: err, details: { key: opts.key } });
        }
        seen += out.length;
        yield out;
      }
      if (seen !== manifest.count) throw new IntegrityError(`${what}: holds ${seen} records, its manifest says ${manifest.count}`, { details: { key: opts.key } });
    },
  };
}
