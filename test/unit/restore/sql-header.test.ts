import { describe, expect, it } from 'vitest';
import { sqlFileHeader } from '../../../src/restore/restore.js';

describe('restore --sql file header', () => {
  it('names the base and target and sets the client encoding before any statement', () => {
    const h = sqlFileHeader({ lsnText: '0/1A2B3C', time: '2026-01-01T00:00:00.000000Z', key: 'bases/b.dump' }, '--latest');
    expect(h).toContain('-- Katya CDP replay: base 0/1A2B3C (2026-01-01T00:00:00.000000Z, bases/b.dump) to --latest');
    const sets = h.split('\n').filter((l) => l.startsWith('SET '));
    expect(sets).toEqual(["SET client_encoding = 'UTF8';", 'SET standard_conforming_strings = on;', 'SET session_replication_role = replica;']);
  });
});
