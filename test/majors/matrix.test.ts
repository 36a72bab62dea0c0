import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/util/lsn.js';
import { compareContents, contentFingerprint, allRows, diffSchemaDumps, schemaDump } from '../integration/restore/schema-compare.js';
import { pipelineEnv, rand, REPO, restorableLsn, runCli, stackEnvironment, waitFor } from '../integration/restore/helpers.js';
import { withClient } from '../support/stack.js';
import { clientConfigFile, createDb, deleteTopics, dropDb, newestPgDump, NEWER, normaliseDump, SCHEMA, workload, type Major } from './support.js';

// The version matrix (README "PostgreSQL versions", issue 10), each cell a whole pipeline on real
// servers: setup (publication, slot, DDL capture, base by pg_dump), `cdp run` (capture + archive to
// Kafka and S3) under a mixed workload with DDL, then `cdp restore --latest` into a fresh database,
// compared with the source as whole table contents (every row of every table) and as a schema dump.
//
//   source 15 (the main cluster) -> targets 15, 16, 17, 18   (one archive, four restores)
//   source 16 -> 16, 17, 18; source 17 -> 17, 18; source 18 -> 18 (each its own archive)
//
// Both sides of a schema comparison are dumped by the same pg_dump (the newest here, 18), so what
// differs is what the servers hold, not how two pg_dump releases print it; what a server still
// reports differently is normalised in `normaliseDump` (support.ts), each case with its reason. With one
// dumper for both sides, PostgreSQL 16, 17 and 18 print this schema exactly as 15 does.
//
// Source 16 restores into 16 too: its base needs pg_dump 17 (no registry here ships a 16 client),
// only pg_restore 17+ reads that, and pg_restore 17 and 18 stop on a 16 server (`SET
// transaction_timeout`), so restore loads it as a script through psql without that line
// (client-version.ts scriptMode).

stackEnvironment();

interface Cell {
  source: Major;
  name: string;
  url: string;
  env: Record<string, string>;
  cfg: string;
  run?: ChildProcess;
  runLog: string;
  targets: string[];
}

const cells: Cell[] = [];

afterAll(async () => {
  for (const c of cells) {
    if (c.run && c.run.exitCode === null) c.run.kill('SIGKILL');
    await dropDb(c.source, c.name);
    for (const t of c.targets) {
      const [major, db] = t.split(':') as [string, string];
      await dropDb(Number(major) as Major, db);
    }
  }
  await deleteTopics(cells.map((c) => c.env.CDP_TOPIC!));
});

async function stopRun(cell: Cell): Promise<void> {
  const p = cell.run;
  if (!p || p.exitCode !== null) return;
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
  await done;
  clearTimeout(t);
}

/** Source database of `major` with the schema, set up, `cdp run` going, the workload done and archived. */
async function capturedSource(major: Major, rounds: number): Promise<Cell> {
  const name = `mx${major}_${rand()}`;
  const url = await createDb(major, name);
  const cell: Cell = { source: major, name, url, env: pipelineEnv(name, url, 'test-majors'), cfg: clientConfigFile(major, name), runLog: '', targets: [] };
  cells.push(cell);
  await withClient(url, (c) => c.query(SCHEMA));
  const setup = await runCli(['-c', cell.cfg, 'setup'], cell.env);
  expect(setup.code, setup.stderr).toBe(0);
  cell.run = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, '-c', cell.cfg, 'run'], {
    env: { ...process.env, CDP_LOG_FORMAT: 'json', CDP_METRICS_PORT: '0', ...cell.env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  cell.run.stderr!.on('data', (d: Buffer) => (cell.runLog = (cell.runLog + d.toString()).slice(-20_000)));
  await workload(url, rounds);
  const end = await withClient(url, async (c) => (await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l);
  await waitFor(`restorable point past ${end} (source ${major})`, async () => {
    if (cell.run!.exitCode !== null) throw new Error(`cdp run exited ${cell.run!.exitCode}: ${cell.runLog.slice(-3000)}`);
    return ((await restorableLsn(cell.env)) ?? -1) >= parseLsn(end);
  });
  return cell;
}

/** Restores `cell`'s archive (latest point) into a fresh database on `target`; returns the differences, or null. */
async function restoreAndCompare(cell: Cell, target: Major): Promise<string | null> {
  const db = `${cell.name}_to${target}`;
  cell.targets.push(`${target}:${db}`);
  const into = await createDb(target, db);
  const r = await runCli(['-c', cell.cfg, 'restore', '--into', into, '--latest'], cell.env);
  expect(r.code, `restore ${cell.source} -> ${target}: ${r.stderr.slice(-4000)}`).toBe(0);
  // The source is quiet (only the engine's heartbeats, in its own schema), so its present state is
  // the state at the restored point.
  const expected = await withClient(cell.url, contentFingerprint);
  const rows = await withClient(cell.url, allRows);
  // The check itself must see something: every table of the schema, with rows.
  expect(Object.keys(expected)).toEqual(
    expect.arrayContaining(['public.accounts', 'public.orders', 'public.types', 'public.late', 'public.nopk', 'public.parted_eu', 'public.audit']),
  );
  const contents = await compareContents(expected, into, rows);
  const pgDump = newestPgDump();
  const [a, b] = await Promise.all([schemaDump(cell.url, { pgDump }), schemaDump(into, { pgDump })]);
  expect(a).toContain('CREATE TABLE public.late');
  const schema = diffSchemaDumps(normaliseDump(a), normaliseDump(b));
  return [contents, schema].filter(Boolean).join('\n') || null;
}

describe('version matrix', () => {
  it('source 15 -> targets 15, 16, 17, 18: whole contents and schema equal', async () => {
    const cell = await capturedSource(15, 4);
    await stopRun(cell);
    const out: Record<number, string | null> = {};
    for (const target of [15, ...NEWER] as Major[]) out[target] = await restoreAndCompare(cell, target);
    expect(out).toEqual({ 15: null, 16: null, 17: null, 18: null });
  });

  // Each newer source into its own major and into every newer one.
  const targetsOf: Record<number, Major[]> = { 16: [16, 17, 18], 17: [17, 18], 18: [18] };
  for (const major of NEWER) {
    const targets = targetsOf[major]!;
    it(`source ${major} -> targets ${targets.join(', ')}: capture, base by pg_dump ${Math.max(major, 17)}, restore exact`, async () => {
      const cell = await capturedSource(major, 3);
      // The machine's pg_dump 15 cannot take this source's base: refused before any slot is made.
      const old = await runCli(['basebackup'], cell.env);
      expect(old.code, old.stderr).toBe(2);
      expect(old.stderr).toContain(`needs pg_dump ${major} or newer`);
      await stopRun(cell);
      const out: Record<number, string | null> = {};
      for (const target of targets) out[target] = await restoreAndCompare(cell, target);
      expect(out).toEqual(Object.fromEntries(targets.map((t) => [t, null])));
    });
  }
});
