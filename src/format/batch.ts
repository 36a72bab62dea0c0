// Format 2: the rows of a segment block as ONE Avro datum, a ChangeBatch (docs/format.md).
//
// Format 1 stores each Kafka record value as it came: every row change repeats its relation
// description (column names and types), its transaction's database, commit LSN, xid and commit
// time, and interleaves the values of all columns, which zstd cannot model well (the archive was
// 2.9x smaller than the raw pgoutput bytes). A ChangeBatch holds the same records field by field:
//   - relation descriptions once per batch (`relations`), rows refer to them by index;
//   - transaction fields once per run of records of one transaction (`txns`);
//   - changeLsn and position as deltas from the previous record;
//   - column values column by column, per relation (`columns`), and a column whose values are all
//     canonical decimal integers (a bigint key, a counter) as deltas of their values.
// Every batch is self-contained: a reader needs nothing from another block or segment, and a
// reference to a relation the batch does not hold is an error, never a guess.
//
// The archiver builds a batch straight from the format-1 value bytes (BatchBuilder.append: no
// JavaScript strings are made, value bytes are copied as they are); restore decodes it with
// BatchDecoder, which builds each relation and each database string once.
//
// batch-schema.ts: the schema; batch-builder.ts: BatchBuilder (archiver); batch-decoder.ts:
// BatchDecoder (restore).

export { changeBatchSchema, changeBatchSchemaText, FORMAT_V2 } from './batch-schema.js';
export { BatchBuilder } from './batch-builder.js';
export { BatchDecoder } from './batch-decoder.js';
