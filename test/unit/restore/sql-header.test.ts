import { describe, expect, it } from 'vitest';
import { sqlFileHeader } from '../../../src/restore/restore.js';

describe('restore --sql file header', () => {
  it('names the base and target and sets the client encoding before any statement', () => {
    const h = sqlFileHeader({ lsnText: '0/1A2B3C', time: '2026-01-01T00:00:00.000000Z', key: 'bases/b.dump' }, '--latest');
    expect(h).toContain('-- Katya CDP replay: base 0/1A2B3C (2026-01-01T00:00:00.000000Z, bases/b.dump) to --latest');
    const sets = h.split('\n').filter((l) => l.startsWith('SET '));
    expect(sets).toHaveLength(1);
    expect(sets[0]).toMatch(
      /^SET client_encoding = 'UTF8'; SET standard_conforming_strings = on; SET session_replication_role = replica; SET search_path = pg_catalog, pg_temp;/,
    );
    expect(h).toContain('\\set ON_ERROR_STOP on\n');
  });
  it('keeps every manifest field inside its comment line (no line break can start a psql command)', () => {
    const h = sqlFileHeader({ lsnText: '0/1\n\\! touch /tmp/pwned', time: 't\r\n\\! id', key: 'k' }, '--latest');
    expect(h.split('\n').filter((l) => l.startsWith('\\!'))).toEqual([]);
    expect(h).toContain('base 0/1?\\! touch /tmp/pwned (t??\\! id, k)');
  });
});
