import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { adminUrl, createDatabase, fingerprint, runCli, stackEnvironment, startRun, waitFor, withClient } from '../restore/helpers.js';
import { stopDaemon, usePipelineDatabase, waitRestorablePast, walPosition } from './pipeline.js';

// Issue 14: every PostgreSQL connection of the engine over TLS with sslmode=verify-full and a
// client certificate. The stack's Postgres (deploy/local/stack.sh pg_ensure_tls) lets the role
// cdp_tls in only by `hostssl ... cert`, so a connection that is not TLS with the stack's client
// certificate is refused by the server: setup, capture (replication and catalog connections),
// basebackup's pg_dump, status, and restore (its own connection and pg_restore) all succeeding as
// cdp_tls is the proof. The client key is the encrypted one, its password in a file.

const env0 = stackEnvironment();
const dir = env0.CDP_STACK_PG_TLS_DIR ?? process.env.CDP_STACK_PG_TLS_DIR;
const role = env0.CDP_STACK_PG_TLS_ROLE ?? 'cdp_tls';
const ready = Boolean(dir && existsSync(join(dir, 'client-enc.key')));

function tlsUrl(db: string): string {
  const u = new URL(adminUrl(db));
  u.username = role;
  return u.toString();
}

/** verify-full with the stack's CA and the encrypted client key, for the source or the restore target. */
function tlsEnv(side: 'SOURCE' | 'TARGET'): Record<string, string> {
  return {
    [`CDP_${side}_SSLMODE`]: 'verify-full',
    [`CDP_${side}_SSLROOTCERT`]: join(dir!, 'ca.pem'),
    [`CDP_${side}_SSLCERT`]: join(dir!, 'client.crt'),
    [`CDP_${side}_SSLKEY`]: join(dir!, 'client-enc.key'),
    [`CDP_${side}_SSLKEY_PASSWORD_FILE`]: join(dir!, 'client-key.password'),
  };
}

describe.skipIf(!ready)('PostgreSQL over TLS (verify-full, client certificate)', () => {
  const db = usePipelineDatabase({
    label: 'tls',
    prefix: 'test-pgtls',
    sourceUrl: tlsUrl,
    env: ready ? { ...tlsEnv('SOURCE'), ...tlsEnv('TARGET') } : {},
    schema: `CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, 'base ' || g FROM generate_series(1, 200) g`,
  });
  const name = db.name;

  it('the role cannot connect without TLS (the server enforces what the test relies on)', async () => {
    const plain = await runCli(['status'], { ...db.env, CDP_SOURCE_SSLMODE: 'disable' }, 60_000);
    expect(plain.code, plain.stderr).toBe(2);
    expect(plain.stderr).toMatch(/no encryption|rejects connection/);
  });

  it('setup, run (capture + archive + base), status and restore as the certificate role; the restore equals the source', async () => {
    const setup = await runCli(['setup'], db.env);
    expect(setup.code, setup.stderr).toBe(0);
    const run = (db.run = startRun(db.env));
    let stderr = '';
    run.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    await withClient(db.url, async (c) => {
      await c.query(`INSERT INTO items SELECT g, 'stream ' || g FROM generate_series(201, 400) g`);
      await c.query(`UPDATE items SET note = note || ' updated' WHERE id % 7 = 0`);
      await c.query(`DELETE FROM items WHERE id % 11 = 0`);
    });
    const until = await walPosition(db.url);
    // Capture's own connections (walsender and catalog) are TLS, as the role.
    const ssl = await withClient(adminUrl(), async (c) =>
      waitFor(
        'capture connected over TLS',
        async () => {
          const r = await c.query<{ backend_type: string; ssl: boolean }>(
            `SELECT a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1 AND a.datname = $2`,
            [role, name],
          );
          return r.rows.some((x) => x.backend_type === 'walsender') ? r.rows : undefined;
        },
        60_000,
      ),
    );
    expect(
      ssl.every((x) => x.ssl),
      JSON.stringify(ssl),
    ).toBe(true);
    await waitRestorablePast(db.env, until, 'the restorable point past the changes');
    await stopDaemon(run);
    expect(run.exitCode, stderr.slice(-2000)).toBe(0);

    const target = `${name}_r`;
    db.dropAfter.push(target);
    await createDatabase(target);
    const restore = await runCli(['restore', '--into', tlsUrl(target), '--latest'], db.env);
    expect(restore.code, restore.stderr).toBe(0);
    const [want, got] = await Promise.all([withClient(db.url, fingerprint), withClient(adminUrl(target), fingerprint)]);
    expect(got).toEqual(want);
  }, 400_000);

  it('a wrong CA fails fast: exit 2, one line naming the setting, no stack trace', async () => {
    const t = Date.now();
    const r = await runCli(['capture'], { ...db.env, CDP_SOURCE_SSLROOTCERT: join(dir!, 'other-ca.pem') }, 60_000);
    const ms = Date.now() - t;
    console.log(`wrong CA: exit ${r.code} after ${ms} ms: ${r.stderr.trim()}`);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    expect(r.stderr).toMatch(/TLS failed.*source\.tls/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(ms).toBeLessThan(20_000);
    // A restore target with the wrong CA: exit 2 as well.
    const target = `${name}_w`;
    db.dropAfter.push(target);
    await createDatabase(target);
    const w = await runCli(['restore', '--into', tlsUrl(target), '--latest'], { ...db.env, CDP_TARGET_SSLROOTCERT: join(dir!, 'other-ca.pem') }, 60_000);
    expect(w.code, w.stderr).toBe(2);
    expect(w.stderr).toMatch(/certificate/);
  }, 120_000);
});
