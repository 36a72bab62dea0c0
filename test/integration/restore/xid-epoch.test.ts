import { execFileSync, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../../src/util/lsn.js';
import { pipelineEnv, rand, runCli, stackEnvironment, startRun, waitFor, withClient } from './helpers.js';

// `--xid` after 2^32 transactions (issue 13). pgoutput carries 32-bit xids; PostgreSQL shows
// 64-bit ones (pg_current_xact_id(), txid_current(): epoch << 32 | xid). A throwaway cluster
// under /tmp whose xid epoch was advanced with pg_resetwal -e 1 hands out xids >= 2^32 from its
// first transaction; the whole pipeline (setup, run, restore) runs against it, and restore
// --xid <64-bit id> stops exactly after that transaction.

const id = rand();
const dir = mkdtempSync(join(tmpdir(), 'cdp-xid-'));
const data = join(dir, 'data');
const port = 20000 + Math.floor(Math.random() * 20000);
const name = `cdp_xid_${id}`;
const srcUrl = `postgres://postgres@127.0.0.1:${port}/${name}`;
let env: Record<string, string> = {};
let run: ChildProcess | undefined;

function asPostgres(cmd: string, args: string[]): string {
  return execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function pgBin(cmd: string): string {
  return join(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim(), cmd);
}

describe('--xid on a cluster past 2^32 transactions', () => {
  beforeAll(async () => {
    stackEnvironment();
    chownSync(dir, Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })), Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })));
    asPostgres(pgBin('initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
    asPostgres(pgBin('pg_resetwal'), ['-e', '1', data]);
    asPostgres(pgBin('pg_ctl'), [
      '-D',
      data,
      '-l',
      join(dir, 'log'),
      '-w',
      'start',
      '-o',
      `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir} -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 -c fsync=off`,
    ]);
    await withClient(`postgres://postgres@127.0.0.1:${port}/postgres`, (c) => c.query(`CREATE DATABASE ${name}`));
    await withClient(srcUrl, (c) => c.query('CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)'));
    env = pipelineEnv(name, srcUrl, 'test-xid');
  }, 120_000);

  afterAll(async () => {
    if (run && run.exitCode === null) run.kill('SIGKILL');
    try {
      asPostgres(pgBin('pg_ctl'), ['-D', data, '-m', 'immediate', 'stop']);
    } catch {
      // already stopped
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('restore --xid with a 64-bit id stops exactly after that transaction', async () => {
    const setup = await runCli(['setup'], env);
    expect(setup.code, setup.stderr).toBe(0);
    run = startRun(env);
    // Drained: a child blocked on a full stderr pipe would stop archiving.
    let runLog = '';
    run.stderr!.on('data', (d: Buffer) => (runLog = (runLog + d.toString()).slice(-20_000)));
    const xids: string[] = [];
    await withClient(srcUrl, async (c) => {
      for (let i = 1; i <= 3; i++) {
        await c.query('BEGIN');
        await c.query(`INSERT INTO t SELECT g, 'txn${i}' FROM generate_series(${i * 100}, ${i * 100 + 9}) g`);
        xids.push((await c.query('SELECT pg_current_xact_id()::text AS x')).rows[0].x as string);
        await c.query('COMMIT');
      }
    });
    // Every xid of this cluster is in epoch 1: beyond what a 32-bit id can name.
    for (const x of xids) expect(BigInt(x)).toBeGreaterThan(2n ** 32n);
    const lsn = await withClient(srcUrl, async (c) => (await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l as string);
    // Restore's own view of the archive (a dry run) must reach past the three transactions.
    await waitFor(
      'a dry-run restore to reach the three transactions',
      async () => {
        const d = await runCli(['restore', '--into', 'postgres://unused@127.0.0.1:1/unused', '--dry-run', '--latest'], env);
        return (
          d.code === 0 &&
          parseLsn((JSON.parse(d.stdout.trim().split('\n').at(-1)!) as { restorablePoint: { lsn: string } }).restorablePoint.lsn) >= parseLsn(lsn)
        );
      },
      120_000,
      1_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; cdp run said: ${runLog.slice(-4000)}`);
    });
    // Capture and archive stop before the restore: it reads a quiet archive.
    const exited = new Promise((resolve) => run!.on('exit', resolve));
    run.kill('SIGTERM');
    await exited;

    const target = `${name}_r`;
    await withClient(`postgres://postgres@127.0.0.1:${port}/postgres`, (c) => c.query(`CREATE DATABASE ${target}`));
    const r = await runCli(['restore', '--into', `postgres://postgres@127.0.0.1:${port}/${target}`, '--xid', xids[1]!], env);
    expect(r.code, r.stderr + runLog.slice(-3000)).toBe(0);
    const rows = await withClient(
      `postgres://postgres@127.0.0.1:${port}/${target}`,
      async (c) => (await c.query('SELECT v, count(*)::int AS n FROM t GROUP BY v ORDER BY v')).rows,
    );
    expect(rows).toEqual([
      { v: 'txn1', n: 10 },
      { v: 'txn2', n: 10 },
    ]);
  });
});
