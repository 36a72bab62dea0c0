import { readFileSync } from 'node:fs';
import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { openContainer, readSegment } from '../../../src/archive/segment.js';
import type { ChangeEvent } from '../../../src/format/change-event.js';
import { changeEventSchema } from '../../../src/format/change-event.js';
import { ChangeEventDecoder } from '../../../src/format/decoder.js';

// A segment written by the code before format 2 (format 1, git 3907f93; how: fixtures'
// generate.ts.txt) must read back whole, by the decoder restore uses and by the generic one.

const dir = new URL('../../fixtures/segment-v1/', import.meta.url);
const bytes = readFileSync(new URL('segment.avro', dir));
const info = JSON.parse(readFileSync(new URL('segment.json', dir), 'utf8')) as { key: string; sha256: string; manifest: unknown };
const expected = JSON.parse(readFileSync(new URL('events.json', dir), 'utf8')) as ChangeEvent[];

describe('format 1 segment (written before format 2)', () => {
  it('has no cdp.format header and the format-1 schema (canonical form)', () => {
    const c = openContainer(bytes, { expectedSha256: info.sha256, key: info.key });
    expect(c.meta.has('cdp.format')).toBe(false);
    const fp = (s: unknown) =>
      avro.Type.forSchema(s as avro.Schema)
        .fingerprint('sha256')
        .toString('hex');
    expect(fp(JSON.parse(c.meta.get('avro.schema')!.toString()))).toBe(fp(changeEventSchema));
    expect(c.manifest).toEqual(info.manifest);
  });

  it('restore reads every record exactly (the decoder shared across segments, and a fresh one)', () => {
    const decoder = new ChangeEventDecoder();
    for (let round = 0; round < 2; round++) {
      const got = [...readSegment(bytes, { expectedSha256: info.sha256, key: info.key, decoder }).blocks()].flat();
      expect(got).toEqual(expected);
    }
    expect([...readSegment(bytes, { expectedSha256: info.sha256, key: info.key }).blocks()].flat()).toEqual(expected);
  });

  it('an unknown format version is refused with what to do', () => {
    const c = openContainer(bytes, { expectedSha256: info.sha256, key: info.key });
    c.meta.set('cdp.format', Buffer.from('9'));
    expect(() => [...c.blocks()]).toThrow(/segment format "9" is newer than this cdp reads \(1, 2\): upgrade cdp/);
  });
});
