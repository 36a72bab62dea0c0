import { readFileSync } from 'node:fs';
import avro from 'avsc';

// The change event (DESIGN.md section 3): one Avro schema for the Kafka record value and for the
// rows of a segment file. Kept in schemas/change-event.avsc so that standard Avro tools read it.

export type Op = 'INSERT' | 'UPDATE' | 'DELETE' | 'TRUNCATE' | 'DDL' | 'MESSAGE' | 'SEQUENCES' | 'COMMIT' | 'WATERMARK';

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

export const changeEventSchemaText = readFileSync(new URL('../../schemas/change-event.avsc', import.meta.url), 'utf8');
export const changeEventType = avro.Type.forSchema(JSON.parse(changeEventSchemaText)) as avro.Type;

/** Kafka header naming the value's schema and its version, for consumers other than ours. */
export const SCHEMA_HEADER = { name: 'cdp-schema', value: 'io.katya.cdp.ChangeEvent/1' } as const;

export function encodeChange(ev: ChangeEvent): Buffer {
  return changeEventType.toBuffer(ev);
}

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
