import { readFileSync } from 'node:fs';
import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { changeEventSchema } from '../../../src/format/change-event.js';
import { SCHEMA_FILES } from '../../../src/format/write-schemas.js';
import { OPS } from '../../../src/format/ops.js';

// One source: the .avsc files are generated from the TypeScript definitions.

describe('schemas/*.avsc', () => {
  for (const [path, text] of Object.entries(SCHEMA_FILES)) {
    it(`${path} is what src/format writes (regenerate: npx tsx src/format/write-schemas.ts)`, () => {
      expect(readFileSync(new URL(`../../../${path}`, import.meta.url), 'utf8')).toBe(text);
      expect(() => avro.Type.forSchema(JSON.parse(text) as avro.Schema)).not.toThrow();
    });
  }

  it('the Op enum is the list of operations, in wire order', () => {
    expect(changeEventSchema.fields[0]!.type).toEqual({ type: 'enum', name: 'Op', symbols: [...OPS] });
    // Append only: these indexes are in every archived record.
    expect(OPS.slice(0, 9)).toEqual(['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'DDL', 'MESSAGE', 'SEQUENCES', 'COMMIT', 'WATERMARK']);
  });
});
