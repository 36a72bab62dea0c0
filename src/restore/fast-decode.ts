import type { Keyring } from '../archive/crypto.js';
import type { SegmentManifest } from '../archive/layout.js';
import { openContainer } from '../archive/segment.js';
import { changeEventSchemaText, type ChangeEvent, type Op, type RelationInfo } from '../events/change-event.js';

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
// Used only when the segment's writer schema is exactly ours; anything else goes through avsc's
// generic decoder. The container (SHA-256 of the stored bytes first, then decryption, header, sync
// markers, block and record counts) is the archive's own reader, openContainer; only the records
// of each block are decoded here.

const OPS: Op[] = ['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'DDL', 'MESSAGE', 'SEQUENCES', 'COMMIT', 'WATERMARK'];
const OUR_SCHEMA = JSON.stringify(JSON.parse(changeEventSchemaText));

type Utf8Buffer = Buffer & { utf8Slice(start: number, end: number): string };

/** Decoded empty int arrays are this one frozen array: consumers never modify event arrays. */
const EMPTY_INTS = Object.freeze([]) as unknown as number[];

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
    if (last && last.length === len) {
      // Names are short: a byte loop here is cheaper than a call into Buffer.compare.
      let i = 0;
      while (i < len && last[i] === b[start + i]) i++;
      if (i === len) return slot.value;
    }
    slot.bytes = Buffer.from(b.subarray(start, this.pos));
    slot.value = b.utf8Slice(start, this.pos);
    return slot.value;
  }

  nullableString(): string | null {
    return this.long() === 0 ? null : this.string();
  }

  /**
   * The item count of an array's next block, 0 at the end. A negative count is followed by the
   * block's byte size, which we do not need.
   */
  blockCount(): number {
    const n = this.long();
    if (n >= 0) return n;
    this.long();
    return -n;
  }

  stringArray(): string[] {
    const out: string[] = [];
    for (let n = this.blockCount(); n !== 0; n = this.blockCount()) for (let i = 0; i < n; i++) out.push(this.string());
    return out;
  }

  intArray(): number[] {
    if (this.buf[this.pos] === 0) {
      // An empty array (one zero byte): shared, as most events have no unchanged-TOAST columns.
      this.pos++;
      return EMPTY_INTS;
    }
    const out: number[] = [];
    for (let n = this.blockCount(); n !== 0; n = this.blockCount()) for (let i = 0; i < n; i++) out.push(this.long());
    return out;
  }

  skipArray(item: () => void): void {
    for (let n = this.blockCount(); n !== 0; n = this.blockCount()) for (let i = 0; i < n; i++) item();
  }

  values(): (string | null)[] {
    const out: (string | null)[] = [];
    for (let n = this.blockCount(); n !== 0; n = this.blockCount()) for (let i = 0; i < n; i++) out.push(this.long() === 0 ? null : this.string());
    return out;
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

export interface FastSegment {
  manifest: SegmentManifest;
  blocks(): Iterable<ChangeEvent[]>;
}

/**
 * Opens a stored segment like readSegment (SHA-256 first, then decryption), decoding with
 * `decoder` when the writer schema is ours and with the archive's generic reader otherwise.
 */
export function openSegment(bytes: Buffer, opts: { expectedSha256: string; keyring?: Keyring; key?: string; decoder: ChangeEventDecoder }): FastSegment {
  const c = openContainer(bytes, { expectedSha256: opts.expectedSha256, keyring: opts.keyring, key: opts.key });
  const schemaText = c.meta.get('avro.schema')?.toString('utf8');
  let ours: boolean;
  try {
    ours = schemaText !== undefined && JSON.stringify(JSON.parse(schemaText)) === OUR_SCHEMA;
  } catch {
    ours = false;
  }
  if (!ours) return { manifest: c.manifest, blocks: () => c.blocks() };
  const decode = (data: Buffer, count: number) => opts.decoder.decodeBlock(data, count);
  return { manifest: c.manifest, blocks: () => c.blocks(decode) };
}
