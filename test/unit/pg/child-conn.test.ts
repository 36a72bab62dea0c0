import { describe, expect, it } from 'vitest';
import { childConnection } from '../../../src/pg/child-conn.js';
import { pgDumpArgs } from '../../../src/base/basebackup.js';
import { pgRestoreArgs } from '../../../src/restore/base-restore.js';
import { loadConfig } from '../../../src/config/config.js';

describe('passwords never reach a child command line', () => {
  it('moves the password of the URL into PGPASSWORD and keeps the rest byte for byte', () => {
    const c = childConnection('postgres://alice:s%40cr%3At@db.example:6432/shop?sslmode=require&application_name=a+b', {});
    expect(c.url).toBe('postgres://alice@db.example:6432/shop?sslmode=require&application_name=a+b');
    expect(c.env.PGPASSWORD).toBe('s@cr:t');
  });

  it('takes a password given as a query parameter out too', () => {
    const c = childConnection('postgresql://alice@h/db?password=pw%26x&sslmode=disable', { PATH: '/bin' });
    expect(c.url).toBe('postgresql://alice@h/db?sslmode=disable');
    expect(c.env).toEqual({ PATH: '/bin', PGPASSWORD: 'pw&x' });
    expect(childConnection('postgres://h/db?password=x', {}).url).toBe('postgres://h/db');
  });

  it('leaves a URL without a password and the inherited environment alone', () => {
    const c = childConnection('postgres://alice@h/db', { PGPASSWORD: 'from-operator' });
    expect(c).toEqual({ url: 'postgres://alice@h/db', env: { PGPASSWORD: 'from-operator' } });
  });

  it('pg_dump and pg_restore arguments carry no password', async () => {
    const cfg = loadConfig({ env: { CDP_SOURCE_URL: 'postgres://bob:hunter2@127.0.0.1:5432/shop' }, flags: {} });
    const dump = pgDumpArgs(cfg, '00000003-00000002-1', ['katya_cdp']);
    expect(dump.join(' ')).not.toContain('hunter2');
    expect(dump).toContain('--dbname=postgres://bob@127.0.0.1:5432/shop');
    const into = childConnection('postgres://bob:hunter2@127.0.0.1/target');
    expect(pgRestoreArgs({ into: into.url, jobs: 2, listFile: '/tmp/l', file: '/tmp/f' }).join(' ')).not.toContain('hunter2');
    expect(into.env.PGPASSWORD).toBe('hunter2');
  });
});
