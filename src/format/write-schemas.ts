import { writeFileSync } from 'node:fs';
import { changeBatchSchemaText } from './batch.js';
import { changeEventSchemaText } from './change-event.js';

// Writes schemas/*.avsc from the TypeScript definitions (npm run format:schemas): the files are
// for standard Avro tools and other consumers; test/unit/format/schemas.test.ts fails when they
// differ from what this writes.

export const SCHEMA_FILES: Record<string, string> = {
  'schemas/change-event.avsc': changeEventSchemaText,
  'schemas/change-batch.avsc': changeBatchSchemaText,
};

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const [path, text] of Object.entries(SCHEMA_FILES)) writeFileSync(new URL(`../../${path}`, import.meta.url), text);
}
