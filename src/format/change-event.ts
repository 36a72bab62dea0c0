import avro from 'avsc';
import { OPS, type Op } from './ops.js';

// The change event (DESIGN.md section 3), format 1: one Avro record per Kafka record value, and
// the rows of a segment written before format 2 (docs/format.md). This TypeScript object is the
// one source of the schema: schemas/change-event.avsc is generated from it (npm run
// format:schemas) for standard Avro tools, and a unit test fails when the two differ.

export type { Op } from './ops.js';

export interface RelationInfo {
  oid: number;
  replicaIdentity: string;
  columns: string[];
  types: string[];
  key: number[];
}

export interface ChangeEvent {
  op: Op;
  database: string;
  commitLsn: number;
  changeLsn: number;
  endLsn: number;
  xid: number;
  commitTime: number;
  position: number;
  schema: string;
  table: string;
  relation: RelationInfo | null;
  oldKind: string | null;
  old: (string | null)[] | null;
  new: (string | null)[] | null;
  unchanged: number[];
  content: string | null;
  prefix: string | null;
}

/** The relation description (Avro record io.katya.cdp.Relation), shared by format 1 and 2. */
export const relationSchema = {
  type: 'record',
  name: 'Relation',
  fields: [
    { name: 'oid', type: 'long' },
    { name: 'replicaIdentity', type: 'string', doc: 'd (default: primary key), n (nothing), f (full), i (index)' },
    { name: 'columns', type: { type: 'array', items: 'string' } },
    { name: 'types', type: { type: 'array', items: 'string' }, doc: 'format_type(type oid, typmod), schema-qualified when outside pg_catalog.' },
    { name: 'key', type: { type: 'array', items: 'int' }, doc: 'Indexes of the replica identity key columns.' },
  ],
} as const;

/** Field order is the byte order: append only (with defaults), never reorder. */
export const changeEventSchema = {
  type: 'record',
  name: 'ChangeEvent',
  namespace: 'io.katya.cdp',
  doc: 'One row change, or a control record, as carried in a Kafka record value and as a row of a segment file. Column values are in PostgreSQL text output format. Identity of a change: (commitLsn, position).',
  fields: [
    {
      name: 'op',
      type: { type: 'enum', name: 'Op', symbols: [...OPS] },
      doc: 'COMMIT closes a transaction (position = number of changes before it). WATERMARK: every transaction with commit LSN <= commitLsn has been fully acknowledged by Kafka in every partition before this record.',
    },
    { name: 'database', type: 'string' },
    { name: 'commitLsn', type: 'long', doc: "LSN of the transaction's commit record (pgoutput Begin final_lsn). For WATERMARK: the watermark." },
    { name: 'changeLsn', type: 'long', doc: "LSN of this change's WAL record; 0 when unknown." },
    { name: 'endLsn', type: 'long', doc: 'COMMIT only: end of the commit record, the LSN confirmed to the slot. 0 otherwise.' },
    { name: 'xid', type: 'long' },
    { name: 'commitTime', type: 'long', doc: 'Commit time, microseconds since the Unix epoch. For WATERMARK: commit time of the watermark transaction.' },
    { name: 'position', type: 'int', doc: '0-based position of the change inside its transaction.' },
    { name: 'schema', type: 'string', doc: 'Empty when not about a table.' },
    { name: 'table', type: 'string', doc: 'Empty when not about a table.' },
    { name: 'relation', type: ['null', relationSchema], default: null },
    {
      name: 'oldKind',
      type: ['null', 'string'],
      default: null,
      doc: 'K: old holds only the key columns (others null); O: old holds the whole old row (REPLICA IDENTITY FULL).',
    },
    { name: 'old', type: ['null', { type: 'array', items: ['null', 'string'] }], default: null },
    { name: 'new', type: ['null', { type: 'array', items: ['null', 'string'] }], default: null },
    {
      name: 'unchanged',
      type: { type: 'array', items: 'int' },
      default: [],
      doc: 'Indexes of columns whose value is an unchanged TOAST value (not sent); new[i] is null there.',
    },
    {
      name: 'content',
      type: ['null', 'string'],
      default: null,
      doc: 'DDL: JSON {command, tag, searchPath, objects, ...} (src/format/ddl.ts); TRUNCATE: JSON {relations: [[schema, table]], cascade, restartIdentity}; MESSAGE: the message text; SEQUENCES: JSON {"schema.seq": last_value}; WATERMARK: JSON {partition}.',
    },
    { name: 'prefix', type: ['null', 'string'], default: null, doc: 'MESSAGE: the logical message prefix.' },
  ],
};

/** The text of schemas/change-event.avsc (generated from changeEventSchema). */
export const changeEventSchemaText = JSON.stringify(changeEventSchema, null, 2) + '\n';

/** avsc's type for format 1: the generic encoder and decoder (tests, tools, foreign writer schemas). */
export const changeEventType = avro.Type.forSchema(changeEventSchema as avro.Schema) as avro.Type;

/** Kafka header naming the value's schema and its version, for consumers other than ours. */
export const SCHEMA_HEADER = { name: 'cdp-schema', value: 'io.katya.cdp.ChangeEvent/1' } as const;

/** avsc's generic encoding (the reference the fast encoder is tested against). */
export function encodeChange(ev: ChangeEvent): Buffer {
  return changeEventType.toBuffer(ev);
}

/** avsc's generic decoding of one format-1 value. */
export function decodeChange(buf: Buffer): ChangeEvent {
  return changeEventType.fromBuffer(buf) as ChangeEvent;
}

/** Ops that carry data applied by restore (everything but COMMIT and WATERMARK). */
export function isDataOp(op: Op): boolean {
  return op !== 'COMMIT' && op !== 'WATERMARK';
}

/** Total order used everywhere: by commit LSN, then by position in the transaction. */
export function compareIdentity(a: { commitLsn: number; position: number }, b: { commitLsn: number; position: number }): number {
  return a.commitLsn - b.commitLsn || a.position - b.position;
}

/**
 * Kafka key: table plus primary-key values, so that the changes of one row stay in order in one
 * partition. Values are joined with a separator that cannot occur in text output (NUL).
 */
export function kafkaKey(ev: ChangeEvent): string {
  if (ev.relation && (ev.op === 'INSERT' || ev.op === 'UPDATE' || ev.op === 'DELETE')) {
    const row = ev.op === 'DELETE' ? ev.old : ev.new;
    const parts = [ev.schema, ev.table];
    for (const i of ev.relation.key) parts.push(row?.[i] ?? '');
    return parts.join('\u0000');
  }
  if (ev.schema) return `${ev.schema}\u0000${ev.table}`;
  return `txn\u0000${ev.xid}`;
}

export function emptyEvent(partial: Partial<ChangeEvent> & Pick<ChangeEvent, 'op' | 'database'>): ChangeEvent {
  return {
    commitLsn: 0,
    changeLsn: 0,
    endLsn: 0,
    xid: 0,
    commitTime: 0,
    position: 0,
    schema: '',
    table: '',
    relation: null,
    oldKind: null,
    old: null,
    new: null,
    unchanged: [],
    content: null,
    prefix: null,
    ...partial,
  };
}
