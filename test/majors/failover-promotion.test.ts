import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/util/lsn.js';
import { allRows, compareContents, contentFingerprint, diffSchemaDumps, schemaDump } from '../integration/restore/schema-compare.js';
import { pipelineEnv, rand, REPO, restorableLsn, runCli, stackEnvironment, waitFor } from '../integration/restore/helpers.js';
import { withClient } from '../support/stack.js';
import { clientConfigFile, clusterUrl, createDb, deleteTopics, dropDb, newestPgDump, normaliseDump, SCHEMA, tool, workload, type Major } from './support.js';

// A failover, for real (README "Failover and major upgrades"): a physical standby of the stack's
// cluster, built with pg_basebackup and started from the same server programs, is promoted while
// capture runs against the primary; capture is then pointed at the promoted server.
//
// 17, with source.failoverSlot: the standby runs with sync_replication_slots and the primary lists
// its slot in synchronized_standby_slots. The promoted server has the slot; capture continues from
// it; no break is recorded (status --check passes) and the latest point restores exactly.
//
// 16, where no standby can carry a logical slot: the promoted server has no slot, capture cannot
// go on; `cdp setup` makes a new slot and records the break (status --check exits 3 until a base
// covers it); after `cdp basebackup` the latest point restores exactly.
//
// The old primary stays up (it is the stack's cluster); nothing writes to it after the promotion.

stackEnvironment();
const runs: ChildProcess[] = [];
const cleanups: Array<() => Promise<void>> = [];

afterAll(async () => {
  for (const p of runs) if (p.exitCode === null) p.kill('SIGKILL');
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

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

/** A running physical standby of the stack's cluster of `major` on port 5410 + major. */
async function standby(major: Major, id: string): Promise<{ url: (db?: string) => string; promote: () => void }> {
  const serverBin = process.env[`CDP_STACK_PG${major}_SERVER_BIN`] ?? '';
  expect(serverBin, `CDP_STACK_PG${major}_SERVER_BIN (stack.sh env --pg ${major})`).not.toBe('');
  const port = 5410 + major;
  const physSlot = `sb_${id}`;
  const data = join(dirname(dirname(serverBin)), `standby-${major}-${id}`);
  /** A server program of this major as the postgres OS user (pg_ctl refuses root). */
  const asPostgres = (prog: string, args: string[]) => {
    const env = `LD_LIBRARY_PATH=${join(dirname(serverBin), 'lib')}`;
    const r =
      process.getuid?.() === 0
        ? spawnSync('runuser', ['-u', 'postgres', '--', 'env', env, join(serverBin, prog), ...args], { cwd: '/', encoding: 'utf8' })
        : spawnSync('env', [env, join(serverBin, prog), ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${prog} ${args.join(' ')} failed: ${r.stderr}${r.stdout}`);
  };
  let started = false;
  cleanups.push(async () => {
    if (started) {
      try {
        asPostgres('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } catch {
        /* already stopped */
      }
    }
    rmSync(data, { recursive: true, force: true });
    rmSync(`${data}.log`, { force: true });
    await withClient(clusterUrl(major), async (c) => {
      if (major >= 17) {
        await c.query(`ALTER SYSTEM RESET synchronized_standby_slots`);
        await c.query(`SELECT pg_reload_conf()`);
      }
      await c.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [physSlot]);
    });
  });
  await withClient(clusterUrl(major), (c) => c.query(`SELECT pg_create_physical_replication_slot($1)`, [physSlot]));
  rmSync(data, { recursive: true, force: true });
  // pg_basebackup 17 or 18 (the stack's client programs) copies an older server too.
  const bb = spawnSync(
    tool(major, 'pg_dump').replace(/pg_dump$/, 'pg_basebackup'),
    ['-D', data, '-d', clusterUrl(major), '-S', physSlot, '-X', 'stream', '-R', '-c', 'fast'],
    { encoding: 'utf8' },
  );
  expect(bb.status, bb.stderr).toBe(0);
  // primary_conninfo replaced: the one pg_basebackup 17 writes names libpq options (sslnegotiation)
  // that a 16 server's walreceiver does not know; the slot sync worker (17+) needs its dbname.
  const conf = [
    `port = ${port}`,
    `unix_socket_directories = '${data}'`,
    `primary_conninfo = 'host=127.0.0.1 port=${5400 + major} user=postgres dbname=postgres'`,
    `primary_slot_name = '${physSlot}'`,
    `hot_standby_feedback = on`,
  ];
  // 17+: keep copies of failover slots.
  if (major >= 17) conf.push(`sync_replication_slots = on`);
  appendFileSync(join(data, 'postgresql.auto.conf'), `${conf.join('\n')}\n`);
  if (process.getuid?.() === 0) spawnSync('chown', ['-R', 'postgres:postgres', data]);
  chmodSync(data, 0o700);
  asPostgres('pg_ctl', ['-D', data, '-l', `${data}.log`, '-w', '-t', '120', 'start']);
  started = true;
  if (major >= 17) {
    await withClient(clusterUrl(major), async (c) => {
      await c.query(`ALTER SYSTEM SET synchronized_standby_slots = '${physSlot}'`);
      await c.query(`SELECT pg_reload_conf()`);
    });
  }
  return { url: (db = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${db}`, promote: () => asPostgres('pg_ctl', ['-D', data, '-w', 'promote']) };
}

/** Restores the latest point into a fresh database on `major` and compares it with `sourceUrl`. */
async function restoreExact(major: Major, name: string, env: Record<string, string>, cfg: string, sourceUrl: string): Promise<void> {
  const restored = `${name}_r`;
  cleanups.push(() => dropDb(major, restored));
  const into = await createDb(major, restored);
  const r = await runCli(['-c', cfg, 'restore', '--into', into, '--latest'], env);
  expect(r.code, r.stderr.slice(-3000)).toBe(0);
  const expected = await withClient(sourceUrl, contentFingerprint);
  expect(Object.keys(expected)).toContain('public.late');
  expect(await compareContents(expected, into, await withClient(sourceUrl, allRows))).toBeNull();
  const pgDump = newestPgDump();
  const [a, b] = await Promise.all([schemaDump(sourceUrl, { pgDump }), schemaDump(into, { pgDump })]);
  expect(diffSchemaDumps(normaliseDump(a), normaliseDump(b))).toBeNull();
}

describe('failover of the source', () => {
  for (const major of [17, 16] as Major[]) {
    const failover = major >= 17;
    it(
      failover
        ? '17 with a failover slot: the promoted standby has the slot, capture continues from it, no break, the restore is exact'
        : '16: the promoted standby has no slot; setup records the break, a new base covers it, the restore is exact',
      async () => {
        const id = rand();
        const name = `fop${major}_${id}`;
        const sb = await standby(major, id);
        cleanups.push(async () => {
          await dropDb(major, name);
          await deleteTopics([name]);
        });

        // ---- Capture on the primary.
        const url = await createDb(major, name);
        await withClient(url, (c) => c.query(SCHEMA));
        const env = { ...pipelineEnv(name, url, 'test-failover'), ...(failover ? { CDP_FAILOVER_SLOT: 'true' } : {}) };
        const cfg = clientConfigFile(major, name);
        const setup = await runCli(['-c', cfg, 'setup'], env);
        expect(setup.code, setup.stderr).toBe(0);
        let run = startRun(env, cfg);
        await workload(url, 2);
        const end1 = await currentLsn(url);
        await waitFor(`restorable point past ${end1}`, async () => ((await restorableLsn(env)) ?? -1) >= parseLsn(end1));
        if (failover) {
          // The standby keeps a copy of a new slot only once the slot's catalog xmin on the primary
          // has passed what the standby itself protects (until then its log says "could not
          // synchronize replication slot"). The xmin moves as capture confirms past
          // running-transactions records, written every 15 s or by pg_log_standby_snapshot().
          await waitFor(
            'a persistent synced copy of the slot on the standby',
            async () => {
              await withClient(clusterUrl(major), (c) => c.query('SELECT pg_log_standby_snapshot()'));
              return withClient(sb.url(), async (c) => {
                const s = await c.query<{ synced: boolean; temporary: boolean; failover: boolean }>(
                  `SELECT synced, temporary, failover FROM pg_replication_slots WHERE slot_name = $1`,
                  [name],
                );
                return s.rowCount === 1 && s.rows[0]!.synced && !s.rows[0]!.temporary && s.rows[0]!.failover;
              });
            },
            240_000,
            1_000,
          );
        }
        await stop(run);
        // Everything the primary wrote is on the standby before it is promoted (a switchover).
        const primaryEnd = await currentLsn(clusterUrl(major));
        await waitFor('the standby to replay everything', async () =>
          withClient(sb.url(), async (c) => (await c.query<{ ok: boolean }>(`SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok`, [primaryEnd])).rows[0]!.ok),
        );

        // ---- Failover: promote, point the engine at the new primary.
        sb.promote();
        const newUrl = sb.url(name);
        const env2 = { ...env, CDP_SOURCE_URL: newUrl };
        const slots = await withClient(newUrl, async (c) => (await c.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [name])).rowCount);
        expect(slots).toBe(failover ? 1 : 0);
        const again = await runCli(['-c', cfg, 'setup', '--no-basebackup'], env2);
        expect(again.code, again.stderr).toBe(0);
        if (failover) {
          expect(again.stderr).not.toContain('the stream was broken');
        } else {
          expect(again.stderr).toContain('the stream was broken');
          // The break is not covered by a base yet.
          const broken = await runCli(['status', '--check'], env2);
          expect(broken.code, broken.stdout + broken.stderr).toBe(3);
          const base = await runCli(['-c', cfg, 'basebackup'], env2);
          expect(base.code, base.stderr).toBe(0);
        }
        run = startRun(env2, cfg);
        await workload(newUrl, 2, 2);
        const end2 = await currentLsn(newUrl);
        await waitFor(`restorable point past ${end2} (after the failover)`, async () => ((await restorableLsn(env2)) ?? -1) >= parseLsn(end2));
        await stop(run);
        const check = await runCli(['status', '--check'], env2);
        expect(check.code, check.stdout + check.stderr).toBe(0);

        // ---- The latest point, restored into a fresh database, equals the promoted server's.
        await restoreExact(failover ? major : 17, name, env2, cfg, newUrl);
      },
    );
  }
});
