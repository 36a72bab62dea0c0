import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { ConfigError } from '../../../src/errors.js';
import { childConnection } from '../../../src/pg/child-conn.js';
import { childTls, pgConnection, splitTlsParams } from '../../../src/pg/tls.js';

// Issue 14: PostgreSQL TLS with libpq's meanings, for node-postgres and for the client programs.

const dir = mkdtempSync(join(tmpdir(), 'cdp-tls-unit-'));
const ca = join(dir, 'ca.pem');
writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n');
const cert = join(dir, 'client.crt');
writeFileSync(cert, 'CERT');
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
const plainKey = join(dir, 'client.key');
writeFileSync(plainKey, privateKey.export({ type: 'pkcs8', format: 'pem' }));
const encKey = join(dir, 'client-enc.key');
writeFileSync(encKey, privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 's3cret' }));
const passFile = join(dir, 'key.pass');
writeFileSync(passFile, 's3cret\n');

describe('pgConnection (node-postgres)', () => {
  it('leaves a URL without TLS settings exactly as it was', () => {
    expect(pgConnection('postgres://u@h/db?application_name=x')).toEqual({ connectionString: 'postgres://u@h/db?application_name=x' });
  });

  it('verify-full: CA, client certificate and key, host name checked (no checkServerIdentity override)', () => {
    const c = pgConnection('postgres://u@h:5432/db?application_name=x', { mode: 'verify-full', rootCertFile: ca, certFile: cert, keyFile: plainKey });
    expect(c.connectionString).toBe('postgres://u@h:5432/db?application_name=x');
    expect(c.ssl).toMatchObject({ ca: readFileSync(ca, 'utf8'), cert: 'CERT', rejectUnauthorized: true });
    expect((c.ssl as { checkServerIdentity?: unknown }).checkServerIdentity).toBeUndefined();
  });

  it('verify-ca checks the chain, not the name; require without a CA checks nothing; require with a CA is verify-ca (libpq)', () => {
    const vca = pgConnection('postgres://h/db', { mode: 'verify-ca', rootCertFile: ca });
    expect(vca.ssl).toMatchObject({ rejectUnauthorized: true });
    expect(typeof (vca.ssl as { checkServerIdentity?: unknown }).checkServerIdentity).toBe('function');
    expect(pgConnection('postgres://h/db', { mode: 'require' }).ssl).toEqual({ rejectUnauthorized: false });
    const reqCa = pgConnection('postgres://h/db', { mode: 'require', rootCertFile: ca });
    expect(reqCa.ssl).toMatchObject({ rejectUnauthorized: true });
    expect(typeof (reqCa.ssl as { checkServerIdentity?: unknown }).checkServerIdentity).toBe('function');
    expect(pgConnection('postgres://h/db?sslmode=disable').ssl).toBe(false);
  });

  it('takes libpq parameters from the URL (out of the string node-postgres parses), the configuration winning', () => {
    const c = pgConnection(`postgres://h/db?sslmode=require&sslrootcert=${encodeURIComponent(ca)}&x=1`);
    expect(c.connectionString).toBe('postgres://h/db?x=1');
    expect(c.ssl).toMatchObject({ rejectUnauthorized: true });
    expect(pgConnection('postgres://h/db?sslmode=verify-full', { mode: 'disable' }).ssl).toBe(false);
    expect(splitTlsParams('postgres://h/db?sslpassword=p%26q&a=b').params).toEqual({ sslpassword: 'p&q' });
  });

  it('the key password comes from a file or an environment variable', () => {
    expect(
      (
        pgConnection('postgres://h/db', { mode: 'verify-full', rootCertFile: ca, certFile: cert, keyFile: encKey, keyPasswordFile: passFile }).ssl as {
          passphrase?: string;
        }
      ).passphrase,
    ).toBe('s3cret');
    expect(
      (
        pgConnection('postgres://h/db', { mode: 'verify-full', rootCertFile: ca, certFile: cert, keyFile: encKey, keyPasswordEnv: 'K' }, 'source.tls', {
          K: 'pw',
        }).ssl as { passphrase?: string }
      ).passphrase,
    ).toBe('pw');
  });

  it('errors name the field: unreadable files, verify-ca without a CA, a certificate without a key, an unset password variable', () => {
    const field = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as ConfigError).message;
      }
      throw new Error('no error');
    };
    expect(field(() => pgConnection('postgres://h/db', { mode: 'verify-full', rootCertFile: '/nonexistent/ca.pem' }))).toMatch(
      /source\.tls\.rootCertFile.*root certificate/,
    );
    expect(field(() => pgConnection('postgres://h/db', { mode: 'verify-ca' }, 'restore.tls'))).toMatch(/restore\.tls\.rootCertFile/);
    expect(field(() => pgConnection('postgres://h/db', { certFile: cert }))).toMatch(/keyFile/);
    expect(field(() => pgConnection('postgres://h/db', { keyPasswordEnv: 'NOPE_NOT_SET', certFile: cert, keyFile: encKey }, 'source.tls', {}))).toMatch(
      /NOPE_NOT_SET/,
    );
    expect(field(() => pgConnection('postgres://h/db?sslmode=bogus'))).toMatch(/sslmode/);
  });
});

describe('childTls / childConnection (libpq programs)', () => {
  it('hands the settings over as PGSSL* and keeps password and TLS parameters off the command line', () => {
    const c = childConnection(
      'postgres://u:pw@h/db?sslmode=require&sslrootcert=/x.pem',
      { PATH: '/bin' },
      { mode: 'verify-full', rootCertFile: ca, certFile: cert, keyFile: plainKey },
    );
    expect(c.url).toBe('postgres://u@h/db');
    expect(c.env).toEqual({ PATH: '/bin', PGPASSWORD: 'pw', PGSSLMODE: 'verify-full', PGSSLROOTCERT: ca, PGSSLCERT: cert, PGSSLKEY: plainKey });
    expect(c.cleanup).toBeUndefined();
  });

  it('an encrypted key is decrypted into a private temporary file, removed by cleanup', () => {
    const t = childTls('postgres://h/db', { mode: 'verify-full', rootCertFile: ca, certFile: cert, keyFile: encKey, keyPasswordFile: passFile });
    const file = t.env.PGSSLKEY!;
    expect(file).not.toBe(encKey);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(file, '..')).mode & 0o777).toBe(0o700);
    expect(readFileSync(file, 'utf8')).toMatch(/BEGIN PRIVATE KEY/);
    t.cleanup!();
    expect(existsSync(file)).toBe(false);
    // A URL's sslpassword never reaches argv either.
    const u = childConnection(`postgres://h/db?sslkey=${encodeURIComponent(encKey)}&sslcert=${encodeURIComponent(cert)}&sslpassword=s3cret`, {});
    expect(u.url).toBe('postgres://h/db');
    expect(u.env.PGSSLKEY).not.toBe(encKey);
    u.cleanup!();
  });

  it('a wrong key password is a configuration error naming where the password came from, not the password', () => {
    let msg = '';
    try {
      childTls('postgres://h/db', { mode: 'verify-full', certFile: cert, keyFile: encKey, keyPasswordEnv: 'K' }, 'source.tls', { K: 'wrong-one' });
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(/\$K/);
    expect(msg).not.toContain('wrong-one');
  });

  it('the configuration reads source.tls and restore.tls from CDP_* variables', () => {
    const cfg = loadConfig({
      env: { CDP_SOURCE_SSLMODE: 'verify-full', CDP_SOURCE_SSLROOTCERT: ca, CDP_TARGET_SSLMODE: 'require', CDP_TARGET_SSLKEY_PASSWORD_ENV: 'X' },
      flags: {},
    });
    expect(cfg.source.tls).toEqual({ mode: 'verify-full', rootCertFile: ca });
    expect(cfg.restore.tls).toEqual({ mode: 'require', keyPasswordEnv: 'X' });
    expect(() => loadConfig({ env: { CDP_SOURCE_SSLMODE: 'prefer' }, flags: {} })).toThrow(/source\.tls\.mode/);
  });
});
