import { describe, expect, it } from 'vitest';
import type { BaseManifestExt } from '../../../src/base/basebackup.js';
import { ErrorCodes } from '../../../src/errors.js';
import { cursorRefusal, ddlRoleRefusal, notEmptyRefusal, type RestoreCursor } from '../../../src/restore/prepare.js';

// restore's checks of the target before anything is written (src/restore/prepare.ts), on the rows
// they read: before the split they were only reachable through a live restore.

const base = { lsn: 0x3000000, lsnText: '0/3000000' } as BaseManifestExt;
const cursor = (c: Partial<RestoreCursor>): RestoreCursor => ({
  base_lsn: String(0x3000000),
  target: '--latest',
  commit_lsn: String(0x3000100),
  commit_time: '1000',
  xid: '900',
  transactions: '12',
  phase: 'replay',
  ...c,
});

describe('restore: preparing the target', () => {
  it('--ddl-role must exist on the target and must not be a superuser', () => {
    expect(ddlRoleRefusal('app', { rolsuper: false })).toBeUndefined();
    const missing = ddlRoleRefusal('app', undefined);
    expect(missing?.code).toBe(ErrorCodes.USAGE);
    expect(missing?.message).toBe('--ddl-role app: no such role on the target; create it first');
    const superuser = ddlRoleRefusal('postgres', { rolsuper: true });
    expect(superuser?.code).toBe(ErrorCodes.USAGE);
    expect(superuser?.message).toMatch(/^--ddl-role postgres is a superuser: DDL from the stream would run with more privilege/);
  });

  it('resumes only the same base and target, and never a restore interrupted while loading its base', () => {
    expect(cursorRefusal(cursor({}), base, '--latest')).toBeUndefined();
    const other = cursorRefusal(cursor({ base_lsn: String(0x1000000), target: '--lsn 0/5000000' }), base, '--latest');
    expect(other?.code).toBe(ErrorCodes.TARGET_NOT_EMPTY);
    expect(other?.exitCode).toBe(2);
    expect(other?.message).toBe(
      'the target holds an interrupted restore from base 0/1000000 to --lsn 0/5000000; resume it with the same target, or use a fresh database',
    );
    expect(cursorRefusal(cursor({}), base, '--lsn 0/5000000')?.code).toBe(ErrorCodes.TARGET_NOT_EMPTY);
    expect(cursorRefusal(cursor({ phase: 'base' }), base, '--latest')?.message).toBe(
      'the target holds a restore interrupted while loading its base; drop and recreate the database, then restore again',
    );
  });

  it('a target with tables and no cursor is refused unless --force, naming up to five tables', () => {
    expect(notEmptyRefusal([], false)).toBeUndefined();
    expect(notEmptyRefusal(['public.a'], true)).toBeUndefined();
    expect(notEmptyRefusal(['public.a', 'public.b'], false)?.message).toBe(
      'the target database is not empty (public.a, public.b); restore into a fresh database, or pass --force',
    );
    const five = ['a', 'b', 'c', 'd', 'e'].map((t) => `public.${t}`);
    expect(notEmptyRefusal(five, false)?.message).toContain('(public.a, public.b, public.c, public.d, public.e, ...)');
    expect(notEmptyRefusal(five, false)?.code).toBe(ErrorCodes.TARGET_NOT_EMPTY);
  });
});
