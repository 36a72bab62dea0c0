import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/util/lsn.js';
import { allRows, compareContents, contentFingerprint, diffSchemaDumps, schemaDump } from '../integration/restore/schema-compare.js';
import { pipelineEnv, rand, REPO, restorableLsn, runCli, stackEnvironment, waitFor } from '../integration/restore/helpers.js';
import { withClient } from '../support/stack.js';
import { clientConfigFile, clusterUrl, createDb, deleteTopics, dropDb, newestPgDump, normaliseDump, SCHEMA, tool, workload } from './support.js';

// A failover on PostgreSQL 17 with a failover slot (README "Failover and major upgrades"): a
// physical standby of the 17 cluster, built with pg_basebackup, runs with sync_replication_slots;
// the primary lists the standby's slot in synchronized_standby_slots. Capture runs on the primary
// with source.failoverSlot, the standby is promoted, capture is pointed at it and continues from the
// synced slot: no break in the archive (status --check passes) and a restore of the latest point
// equals the promoted server's database. (The old primary stays up here; nothing writes to it.)

stackEnvironment();
const id = rand();
const name = `fop_${id}`;
const physSlot = `sb_${id}`;
const SB_PORT = 5427;
const serverBin = process.env.CDP_STACK_PG17_SERVER_BIN ?? '';
const sbData = join(dirname(dirname(serverBin)), `standby-17-${id}`);
const runs: ChildProcess[] = [];
let standbyStarted = false;
const restored = `${name}_r`;

/** Runs a server program of 17 as the postgres OS user (initdb and pg_ctl refuse root). */
function asPostgres(prog: string, args: string[]): string {
  const env = `LD_LIBRARY_PATH=${join(dirname(serverBin), 'lib')}`;
  const r =
    process.getuid?.() === 0
      ? spawnSync('runuser', ['-u', 'postgres', '--', 'env', env, join(serverBin, prog), ...args], { cwd: '/', encoding: 'utf8' })
      : spawnSync('env', [env, join(serverBin, prog), ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${prog} ${args.join(' ')} failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const standbyUrl = (db = 'postgres') => `postgres://postgres@127.0.0.1:${SB_PORT}/${db}`;

function startRun(env: Record<string, string>, cfg: string): ChildProcess {
  const p = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, '-c', cfg, 'run'], {
    env: { ...process.env, CDP_LOG_FORMAT: 'json', CDP_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  runs.push(p);
  return p;
}

async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
  await done;
  clearTimeout(t);
}

const currentLsn = (url: string) => withClient(url, async (c) => (await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l);

afterAll(async () => {
  for (const p of runs) if (p.exitCode === null) p.kill('SIGKILL');
  if (standbyStarted) {
    try {
      asPostgres('pg_ctl', ['-D', sbData, '-m', 'immediate', '-w', 'stop']);
    } catch {
      /* already stopped */
    }
  }
  rmSync(sbData, { recursive: true, force: true });
  rmSync(`${sbData}.log`, { force: true });
  await withClient(clusterUrl(17), async (c) => {
    await c.query(`ALTER SYSTEM RESET synchronized_standby_slots`);
    await c.query(`SELECT pg_reload_conf()`);
    await c.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [physSlot]);
  }).catch(() => {});
  await dropDb(17, name);
  await dropDb(17, restored);
  await deleteTopics([name]);
});

describe('failover with a failover slot (PostgreSQL 17)', () => {
  it('the promoted standby has the slot, capture continues from it, no break, the restore is exact', async () => {
    expect(serverBin, 'CDP_STACK_PG17_SERVER_BIN (stack.sh env --pg 17)').not.toBe('');
    // ---- The standby.
    await withClient(clusterUrl(17), (c) => c.query(`SELECT pg_create_physical_replication_slot($1)`, [physSlot]));
    rmSync(sbData, { recursive: true, force: true });
    const bb = spawnSync(tool(17, 'pg_dump').replace(/pg_dump$/, 'pg_basebackup'), ['-D', sbData, '-d', clusterUrl(17), '-S', physSlot, '-X', 'stream', '-R', '-c', 'fast'], { encoding: 'utf8' });
    expect(bb.status, bb.stderr).toBe(0);
    appendFileSync(
      join(sbData, 'postgresql.auto.conf'),
      [
        `port = ${SB_PORT}`,
        `unix_socket_directories = '${sbData}'`,
        `primary_conninfo = 'host=127.0.0.1 port=5417 user=postgres dbname=postgres'`,
        `primary_slot_name = '${physSlot}'`,
        `sync_replication_slots = on`,
        `hot_standby_feedback = on`,
        '',
      ].join('\n'),
    );
    if (process.getuid?.() === 0) spawnSync('chown', ['-R', 'postgres:postgres', sbData]);
    chmodSync(sbData, 0o700);
    asPostgres('pg_ctl', ['-D', sbData, '-l', `${sbData}.log`, '-w', '-t', '120', 'start']);
    standbyStarted = true;
    await withClient(clusterUrl(17), async (c) => {
      await c.query(`ALTER SYSTEM SET synchronized_standby_slots = '${physSlot}'`);
      await c.query(`SELECT pg_reload_conf()`);
    });

    // ---- Capture on the primary, with a failover slot.
    const url = await createDb(17, name);
    await withClient(url, (c) => c.query(SCHEMA));
    const env = { ...pipelineEnv(name, url, 'test-failover'), CDP_FAILOVER_SLOT: 'true' };
    const cfg = clientConfigFile(17, name);
    const setup = await runCli(['-c', cfg, 'setup'], env);
    expect(setup.code, setup.stderr).toBe(0);
    let run = startRun(env, cfg);
    await workload(url, 2);
    const end1 = await currentLsn(url);
    await waitFor(`restorable point past ${end1}`, async () => ((await restorableLsn(env)) ?? -1) >= parseLsn(end1));
    // The standby can keep a copy of the slot only once the slot's catalog xmin on the primary has
    // moved past what the standby itself still protects (else the worker logs "could not
    // synchronize replication slot ... could lead to data loss" and retries). The xmin moves as
    // capture confirms past running-transactions records, which the primary writes every 15 s or
    // on pg_log_standby_snapshot(): write them while capture runs, until the copy is there.
    await waitFor(
      'a persistent synced copy of the slot on the standby',
      async () => {
        await withClient(clusterUrl(17), (c) => c.query('SELECT pg_log_standby_snapshot()'));
        return withClient(standbyUrl(), async (c) => {
          const s = await c.query<{ synced: boolean; temporary: boolean; failover: boolean }>(`SELECT synced, temporary, failover FROM pg_replication_slots WHERE slot_name = $1`, [name]);
          return s.rowCount === 1 && s.rows[0]!.synced && !s.rows[0]!.temporary && s.rows[0]!.failover;
        });
      },
      240_000,
      1_000,
    );
    await stop(run);
    // Everything the primary wrote is on the standby before it is promoted (a planned switchover).
    const primaryEnd = await currentLsn(clusterUrl(17));
    await waitFor('the standby to replay everything', async () =>
      withClient(standbyUrl(), async (c) => (await c.query<{ ok: boolean }>(`SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok`, [primaryEnd])).rows[0]!.ok),
    );

    // ---- Failover: promote, point capture at the new primary.
    asPostgres('pg_ctl', ['-D', sbData, '-w', 'promote']);
    const newUrl = standbyUrl(name);
    const env2 = { ...env, CDP_SOURCE_URL: newUrl };
    const again = await runCli(['-c', cfg, 'setup', '--no-basebackup'], env2);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toContain('the stream was broken');
    run = startRun(env2, cfg);
    await workload(newUrl, 2, 2);
    const end2 = await currentLsn(newUrl);
    await waitFor(`restorable point past ${end2} (after the failover)`, async () => ((await restorableLsn(env2)) ?? -1) >= parseLsn(end2));
    await stop(run);
    const check = await runCli(['status', '--check'], env2);
    expect(check.code, check.stdout + check.stderr).toBe(0);

    // ---- Restore the latest point into a fresh database; compare with the promoted server.
    const into = await createDb(17, restored);
    const r = await runCli(['-c', cfg, 'restore', '--into', into, '--latest'], env2);
    expect(r.code, r.stderr.slice(-3000)).toBe(0);
    const expected = await withClient(newUrl, contentFingerprint);
    expect(Object.keys(expected)).toContain('public.late');
    expect(await compareContents(expected, into, await withClient(newUrl, allRows))).toBeNull();
    const pgDump = newestPgDump();
    const [a, b] = await Promise.all([schemaDump(newUrl, { pgDump }), schemaDump(into, { pgDump })]);
    expect(diffSchemaDumps(normaliseDump(a), normaliseDump(b))).toBeNull();
  });
});
