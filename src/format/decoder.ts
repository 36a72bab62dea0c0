import avro from 'avsc';
import { BatchDecoder, changeBatchSchema, FORMAT_V2 } from './batch.js';
import { changeEventSchema, type ChangeEvent } from './change-event.js';
import { decodeBlockGeneric, EventDecoder } from './event-codec.js';

// Which decoder reads a segment's blocks, from its container header (docs/format.md, "Versions"):
//   cdp.format absent or "1": format 1 (each record a ChangeEvent); our schema -> EventDecoder,
//                             another writer schema -> avsc, resolved to ours;
//   cdp.format "2":           one ChangeBatch per block -> BatchDecoder;
//   anything else:            refused (written by a newer cdp).

/** Container header key holding the segment's format version (absent: 1). */
export const FORMAT_META = 'cdp.format';

/** The format this version writes. */
export const CURRENT_FORMAT = FORMAT_V2;

/** Formats this version reads. */
export const READABLE_FORMATS = [1, FORMAT_V2] as const;

export type BlockDecoder = (data: Buffer, count: number) => ChangeEvent[];

const fingerprint = (schema: unknown) =>
  avro.Type.forSchema(schema as avro.Schema)
    .fingerprint('sha256')
    .toString('hex');
const V1_FINGERPRINT = fingerprint(changeEventSchema);
const V2_FINGERPRINT = fingerprint(changeBatchSchema);

/** A segment this version cannot read: the message says what to do. */
export class UnsupportedFormatError extends Error {}

/** Decodes the blocks of segments of any readable format; caches (relations, names) persist across segments. */
export class ChangeEventDecoder {
  private readonly v1 = new EventDecoder();
  private readonly v2 = new BatchDecoder();
  private readonly writers = new Map<string, { fp: string; type: avro.Type }>();

  /** The block decoder for a segment whose container header holds `meta`. */
  forSegment(meta: Map<string, Buffer>): BlockDecoder {
    const format = meta.get(FORMAT_META)?.toString('utf8') ?? '1';
    const schemaText = meta.get('avro.schema')?.toString('utf8') ?? '';
    const writer = this.writer(schemaText);
    if (format === String(FORMAT_V2)) {
      if (writer?.fp !== V2_FINGERPRINT) throw new UnsupportedFormatError(`format ${format} segment with an unknown avro.schema`);
      return (data, count) => {
        if (count !== 1) throw new RangeError(`a format 2 block holds one ChangeBatch, this one ${count}`);
        return this.v2.decode(data);
      };
    }
    if (format !== '1')
      throw new UnsupportedFormatError(`segment format ${JSON.stringify(format)} is newer than this cdp reads (${READABLE_FORMATS.join(', ')}): upgrade cdp`);
    if (writer === undefined) throw new UnsupportedFormatError('format 1 segment without a readable avro.schema');
    if (writer.fp === V1_FINGERPRINT) return (data, count) => this.v1.decodeBlock(data, count);
    return (data, count) => decodeBlockGeneric(data, count, writer.type);
  }

  private writer(text: string): { fp: string; type: avro.Type } | undefined {
    let w = this.writers.get(text);
    if (w) return w;
    try {
      const type = avro.Type.forSchema(JSON.parse(text) as avro.Schema);
      w = { fp: type.fingerprint('sha256').toString('hex'), type };
    } catch {
      return undefined;
    }
    this.writers.set(text, w);
    return w;
  }
}
