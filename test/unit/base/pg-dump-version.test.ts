import { describe, expect, it } from 'vitest';
import { pgDumpVersionProblem } from '../../../src/base/basebackup.js';

// A base of a source of major N needs pg_dump N or newer (pg_dump aborts on a newer server).
describe('pgDumpVersionProblem', () => {
  const debian15 = 'pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)';
  it('accepts a pg_dump of the same or a newer major', () => {
    expect(pgDumpVersionProblem(debian15, 'pg_dump', 150020, '15.20')).toBeUndefined();
    expect(pgDumpVersionProblem('pg_dump (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)', 'pg_dump', 160014, '16.14')).toBeUndefined();
    expect(pgDumpVersionProblem('pg_dump (PostgreSQL) 18.6', 'pg_dump', 180004, '18.4')).toBeUndefined();
  });
  it('names the versions, the major needed and the setting when pg_dump is older than the server', () => {
    const msg = pgDumpVersionProblem(debian15, '/usr/bin/pg_dump', 170010, '17.10');
    expect(msg).toContain('/usr/bin/pg_dump is pg_dump (PostgreSQL) 15.20');
    expect(msg).toContain('PostgreSQL 17.10');
    expect(msg).toContain('needs pg_dump 17 or newer');
    expect(msg).toContain('basebackup.pgDumpPath');
    expect(pgDumpVersionProblem('pg_dump (PostgreSQL) 17.12', 'pg_dump', 180004, '18.4')).toContain('needs pg_dump 18 or newer');
  });
  it('leaves an unknown version to the run itself', () => {
    expect(pgDumpVersionProblem('unknown', 'pg_dump', 180004, '18.4')).toBeUndefined();
  });
});
