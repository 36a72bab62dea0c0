import { describe, expect, it } from 'vitest';
import { clientMajor, pgRestoreVersionProblem, ScriptHeaderFilter, scriptMode } from '../../../src/restore/client-version.js';

// Which pg_restore can load which base into which target (the version matrix's client rules).
describe('pgRestoreVersionProblem', () => {
  const r15 = 'pg_restore (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)';
  const r17 = 'pg_restore (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)';
  const d15 = 'pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)';
  const d17 = 'pg_dump (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)';
  const d18 = 'pg_dump (PostgreSQL) 18.6 (Debian 18.6-3)';
  it('reads majors', () => {
    expect(clientMajor(r17)).toBe(17);
    expect(clientMajor('pg_restore (PostgreSQL) 9.6.24')).toBe(9.6);
    expect(clientMajor('unknown')).toBeUndefined();
  });
  it('lets a base of 15 go anywhere with pg_restore 15, and same-or-newer pairs of 17+', () => {
    for (const t of [150020, 160014, 170010, 180004])
      expect(pgRestoreVersionProblem({ pgRestorePath: 'pg_restore', pgRestoreVersion: r15, baseDumpVersion: d15, targetVersionNum: t })).toBeUndefined();
    expect(pgRestoreVersionProblem({ pgRestorePath: 'x', pgRestoreVersion: r17, baseDumpVersion: d17, targetVersionNum: 170010 })).toBeUndefined();
    expect(
      pgRestoreVersionProblem({ pgRestorePath: 'x', pgRestoreVersion: 'pg_restore (PostgreSQL) 18.6', baseDumpVersion: d17, targetVersionNum: 180004 }),
    ).toBeUndefined();
  });
  it('refuses a pg_restore older than the base, naming the setting', () => {
    const m = pgRestoreVersionProblem({ pgRestorePath: '/usr/bin/pg_restore', pgRestoreVersion: r15, baseDumpVersion: d18, targetVersionNum: 180004 });
    expect(m).toContain('/usr/bin/pg_restore is pg_restore 15 and the base was written by pg_dump 18');
    expect(m).toContain('basebackup.pgRestorePath at pg_restore 18 or newer');
  });
  it('loads a base into a target before 17 with pg_restore 17+ as a script (no refusal)', () => {
    expect(pgRestoreVersionProblem({ pgRestorePath: 'x', pgRestoreVersion: r17, baseDumpVersion: d17, targetVersionNum: 160014 })).toBeUndefined();
    expect(scriptMode(r17, 160014)).toBe(true);
    expect(scriptMode(r17, 170010)).toBe(false);
    expect(scriptMode(r15, 160014)).toBe(false);
  });
});

describe('ScriptHeaderFilter', () => {
  it("drops the header's SET transaction_timeout, across chunk boundaries, and nothing after the header", () => {
    const script = [
      '--',
      '-- PostgreSQL database dump',
      '\\restrict abc',
      'SET statement_timeout = 0;',
      'SET transaction_timeout = 0;',
      "SELECT pg_catalog.set_config('search_path', '', false);",
      '',
      'CREATE TABLE public.t (v text);',
      'COPY public.t (v) FROM stdin;',
      'SET transaction_timeout = 0;',
      '\\.',
      '',
    ].join('\n');
    for (const size of [1, 7, 1000]) {
      const f = new ScriptHeaderFilter();
      let out = '';
      for (let i = 0; i < script.length; i += size) out += f.push(script.slice(i, i + size));
      out += f.end();
      expect(out).toBe(script.replace('SET transaction_timeout = 0;\n', ''));
      expect(out.match(/SET transaction_timeout/g)).toHaveLength(1);
    }
  });
});
