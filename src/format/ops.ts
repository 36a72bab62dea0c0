// The operations of a change event, in the order of the Avro enum `Op` (its index is what travels
// on the wire): append only, never reorder, or every archived record changes meaning.

export const OPS = ['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'DDL', 'MESSAGE', 'SEQUENCES', 'COMMIT', 'WATERMARK'] as const;

export type Op = (typeof OPS)[number];

export const OP_INDEX: ReadonlyMap<Op, number> = new Map(OPS.map((op, i) => [op, i]));

export const OP_WATERMARK = OPS.indexOf('WATERMARK');
