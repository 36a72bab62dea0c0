import { createHash } from 'node:crypto';
import { changeEventSchemaText, changeEventType, encodeChange, type ChangeEvent } from '../events/change-event.js';
import { CdpError, ErrorCodes, IntegrityError, toError } from '../errors.js';
import { getObject, sha256, type Store } from '../s3/client.js';
import { createCodec, decompressBlock, type BlockCodec } from './codec.js';
import { openObject, sealObject, type Keyring } from './crypto.js';
import { parseSegmentKey, segmentKey, SEGMENT_MANIFEST_META, type SegmentManifest, type SegmentName } from './layout.js';

// Segment files: Avro Object Container Files (Avro 1.11 specification, "Object Container Files"),
// so that standard Avro tools read an unencrypted segment:
//
//   header = "Obj\x01" | meta: map<bytes> {avro.schema, avro.codec, cdp.manifest} | 16-byte sync
//   block  = long count | long byteLength | codec(records) | sync
//
// The writer is a pure codec over Buffers (STYLE.md habit 1). It takes the Kafka record values as
// they are: a value is already the Avro binary encoding of a ChangeEvent with the very schema the
// file declares, so a block is the concatenation of values, with no decode/re-encode. Only the
// fixed leading fields (op, database, commitLsn, changeLsn, endLsn, xid, commitTime) are read, to
// build the manifest.
//
// The manifest belongs in the header but is known only at the end, so blocks are compressed as
// they fill and kept in memory (compressed: ~1/5 of segmentMaxBytes) until finish() writes
// header + blocks. The sync marker is derived from (partition, firstOffset), so the same records
// cut the same way give the same bytes, hence the same key (write-once retries are idempotent).

const MAGIC = Buffer.from([0x4f, 0x62, 0x6a, 0x01]); // "Obj" 1
const OP_SYMBOLS = ['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'DDL', 'MESSAGE', 'SEQUENCES', 'COMMIT', 'WATERMARK'] as const;
const OP_WATERMARK = OP_SYMBOLS.indexOf('WATERMARK');

/** Raw (uncompressed) bytes per Avro block: large enough for zstd to find redundancy, small
 * enough that a reader holds one block at a time. */
export const DEFAULT_BLOCK_BYTES = 1024 * 1024;

// --- Avro binary primitives (zig-zag varints; exact for |n| <= 2^53 using arithmetic, not bit ops) ---

export function writeLong(n: number): Buffer {
  let z = n >= 0 ? n * 2 : -n * 2 - 1;
  const out: number[] = [];
  while (z >= 0x80) {
    out.push((z % 0x80) | 0x80);
    z = Math.floor(z / 0x80);
  }
  out.push(z);
  return Buffer.from(out);
}

export function readLong(buf: Buffer, pos: number): [value: number, next: number] {
  let z = 0;
  let mul = 1;
  let b: number;
  do {
    if (pos >= buf.length) throw new RangeError('truncated varint');
    b = buf[pos++]!;
    z += (b & 0x7f) * mul;
    mul *= 0x80;
    if (mul > 2 ** 70) throw new RangeError('varint too long');
  } while (b & 0x80);
  return [z % 2 === 0 ? z / 2 : -(z + 1) / 2, pos];
}

function writeBytes(b: Buffer): Buffer {
  return Buffer.concat([writeLong(b.length), b]);
}

/** The fields of a ChangeEvent value that the manifest needs, read without a full decode. */
export interface ValuePrefix {
  op: number;
  commitLsn: number;
  commitTime: number;
}

export function readValuePrefix(value: Buffer): ValuePrefix {
  let pos = 0;
  let op: number;
  [op, pos] = readLong(value, pos);
  if (op < 0 || op >= OP_SYMBOLS.length) throw new RangeError(`op index ${op} out of range`);
  let len: number;
  [len, pos] = readLong(value, pos); // database
  if (len < 0 || pos + len > value.length) throw new RangeError('bad database string');
  pos += len;
  let commitLsn: number;
  [commitLsn, pos] = readLong(value, pos);
  [, pos] = readLong(value, pos); // changeLsn
  [, pos] = readLong(value, pos); // endLsn
  [, pos] = readLong(value, pos); // xid
  const [commitTime] = readLong(value, pos);
  return { op, commitLsn, commitTime };
}

export interface SegmentWriterOptions {
  partition: number;
  codec: 'zstandard' | 'deflate';
  zstdLevel?: number;
  blockBytes?: number;
  /** Chain of custody (chain.ts), recorded in the manifest when given. */
  generation?: number;
  epoch?: number;
  prevSha256?: string;
}

export interface FinishedSegment {
  /** The object to store (encrypted when a keyring was given). */
  bytes: Buffer;
  manifest: SegmentManifest;
  name: SegmentName;
  /** Uncompressed Avro bytes of the records (for the compression ratio). */
  rawBytes: number;
}

export class SegmentWriter {
  readonly partition: number;
  readonly createdAt = Date.now();
  private readonly codec: BlockCodec;
  private readonly blockBytes: number;
  private blocks: Buffer[] = [];
  private blocksBytes = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private pendingCount = 0;
  private sync: Buffer | undefined;
  private m: Omit<SegmentManifest, 'version' | 'partition' | 'codec'> = {
    firstOffset: '',
    lastOffset: '',
    count: 0,
    minLsn: Number.MAX_SAFE_INTEGER,
    maxLsn: 0,
    minTime: Number.MAX_SAFE_INTEGER,
    maxTime: 0,
    watermarkLsn: 0,
    watermarkTime: 0,
  };
  private raw = 0;

  constructor(private readonly opts: SegmentWriterOptions) {
    this.partition = opts.partition;
    this.codec = createCodec(opts.codec, opts.zstdLevel ?? 1);
    this.blockBytes = opts.blockBytes ?? DEFAULT_BLOCK_BYTES;
  }

  get count(): number {
    return this.m.count;
  }
  get firstOffset(): string {
    return this.m.firstOffset;
  }
  get lastOffset(): string {
    return this.m.lastOffset;
  }
  /** Uncompressed Avro bytes appended so far (what segmentMaxBytes bounds). */
  get rawBytes(): number {
    return this.raw;
  }
  /** Bytes held in memory now (compressed blocks + the block being filled). */
  get memoryBytes(): number {
    return this.blocksBytes + this.pendingBytes;
  }

  /** Appends one Kafka record value (Avro binary ChangeEvent) read at `offset`. */
  append(value: Buffer, offset: string): void {
    let p: ValuePrefix;
    try {
      p = readValuePrefix(value);
    } catch (err) {
      throw new CdpError(ErrorCodes.PROTOCOL, `partition ${this.partition} offset ${offset}: record value is not a ChangeEvent (${toError(err).message}); only cdp capture may produce to this topic`, { cause: err, details: { partition: this.partition, offset } });
    }
    const m = this.m;
    if (m.count === 0) {
      m.firstOffset = offset;
      this.sync = createHash('sha256').update(`cdp-segment/${this.partition}/${offset}`).digest().subarray(0, 16);
    }
    m.lastOffset = offset;
    m.count += 1;
    if (p.commitLsn < m.minLsn) m.minLsn = p.commitLsn;
    if (p.commitLsn > m.maxLsn) m.maxLsn = p.commitLsn;
    if (p.commitTime < m.minTime) m.minTime = p.commitTime;
    if (p.commitTime > m.maxTime) m.maxTime = p.commitTime;
    if (p.op === OP_WATERMARK && p.commitLsn >= m.watermarkLsn) {
      m.watermarkLsn = p.commitLsn;
      m.watermarkTime = p.commitTime;
    }
    this.pending.push(value);
    this.pendingBytes += value.length;
    this.pendingCount += 1;
    this.raw += value.length;
    if (this.pendingBytes >= this.blockBytes) this.flushBlock();
  }

  appendEvent(ev: ChangeEvent, offset: string): void {
    this.append(encodeChange(ev), offset);
  }

  private flushBlock(): void {
    if (this.pendingCount === 0) return;
    const data = this.codec.compress(Buffer.concat(this.pending, this.pendingBytes));
    const block = Buffer.concat([writeLong(this.pendingCount), writeLong(data.length), data, this.sync!]);
    this.blocks.push(block);
    this.blocksBytes += block.length;
    this.pending = [];
    this.pendingBytes = 0;
    this.pendingCount = 0;
  }

  finish(keyring?: Keyring): FinishedSegment {
    if (this.m.count === 0) throw new Error('finish() on an empty segment');
    this.flushBlock();
    const manifest: SegmentManifest = { version: 1, partition: this.partition, codec: this.opts.codec, ...this.m };
    if (this.opts.generation !== undefined) manifest.generation = this.opts.generation;
    if (this.opts.epoch !== undefined) manifest.epoch = this.opts.epoch;
    if (this.opts.prevSha256 !== undefined) manifest.prevSha256 = this.opts.prevSha256;
    const meta: Array<[string, Buffer]> = [
      ['avro.schema', Buffer.from(changeEventSchemaText.trim(), 'utf8')],
      ['avro.codec', Buffer.from(this.opts.codec, 'utf8')],
      [SEGMENT_MANIFEST_META, Buffer.from(JSON.stringify(manifest), 'utf8')],
    ];
    const header = [MAGIC, writeLong(meta.length)];
    for (const [k, v] of meta) header.push(writeBytes(Buffer.from(k, 'utf8')), writeBytes(v));
    header.push(writeLong(0), this.sync!);
    let bytes: Buffer = Buffer.concat([...header, ...this.blocks]);
    this.blocks = [];
    this.blocksBytes = 0;
    const name: SegmentName = {
      partition: this.partition,
      epoch: this.opts.epoch ?? 0,
      maxLsn: manifest.maxLsn,
      firstOffset: manifest.firstOffset,
      lastOffset: manifest.lastOffset,
      sha256: '0'.repeat(64),
    };
    // Sealed for its name (crypto.ts: the name without the hash of the sealed bytes).
    if (keyring) bytes = sealObject(bytes, keyring, segmentKey(keyring.archive, name));
    name.sha256 = sha256(bytes);
    return { bytes, manifest, name, rawBytes: this.raw };
  }
}

/** Encodes a whole segment at once (tests, tools). Offsets are consecutive from firstOffset. */
export function encodeSegment(
  events: ChangeEvent[],
  opts: SegmentWriterOptions & { firstOffset?: string | number; keyring?: Keyring },
): FinishedSegment {
  const w = new SegmentWriter(opts);
  let offset = BigInt(opts.firstOffset ?? 0);
  for (const ev of events) w.appendEvent(ev, String(offset++));
  return w.finish(opts.keyring);
}

// --- reader ---

export interface ReadSegmentOptions {
  expectedSha256: string;
  keyring?: Keyring;
  /** The object key, named in errors. */
  key?: string;
}

export interface OpenedSegment {
  manifest: SegmentManifest;
  codec: string;
  /** Decodes one block at a time. */
  events(): AsyncIterable<ChangeEvent>;
  /** The same, synchronously, one array per block (for callers that batch). */
  blocks(): Iterable<ChangeEvent[]>;
}

interface ParsedHeader {
  meta: Map<string, Buffer>;
  sync: Buffer;
  end: number;
}

function parseHeader(buf: Buffer, what: string): ParsedHeader {
  if (buf.length < 4 || !MAGIC.equals(buf.subarray(0, 4))) throw new IntegrityError(`${what} is not an Avro object container file (bad magic)`);
  const meta = new Map<string, Buffer>();
  let pos = 4;
  for (;;) {
    let n: number;
    [n, pos] = readLong(buf, pos);
    if (n === 0) break;
    if (n < 0) {
      [, pos] = readLong(buf, pos); // block byte size, unused
      n = -n;
    }
    for (let i = 0; i < n; i++) {
      let len: number;
      [len, pos] = readLong(buf, pos);
      const k = buf.subarray(pos, pos + len).toString('utf8');
      pos += len;
      [len, pos] = readLong(buf, pos);
      meta.set(k, buf.subarray(pos, pos + len));
      pos += len;
    }
  }
  if (pos + 16 > buf.length) throw new RangeError('truncated header');
  return { meta, sync: buf.subarray(pos, pos + 16), end: pos + 16 };
}

/** Decodes `count` records of a block's (decompressed) bytes. */
export type BlockDecoder = (data: Buffer, count: number) => ChangeEvent[];

/** avsc's generic decoder: any writer schema that resolves to ours. */
const decodeBlockGeneric: BlockDecoder = (data, count) => {
  const out = new Array<ChangeEvent>(count);
  let p = 0;
  for (let i = 0; i < count; i++) {
    const r = changeEventType.decode(data, p);
    if (r.offset < 0) throw new RangeError('truncated record');
    out[i] = r.value as ChangeEvent;
    p = r.offset;
  }
  if (p !== data.length) throw new RangeError('trailing bytes in block');
  return out;
};

/** A segment whose stored bytes were checked and whose header was read; blocks not yet decoded. */
export interface SegmentContainer {
  manifest: SegmentManifest;
  /** The header's metadata (avro.schema, avro.codec, cdp.manifest). */
  meta: Map<string, Buffer>;
  codec: string;
  /**
   * Walks the blocks, decompressing each, checking its sync marker, and decoding it with `decode`
   * (avsc's generic decoder by default); at the end, checks the record count against the manifest.
   */
  blocks(decode?: BlockDecoder): Generator<ChangeEvent[]>;
}

/**
 * Opens a stored segment's container: FIRST checks the SHA-256 of the stored bytes against the one
 * in its key (G5), then decrypts when encrypted, then reads the header. Blocks are decoded lazily.
 */
export function openContainer(bytes: Buffer, opts: ReadSegmentOptions): SegmentContainer {
  const what = opts.key ? `segment ${opts.key}` : 'segment';
  const actual = sha256(bytes);
  if (actual !== opts.expectedSha256) {
    throw new IntegrityError(`${what}: SHA-256 of the stored bytes is ${actual}, its name says ${opts.expectedSha256}; the object was altered or truncated. Run cdp verify, and restore it from the offsite copy (cdp replicate)`, {
      details: { key: opts.key, expected: opts.expectedSha256, actual },
    });
  }
  const { plain, envelope } = openObject(bytes, opts.keyring, opts.key, what);
  let header: ParsedHeader;
  let manifest: SegmentManifest;
  try {
    header = parseHeader(plain, what);
    const m = header.meta.get(SEGMENT_MANIFEST_META);
    if (!m) throw new Error(`no ${SEGMENT_MANIFEST_META} metadata`);
    manifest = JSON.parse(m.toString('utf8')) as SegmentManifest;
  } catch (err) {
    if (err instanceof CdpError) throw err;
    throw new IntegrityError(`${what}: unreadable segment header (${toError(err).message})`, { cause: err, details: { key: opts.key } });
  }
  if (envelope === 'v1') {
    // A legacy envelope authenticates the content, not the name: the name must match the
    // authenticated manifest, or the object was moved.
    const n = opts.key ? parseSegmentKey(opts.key) : undefined;
    if (!n || n.partition !== manifest.partition || n.firstOffset !== manifest.firstOffset || n.lastOffset !== manifest.lastOffset || n.maxLsn !== manifest.maxLsn) {
      throw new IntegrityError(`${what}: its v1-encrypted manifest says partition ${manifest.partition}, offsets ${manifest.firstOffset}..${manifest.lastOffset}: the object was moved or renamed`, { details: { key: opts.key } });
    }
  }
  const codec = header.meta.get('avro.codec')?.toString('utf8') ?? 'null';
  const blocks = function* (decode: BlockDecoder = decodeBlockGeneric): Generator<ChangeEvent[]> {
    let pos = header.end;
    let seen = 0;
    while (pos < plain.length) {
      let out: ChangeEvent[];
      try {
        let count: number;
        let size: number;
        [count, pos] = readLong(plain, pos);
        [size, pos] = readLong(plain, pos);
        if (size < 0 || pos + size + 16 > plain.length) throw new RangeError('block extends past the end');
        const data = decompressBlock(codec, plain.subarray(pos, pos + size));
        pos += size;
        if (!header.sync.equals(plain.subarray(pos, pos + 16))) throw new RangeError('sync marker mismatch');
        pos += 16;
        out = decode(data, count);
      } catch (err) {
        throw new IntegrityError(`${what}: corrupt block after ${seen} records (${toError(err).message})`, { cause: err, details: { key: opts.key } });
      }
      seen += out.length;
      yield out;
    }
    if (seen !== manifest.count) throw new IntegrityError(`${what}: holds ${seen} records, its manifest says ${manifest.count}`, { details: { key: opts.key } });
  };
  return { manifest, meta: header.meta, codec, blocks };
}

/** Opens a stored segment (see openContainer) and decodes it with avsc's generic decoder. */
export function readSegment(bytes: Buffer, opts: ReadSegmentOptions): OpenedSegment {
  const c = openContainer(bytes, opts);
  const blocks = () => c.blocks();
  return {
    manifest: c.manifest,
    codec: c.codec,
    blocks,
    events: () => ({
      async *[Symbol.asyncIterator]() {
        for (const block of blocks()) yield* block;
      },
    }),
  };
}

/** Downloads and opens a segment by key (the SHA-256 comes from the key, see layout.ts). */
export async function fetchSegment(store: Store, key: string, sha: string, keyring?: Keyring): Promise<OpenedSegment> {
  const bytes = await getObject(store, key);
  return readSegment(bytes, { expectedSha256: sha, keyring, key });
}
