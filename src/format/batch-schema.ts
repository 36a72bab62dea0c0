import { relationSchema } from './change-event.js';

// The Avro schema of format 2 (docs/format.md): one source, schemas/change-batch.avsc is generated
// from it (src/format/write-schemas.ts).

export const FORMAT_V2 = 2;

const nullableString = ['null', 'string'];
const longArray = { type: 'array', items: 'long' };
const intArrayType = { type: 'array', items: 'int' };

/** The Avro schema of a format-2 segment (the `avro.schema` of its container). One source: schemas/change-batch.avsc is generated from it. */
export const changeBatchSchema = {
  type: 'record',
  name: 'ChangeBatch',
  namespace: 'io.katya.cdp.v2',
  doc: 'Format 2 of a segment block (docs/format.md): the change events of one block, field by field. Record k of the batch is made of the k-th item of every per-record array.',
  fields: [
    { name: 'count', type: 'int', doc: 'Number of records in the batch.' },
    { name: 'ops', type: 'bytes', doc: 'One byte per record: the index of its op in io.katya.cdp.Op.' },
    {
      name: 'txns',
      type: {
        type: 'array',
        items: {
          type: 'record',
          name: 'Txn',
          fields: [
            { name: 'database', type: 'string' },
            { name: 'commitLsn', type: 'long' },
            { name: 'xid', type: 'long' },
            { name: 'commitTime', type: 'long' },
            { name: 'count', type: 'int', doc: 'Consecutive records with these four fields.' },
          ],
        },
      },
      doc: 'Runs of consecutive records sharing database, commitLsn, xid and commitTime; the counts add up to count.',
    },
    { name: 'changeLsn', type: longArray, doc: "Per record: changeLsn minus the previous record's (0 before the first)." },
    { name: 'position', type: longArray, doc: "Per record: position minus the previous record's (0 before the first)." },
    { name: 'endLsn', type: { type: 'array', items: ['null', 'long'] }, doc: 'Per record: null when endLsn is 0, else endLsn minus commitLsn.' },
    {
      name: 'relations',
      type: {
        type: 'array',
        items: {
          type: 'record',
          name: 'RelationRef',
          fields: [
            { name: 'schema', type: 'string' },
            { name: 'table', type: 'string' },
            { name: 'relation', type: relationSchema },
          ],
        },
      },
      doc: 'The relation descriptions the records of this batch refer to, each once.',
    },
    { name: 'relation', type: intArrayType, doc: 'Per record: index in relations, or -1 (no relation; its schema and table are in schemas and tables).' },
    { name: 'schemas', type: { type: 'array', items: 'string' }, doc: 'schema of each record without a relation, in order.' },
    { name: 'tables', type: { type: 'array', items: 'string' }, doc: 'table of each record without a relation, in order.' },
    { name: 'oldKind', type: { type: 'array', items: nullableString } },
    { name: 'oldCount', type: intArrayType, doc: 'Per record: number of old values, -1 when old is null.' },
    { name: 'newCount', type: intArrayType, doc: 'Per record: number of new values, -1 when new is null.' },
    {
      name: 'columns',
      type: {
        type: 'array',
        items: {
          type: 'array',
          items: [
            { type: 'record', name: 'TextColumn', fields: [{ name: 'values', type: { type: 'array', items: nullableString } }] },
            { type: 'record', name: 'IntColumn', fields: [{ name: 'deltas', type: { type: 'array', items: ['null', 'long'] } }] },
          ],
        },
      },
      doc: "Group g (0: records without a relation, r + 1: relations[r]) holds column i's values of the old then new tuple of each record of the group, in record order. IntColumn: every value is a canonical decimal integer, stored as the difference from the previous non-null value of the column (0 before the first).",
    },
    { name: 'unchanged', type: { type: 'array', items: intArrayType } },
    { name: 'content', type: { type: 'array', items: nullableString } },
    { name: 'prefix', type: { type: 'array', items: nullableString } },
  ],
};

export const changeBatchSchemaText = JSON.stringify(changeBatchSchema, null, 2) + '\n';
