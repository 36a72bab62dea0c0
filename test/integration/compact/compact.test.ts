import { spawn, type ChildProcess } from 'node:child_process';
import { DeleteObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../../src/util/lsn.js';
import { createDatabase, dropDatabase, pipelineEnv, rand, REPO, restorableLsn, runCli, stackEnvironment, waitFor, withClient } from '../restore/helpers.js';
import { compareContents, contentFingerprint, diffSchemaDumps, schemaDump } from '../restore/schema-compare.js';

// cdp compact (issue 11 item 1) on the real pipeline: PostgreSQL 15 source, Kafka, S3Proxy, and the
// scratch server cdp starts from the npm registry's embedded PostgreSQL 15.
//
//   B0 (setup) -- A -- S1 (compact) -- B -- S2 (compact) -- C -- B1 (basebackup) -- D
//
// Restores to a point in each stretch are compared with the source at that point (every row of
// every table, the schema dump); each must start from the newest base at or before it, and the
// latest point before B1 replays only what follows S2. Then compactions killed with -9 at each
// step leave nothing restore would choose, verify lists their debris, and the next compaction
// removes it. Last, a segment deleted before S1: verify reports the hole and a restore from B0
// across it stops (exit 3), while S1 and later restore.

const dbs: string[] = [];
let url = '';
let env: Record<string, string> = {};

interface Point {
  lsn: string;
  time: string;
  fp: Record<string, string>;
  schema: string;
  seqs: Record<string, number>;
}

/** ISO 8601 UTC with up to 6 fractional digits -> microseconds (Date.parse keeps milliseconds only). */
function isoMicros(iso: string): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z$/.exec(iso);
  if (!m) throw new Error(`not an ISO UTC time: ${iso}`);
  return Date.parse(`${m[1]}Z`) * 1000 + Number((m[2] ?? '').padEnd(6, '0'));
}

async function write(phase: string, n: number): Promise<void> {
  await withClient(url, async (c) => {
    for (let i = 0; i < n; i++) {
      await c.query(`INSERT INTO acct (owner, balance, note) VALUES ($1, $2, $3)`, [`${phase}-${i}`, i * 3, `n${i}`]);
    }
    await c.query(`UPDATE acct SET balance = balance + 1 WHERE id % 5 = 0`);
    await c.query(`DELETE FROM acct WHERE id % 11 = 0`);
    await c.query(`INSERT INTO ev (payload) SELECT jsonb_build_object('phase', $1::text, 'i', g) FROM generate_series(1, $2::int) g`, [phase, n]);
    await c.query(`SELECT nextval('ticket')`);
  });
}

async function sequences(u: string): Promise<Record<string, number>> {
  return withClient(u, async (c) => {
    const r = await c.query<{ n: string; v: string }>(
      `SELECT schemaname || '.' || sequencename AS n, coalesce(last_value, 0)::text AS v FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1`,
    );
    return Object.fromEntries(r.rows.map((x) => [x.n, Number(x.v)]));
  });
}

/** The source's state now (nothing writes to its tables in between), once the archive holds it. */
async function mark(): Promise<Point> {
  const { lsn, time } = await withClient(url, async (c) => {
    const r = await c.query<{ l: string; t: string }>(
      `SELECT pg_current_wal_lsn()::text AS l, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
    );
    return { lsn: r.rows[0]!.l, time: r.rows[0]!.t };
  });
  await waitFor(`restorable point past ${lsn}`, async () => {
    const p = await restorableLsn(env);
    return p !== undefined && p >= parseLsn(lsn) ? p : undefined;
  });
  return { lsn, time, fp: await withClient(url, contentFingerprint), schema: await schemaDump(url), seqs: await sequences(url) };
}

async function compactNow(extra: Record<string, string> = {}): Promise<Record<string, unknown>> {
  const r = await runCli(['compact'], { ...env, ...extra });
  expect(r.code, r.stderr.slice(-3000)).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

interface RestoreReport {
  base: { lsn: string; synthetic: boolean };
  transactions: number;
  segmentsRead: number;
}

async function restoreTo(args: string[], expected: Point): Promise<RestoreReport> {
  const target = `${env.CDP_SLOT}_r${dbs.length}`;
  dbs.push(target);
  const into = await createDatabase(target);
  const r = await runCli(['restore', '--into', into, ...args], env);
  expect(r.code, r.stderr.slice(-3000)).toBe(0);
  expect(await compareContents(expected.fp, into)).toBeNull();
  expect(diffSchemaDumps(expected.schema, await schemaDump(into))).toBeNull();
  // Sequences of serial and identity columns end at least where the source's were (a standalone
  // sequence only as of its last snapshot in the stream: README Limits, "Sequences").
  const got = await sequences(into);
  for (const [k, v] of Object.entries(expected.seqs)) if (k.endsWith('_seq')) expect(got[k], k).toBeGreaterThanOrEqual(v);
  expect(Object.keys(got).sort()).toEqual(Object.keys(expected.seqs).sort());
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as RestoreReport;
}

async function dryRunBase(args: string[]): Promise<string> {
  const r = await runCli(['restore', '--into', 'postgres://unused@127.0.0.1:1/none', '--dry-run', ...args], env);
  expect(r.code, r.stderr.slice(-2000)).toBe(0);
  return (JSON.parse(r.stdout.trim().split('\n').at(-1)!) as RestoreReport).base.lsn;
}

function s3(): S3Client {
  return new S3Client({ endpoint: process.env.CDP_S3_ENDPOINT, region: 'us-east-1', forcePathStyle: true });
}

let run: ChildProcess | undefined;
const points: Record<string, Point> = {};
const bases: Record<string, string> = {};

beforeAll(async () => {
  stackEnvironment();
  const name = `compact_${rand()}`;
  url = await createDatabase(name);
  dbs.push(name);
  env = { ...pipelineEnv(name, url, 'test-compact'), CDP_COMPACT_DEBRIS_GRACE_MINUTES: '0' };
  await withClient(url, (c) =>
    c.query(`
      CREATE SEQUENCE ticket;
      CREATE TABLE acct (id serial PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL, note text);
      CREATE TABLE ev (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL, at timestamptz DEFAULT '2026-01-01');
      INSERT INTO acct (owner, balance) SELECT 'seed' || g, g FROM generate_series(1, 300) g;
    `),
  );
  const setup = await runCli(['setup'], env);
  expect(setup.code, setup.stderr).toBe(0);
  run = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'run'], {
    env: { ...process.env, ...stackEnvironment(), CDP_LOG_FORMAT: 'json', CDP_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
});

afterAll(async () => {
  if (run && run.exitCode === null) {
    const exited = new Promise<void>((r) => run!.once('exit', () => r()));
    run.kill('SIGTERM');
    await exited;
  }
  for (const d of dbs) await dropDatabase(d);
});

describe('cdp compact: synthetic bases', () => {
  it('two compactions between the source bases: restores before, between and after them are exact, each from the newest base at or before it; the latest point replays only what follows the newest synthetic base', async () => {
    // Pauses longer than the segment age (500 ms) between the writes: several segments per
    // partition before S1, so that the last test can delete one in the middle of a partition.
    const pause = () => new Promise((r) => setTimeout(r, 1500));
    await write('a', 40);
    await pause();
    await withClient(url, (c) => c.query(`ALTER TABLE acct ADD COLUMN tier text DEFAULT 'basic'`));
    await pause();
    await write('a2', 20);
    await pause();
    await write('a3', 20);
    points.A = await mark();
    const b0 = await dryRunBase(['--latest']);
    bases.B0 = b0;

    const s1 = await compactNow();
    expect(s1.ok).toBe(true);
    expect(s1.fromBase).toBe(b0);
    bases.S1 = (s1.base as { lsn: string }).lsn;

    await write('b', 30);
    await withClient(url, (c) =>
      c.query(`CREATE TABLE notes (id serial PRIMARY KEY, acct int REFERENCES acct (id) ON DELETE CASCADE, body text);
               INSERT INTO notes (acct, body) SELECT id, 'note ' || id FROM acct WHERE id % 3 = 0;
               CREATE INDEX acct_owner ON acct (owner);`),
    );
    await write('b2', 20);
    points.B = await mark();

    const s2 = await compactNow();
    expect(s2.fromBase).toBe(bases.S1);
    bases.S2 = (s2.base as { lsn: string }).lsn;

    await write('c', 15);
    await withClient(url, (c) => c.query(`ALTER TABLE notes ADD COLUMN seen boolean NOT NULL DEFAULT false; UPDATE notes SET seen = true WHERE id % 2 = 0`));
    points.C = await mark();
    const c = points.C;

    // The latest point: from S2, replaying only what follows it.
    const latest = await restoreTo(['--latest'], c);
    expect(latest.base).toMatchObject({ lsn: bases.S2, synthetic: true });
    // Replay starts at S2's LSN (the report's base): phase C only (15 inserts, the UPDATE, the
    // jsonb INSERT and the ALTER + UPDATE: 18 at least; the DELETE may touch no row, and PostgreSQL
    // 15+ sends no empty transaction), fewer than S2 itself replayed (phase B: 50 inserts, DDL), and
    // far fewer than a replay from B0, which would be S1's + S2's + these.
    expect(latest.transactions).toBeGreaterThanOrEqual(18);
    expect(latest.transactions).toBeLessThan(Number(s2.transactions));
    expect(Number(s1.transactions)).toBeGreaterThanOrEqual(66);

    const b1 = await runCli(['basebackup'], env);
    expect(b1.code, b1.stderr).toBe(0);
    bases.B1 = await waitFor('B1 listed', async () => {
      const lsn = await dryRunBase(['--latest']);
      return lsn !== bases.S2 ? lsn : undefined;
    });
    await write('d', 10);
    points.D = await mark();

    // Before S1 (from B0), between S1 and S2 (from S1), after S2 (from S2), after B1 (from B1).
    expect((await restoreTo(['--lsn', points.A.lsn], points.A)).base).toMatchObject({ lsn: b0, synthetic: false });
    expect((await restoreTo(['--lsn', points.B.lsn], points.B)).base).toMatchObject({ lsn: bases.S1, synthetic: true });
    // By time: the newest base whose every commit is at or before B's time. S2 qualifies when
    // nothing but heartbeats (which replay nothing) committed between B and S2's point.
    const byTime = isoMicros(points.B.time) >= isoMicros((s2.base as { time: string }).time) ? bases.S2 : bases.S1;
    expect((await restoreTo(['--time', points.B.time], points.B)).base).toMatchObject({ lsn: byTime, synthetic: true });
    expect((await restoreTo(['--lsn', points.C.lsn], points.C)).base).toMatchObject({ lsn: bases.S2, synthetic: true });
    expect((await restoreTo(['--lsn', points.D.lsn], points.D)).base).toMatchObject({ lsn: bases.B1, synthetic: false });

    // The synthetic manifest says what it was made from.
    const v = await runCli(['verify'], env);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ ok: true, syntheticBases: 2, incompleteBases: [] });
  });

  it('a compaction killed with -9 at any step leaves no base restore would choose; verify lists the debris; the next compaction removes it and its scratch server', async () => {
    await write('e', 10);
    points.E = await mark();
    const before = await dryRunBase(['--latest']);
    const steps = ['restored', 'dumped', 'checked', 'uploaded', 'read-back'];
    for (const step of steps) {
      const p = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'compact'], {
        // Debris is kept (a long grace) while the kills go on, so that it piles up; scratch
        // clusters of dead runs are removed by each next run whatever the grace.
        env: {
          ...process.env,
          ...stackEnvironment(),
          CDP_LOG_FORMAT: 'json',
          CDP_METRICS_PORT: '0',
          ...env,
          CDP_TEST_FAULTS: `compact-pause:${step}`,
          CDP_COMPACT_DEBRIS_GRACE_MINUTES: '600',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let err = '';
      p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      await waitFor(
        `compact to pause at ${step}`,
        async () => (/paused for a test/.test(err) ? true : p.exitCode !== null ? Promise.reject(new Error(err.slice(-2000))) : undefined),
        300_000,
      );
      p.kill('SIGKILL');
      await exited;
      expect(await dryRunBase(['--latest']), `after a kill at ${step}`).toBe(before);
    }
    const v = await runCli(['verify'], env);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    const vr = JSON.parse(v.stdout) as { incompleteBases: Array<{ folder: string; note: string }> };
    // 'uploaded' and 'read-back' had stored the dump (no manifest).
    expect(vr.incompleteBases.length).toBe(2);
    expect(vr.incompleteBases[0]!.note).toMatch(/never used by restore/);

    // The point is restorable exactly all the same (from the newest complete base).
    await restoreTo(['--lsn', points.E.lsn], points.E);

    const next = await compactNow();
    expect(next.cleaned).toMatchObject({ scratchClusters: 1, debrisFolders: 2, debrisKept: 0 });
    const v2 = JSON.parse((await runCli(['verify'], env)).stdout) as { ok: boolean; incompleteBases: unknown[] };
    expect(v2).toMatchObject({ ok: true, incompleteBases: [] });
    bases.S3 = (next.base as { lsn: string }).lsn;
    expect(await dryRunBase(['--latest'])).toBe(bases.S3);
  });

  it('prune anchors on a source base: synthetic bases before it go, segments a source base needs stay, newer synthetic bases stay', async () => {
    // A retention window of a few seconds: every base above is older than the cutoff.
    const r = await runCli(['prune', '--dry-run'], { ...env, CDP_RETENTION_DAYS: '0.0001' });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { anchorBase: string; keys: string[] };
    expect(report.anchorBase).toBe(bases.B1);
    const anchor = parseLsn(bases.B1!);
    const baseKeys = report.keys.filter((k) => k.includes('/bases/'));
    const dirOf = (lsn: string) => parseLsn(lsn).toString(16).toUpperCase().padStart(16, '0');
    // B0, S1 and S2 (manifest and dump each); neither B1 nor S3.
    expect(baseKeys.filter((k) => k.endsWith('manifest.json')).length).toBe(3);
    for (const b of [bases.B0!, bases.S1!, bases.S2!])
      expect(
        baseKeys.some((k) => k.includes(`/bases/${dirOf(b)}`)),
        b,
      ).toBe(true);
    for (const b of [bases.B1!, bases.S3!])
      expect(
        baseKeys.some((k) => k.includes(`/bases/${dirOf(b)}`)),
        b,
      ).toBe(false);
    for (const k of report.keys.filter((x) => x.includes('/segments/'))) expect(parseInt(k.split('/').at(-1)!.slice(0, 16), 16)).toBeLessThan(anchor);
  });

  it('a synthetic base never hides a missing segment: verify reports the hole, a restore from B0 across it stops with exit 3, points from S1 on still restore', async () => {
    const client = s3();
    const prefix = `${env.CDP_S3_PREFIX}/${env.CDP_SLOT}/segments/`;
    const listed = await client.send(new ListObjectsV2Command({ Bucket: process.env.CDP_S3_BUCKET, Prefix: prefix }));
    const keys = (listed.Contents ?? []).map((o) => o.Key!);
    const s1 = parseLsn(bases.S1!);
    const b0 = parseLsn(bases.B0!);
    // A segment in the middle of a partition, between B0 and S1.
    let victim: string | undefined;
    for (const part of new Set(keys.map((k) => k.split('/').at(-2)))) {
      const ks = keys.filter((k) => k.split('/').at(-2) === part).sort();
      const inside = ks.filter((k) => {
        const max = parseInt(k.split('/').at(-1)!.slice(0, 16), 16);
        return max >= b0 && max < s1;
      });
      const mid = inside.find((k) => k !== ks[0] && k !== ks.at(-1));
      if (mid) {
        victim = mid;
        break;
      }
    }
    expect(victim, 'a segment between B0 and S1 in the middle of a partition').toBeDefined();
    await client.send(new DeleteObjectCommand({ Bucket: process.env.CDP_S3_BUCKET, Key: victim }));

    const v = await runCli(['verify'], env);
    expect(v.code).toBe(3);
    expect(v.stdout).toMatch(/are in no segment/);
    const crossing = await runCli(['restore', '--into', 'postgres://unused@127.0.0.1:1/none', '--dry-run', '--lsn', points.A.lsn], env);
    expect(crossing.code, crossing.stdout + crossing.stderr).toBe(3);
    expect(await dryRunBase(['--lsn', points.B.lsn])).toBe(bases.S1);
    await restoreTo(['--lsn', points.C.lsn], points.C);
  });
});
