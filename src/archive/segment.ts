import { createHash } from 'node:crypto';
import { readLong, writeLong } from '../format/avro.js';
import { BatchBuilder, changeBatchSchemaText } from '../format/batch.js';
import type { ChangeEvent } from '../format/change-event.js';
import { ChangeEventDecoder, CURRENT_FORMAT, FORMAT_META, UnsupportedFormatError, type BlockDecoder } from '../format/decoder.js';
import { encodeEvent, type ValuePrefix } from '../format/event-codec.js';
import { OP_WATERMARK } from '../format/ops.js';
import { CdpError, ErrorCodes, IntegrityError, toError } from '../errors.js';
import { getObject, sha256, type Store } from '../s3/client.js';
import { createCodec, decompressBlock, type BlockCodec } from '../format/codec.js';
import { openObject, sealObject, type Keyring } from './crypto.js';
import { parseSegmentKey, segmentKey, SEGMENT_MANIFEST_META, type SegmentManifest, type SegmentName } from './layout.js';

// Segment files: Avro Object Container Files (Avro 1.11 specification, "Object Container Files"),
// so that standard Avro tools read an unencrypted segment:
//
//   header = "Obj\x01" | meta: map<bytes> {avro.schema, avro.codec, cdp.format, cdp.manifest} | 16-byte sync
//   block  = long count | long byteLength | codec(records) | sync
//
// The writer is a pure codec over Buffers (I/O stays with its callers). What a block holds is the format
// module's business (src/format, docs/format.md): this version writes format 2, one ChangeBatch
// per block, built from the Kafka record values (format 1) as they come (BatchBuilder); readers
// take format 1 (each record a ChangeEvent, segments written before format 2) and format 2, by
// the header's cdp.format.
//
// The manifest belongs in the header but is known only at the end, so blocks are compressed as
// they fill and kept in memory (compressed: ~1/5 of segmentMaxBytes) until finish() writes
// header + blocks. The sync marker is derived from (partition, firstOffset), so the same records
// cut the same way give the same bytes, hence the same key (write-once retries are idempotent).

const MAGIC = Buffer.from([0x4f, 0x62, 0x6a, 0x01]); // "Obj" 1

/** Raw (uncompressed) bytes per Avro block: large enough for zstd to find redundancy, small
 * enough that a reader holds one block at a time. */
export const DEFAULT_BLOCK_BYTES = 1024 * 1024;

/**
 * The most one block may decompress to: the reader refuses more (an integrity error, exit 3) before
 * allocating it, so forged bytes in an unencrypted segment cannot claim gigabytes. The header does not
 * record the writer's block size, so the limit is what any writer of ours can produce: a block is
 * closed once it holds DEFAULT_BLOCK_BYTES of record values, so it holds less than that plus one
 * record, and one record is a Kafka record value (its size is an int32, under 2 GiB; capture's
 * topics allow 64 MiB unless raised); the batch encoding adds a few bytes per record.
 */
export const MAX_BLOCK_RAW_BYTES = 2 ** 31 + 2 * DEFAULT_BLOCK_BYTES;

// The Avro primitives and the value prefix reader live in the format module; re-exported for the
// archive's other parts.
export { readLong, writeLong };
export { readValuePrefix, type ValuePrefix } from '../format/event-codec.js';

function writeBytes(b: Buffer): Buffer {
  return Buffer.concat([writeLong(b.length), b]);
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
  private readonly batch = new BatchBuilder();
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
  private changeCount = 0;
  private firstChange = 0;
  private lastWatermark = false;

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
  /** The highest watermark appended (0: none) and its commit time. */
  get watermarkLsn(): number {
    return this.m.watermarkLsn;
  }
  get watermarkTime(): number {
    return this.m.watermarkTime;
  }
  /** Records that are not watermarks (changes, DDL, sequences): what a restore replays. */
  get changes(): number {
    return this.changeCount;
  }
  /** ms timestamp of the first non-watermark record appended (0: none yet). */
  get firstChangeAt(): number {
    return this.firstChange;
  }
  /** The last record appended is a watermark: a cut now lets the restorable point cover everything before it. */
  get endsWithWatermark(): boolean {
    return this.lastWatermark;
  }
  /** Uncompressed Avro bytes appended so far (what segmentMaxBytes bounds). */
  get rawBytes(): number {
    return this.raw;
  }
  /** Bytes held in memory now (compressed blocks + the block being filled). */
  get memoryBytes(): number {
    return this.blocksBytes + this.batch.memoryBytes;
  }

  /** Appends one Kafka record value (format 1: Avro binary ChangeEvent) read at `offset`. */
  append(value: Buffer, offset: string): void {
    let p: ValuePrefix;
    try {
      p = this.batch.append(value);
    } catch (err) {
      throw new CdpError(
        ErrorCodes.PROTOCOL,
        `partition ${this.partition} offset ${offset}: record value is not a ChangeEvent (${toError(err).message}); only cdp capture may produce to this topic`,
        { cause: err, details: { partition: this.partition, offset } },
      );
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
    this.lastWatermark = p.op === OP_WATERMARK;
    if (!this.lastWatermark && this.changeCount++ === 0) this.firstChange = m.count === 1 ? this.createdAt : Date.now();
    this.raw += value.length;
    if (this.batch.bytesIn >= this.blockBytes) this.flushBlock();
  }

  appendEvent(ev: ChangeEvent, offset: string): void {
    this.append(encodeEvent(ev), offset);
  }

  private flushBlock(): void {
    if (this.batch.records === 0) return;
    // Format 2: one ChangeBatch datum per block (count 1).
    const data = this.codec.compress(this.batch.finish());
    const block = Buffer.concat([writeLong(1), writeLong(data.length), data, this.sync!]);
    this.blocks.push(block);
    this.blocksBytes += block.length;
  }

  finish(keyring?: Keyring): FinishedSegment {
    if (this.m.count === 0) throw new Error('finish() on an empty segment');
    this.flushBlock();
    const manifest: SegmentManifest = { version: 1, partition: this.partition, codec: this.opts.codec, ...this.m };
    if (this.opts.generation !== undefined) manifest.generation = this.opts.generation;
    if (this.opts.epoch !== undefined) manifest.epoch = this.opts.epoch;
    if (this.opts.prevSha256 !== undefined) manifest.prevSha256 = this.opts.prevSha256;
    const meta: Array<[string, Buffer]> = [
      ['avro.schema', Buffer.from(changeBatchSchemaText.trim(), 'utf8')],
      ['avro.codec', Buffer.from(this.opts.codec, 'utf8')],
      [FORMAT_META, Buffer.from(String(CURRENT_FORMAT), 'utf8')],
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
export function encodeSegment(events: ChangeEvent[], opts: SegmentWriterOptions & { firstOffset?: string | number; keyring?: Keyring }): FinishedSegment {
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

/** A byte count read from `buf`, whose bytes start at `pos`: it must be >= 0 and fit in what is left of `buf`. */
function checkedLength(buf: Buffer, len: number, pos: number, what: string): number {
  if (len < 0) throw new RangeError(`${what} has a negative length ${len} at byte ${pos}`);
  if (len > buf.length - pos) throw new RangeError(`${what} of ${len} bytes at byte ${pos} extends past the end (${buf.length} bytes)`);
  return len;
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
      // A negative count is followed by the block's byte size (Avro 1.11, "Binary Encoding", maps).
      let size: number;
      [size, pos] = readLong(buf, pos);
      checkedLength(buf, size, pos, 'header metadata block');
      n = -n;
    }
    for (let i = 0; i < n; i++) {
      let len: number;
      [len, pos] = readLong(buf, pos);
      const k = buf.subarray(pos, pos + checkedLength(buf, len, pos, 'metadata key')).toString('utf8');
      pos += len;
      [len, pos] = readLong(buf, pos);
      if (meta.has(k)) throw new RangeError(`metadata key ${JSON.stringify(k)} appears twice`);
      meta.set(k, buf.subarray(pos, pos + checkedLength(buf, len, pos, `metadata value ${JSON.stringify(k)}`)));
      pos += len;
    }
  }
  if (pos + 16 > buf.length) throw new RangeError('truncated header');
  return { meta, sync: buf.subarray(pos, pos + 16), end: pos + 16 };
}

export type { BlockDecoder };

/** A segment whose stored bytes were checked and whose header was read; blocks not yet decoded. */
export interface SegmentContainer {
  manifest: SegmentManifest;
  /** The header's metadata (avro.schema, avro.codec, cdp.format, cdp.manifest). */
  meta: Map<string, Buffer>;
  codec: string;
  /**
   * Walks the blocks, decompressing each, checking its sync marker, and decoding it with the
   * decoder for the segment's format (`decoder`'s, or a fresh one's); at the end, checks the
   * record count against the manifest.
   */
  blocks(decoder?: ChangeEventDecoder): Generator<ChangeEvent[]>;
}

/**
 * Opens a stored segment's container: FIRST checks the SHA-256 of the stored bytes against the one
 * in its key (G5), then decrypts when encrypted, then reads the header. Blocks are decoded lazily.
 */
export function openContainer(bytes: Buffer, opts: ReadSegmentOptions): SegmentContainer {
  const what = opts.key ? `segment ${opts.key}` : 'segment';
  const actual = sha256(bytes);
  if (actual !== opts.expectedSha256) {
    throw new IntegrityError(
      `${what}: SHA-256 of the stored bytes is ${actual}, its name says ${opts.expectedSha256}; the object was altered or truncated. Run cdp verify, and restore it from the offsite copy (cdp replicate)`,
      {
        details: { key: opts.key, expected: opts.expectedSha256, actual },
      },
    );
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
    if (
      !n ||
      n.partition !== manifest.partition ||
      n.firstOffset !== manifest.firstOffset ||
      n.lastOffset !== manifest.lastOffset ||
      n.maxLsn !== manifest.maxLsn
    ) {
      throw new IntegrityError(
        `${what}: its v1-encrypted manifest says partition ${manifest.partition}, offsets ${manifest.firstOffset}..${manifest.lastOffset}: the object was moved or renamed`,
        { details: { key: opts.key } },
      );
    }
  }
  const codec = header.meta.get('avro.codec')?.toString('utf8') ?? 'null';
  const blocks = function* (decoder: ChangeEventDecoder = new ChangeEventDecoder()): Generator<ChangeEvent[]> {
    let decode: BlockDecoder;
    try {
      decode = decoder.forSegment(header.meta);
    } catch (err) {
      if (err instanceof UnsupportedFormatError)
        throw new CdpError(ErrorCodes.UNSUPPORTED, `${what}: ${err.message}`, { cause: err, details: { key: opts.key } });
      throw err;
    }
    let pos = header.end;
    let seen = 0;
    while (pos < plain.length) {
      let out: ChangeEvent[];
      try {
        let count: number;
        let size: number;
        [count, pos] = readLong(plain, pos);
        [size, pos] = readLong(plain, pos);
        if (count < 0) throw new RangeError(`block record count ${count} is negative`);
        checkedLength(plain, size, pos, 'block');
        if (size + 16 > plain.length - pos) throw new RangeError('block extends past the end (no room for its sync marker)');
        const data = decompressBlock(codec, plain.subarray(pos, pos + size), MAX_BLOCK_RAW_BYTES);
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
    if (seen !== manifest.count)
      throw new IntegrityError(`${what}: holds ${seen} records, its manifest says ${manifest.count}`, { details: { key: opts.key } });
  };
  return { manifest, meta: header.meta, codec, blocks };
}

/**
 * Opens a stored segment (see openContainer) and decodes it. Pass one `decoder` to every segment
 * of a restore: it keeps one object per relation description across segments.
 */
export function readSegment(bytes: Buffer, opts: ReadSegmentOptions & { decoder?: ChangeEventDecoder }): OpenedSegment {
  const c = openContainer(bytes, opts);
  const blocks = () => c.blocks(opts.decoder);
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
