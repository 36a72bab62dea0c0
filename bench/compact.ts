// Restore time of the latest point against the history since the source's base, with and without
// compaction (issue 11 item 1). Not a test: it prints figures. Also run by bench/harness.ts
// (compactBench; its "compaction" measurement and compaction.svg).
//
// One source database under a steady load (small transactions at a fixed rate), two pipelines on
// it (two slots, topics and S3 prefixes) so both see the same changes: A compacts (cdp compact)
// every step, B never does. After each step both restore their latest point into fresh databases;
// the restore report gives the seconds and the transactions replayed. Without compaction the
// replay grows with the history; with it, it stays at about one step's worth.
//
//   npx tsx bench/compact.ts [--steps 4] [--step-seconds 45] [--rate 400]
//
// --rate is transactions per second (3 changes each). A few minutes on the local stack
// (deploy/local/stack.sh up); the scratch server for compaction is the embedded PostgreSQL 15.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { applyStackEnv, adminUrl, createDatabase, dropDatabase, REPO } from '../test/support/stack.js';

export interface CompactOptions {
  /** Steps of history: after each, A compacts and both pipelines restore their latest point. */
  steps: number;
  stepSeconds: number;
  /** Offered transactions per second (3 changes each). */
  rate: number;
  log?: (m: string) => void;
}

/** One step: restore of the latest point after `minutes` of history, without and with compaction. */
export interface CompactPoint {
  step: number;
  /** Minutes since the load started (the pipelines' first base was taken just before), after both restores. */
  minutes: number;
  /** Transactions committed on the source so far. */
  sourceTransactions: number;
  without: RestoreFigures;
  with: RestoreFigures & { synthetic: boolean };
  /** Wall time of this step's `cdp compact` (pipeline A), and the transactions it replayed. */
  compactSeconds: number;
  compactTransactions: number | null;
}
interface RestoreFigures {
  seconds: number;
  replaySeconds: number;
  transactions: number;
}

type Env = Record<string, string>;

function pipelineEnv(name: string, url: string): Env {
  return {
    CDP_SOURCE_URL: url,
    CDP_SLOT: name,
    CDP_PUBLICATION: name,
    CDP_TOPIC: name,
    CDP_KAFKA_PARTITIONS: '2',
    CDP_S3_PREFIX: `bench-compact/${name}`,
    // Both pipelines read one database: the default archive group (cdp-archive.<database>) would be shared.
    CDP_ARCHIVE_GROUP_ID: `cdp-archive.${name}`,
    CDP_HEARTBEAT_INTERVAL_MS: '500',
    CDP_SEGMENT_MAX_AGE_MS: '1000',
    CDP_BASEBACKUP_INTERVAL_HOURS: '0',
    CDP_LOG_LEVEL: 'warn',
    CDP_METRICS_PORT: '0',
  };
}

function cli(args: string[], env: Env): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, ...args], {
      env: { ...process.env, CDP_LOG_FORMAT: 'json', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

async function must(args: string[], env: Env): Promise<Record<string, unknown>> {
  const r = await cli(args, env);
  if (r.code !== 0) throw new Error(`cdp ${args.join(' ')} exit ${r.code}: ${r.err.slice(-2000)}`);
  const out = r.out.trim();
  if (!out) return {};
  try {
    return JSON.parse(out) as Record<string, unknown>;
  } catch {
    return JSON.parse(out.split('\n').at(-1)!) as Record<string, unknown>;
  }
}

const lsnNumber = (t: string) => {
  const [h, l] = t.split('/');
  return parseInt(h!, 16) * 2 ** 32 + parseInt(l!, 16);
};

async function restorable(env: Env): Promise<number> {
  const s = await must(['status', '--json'], env);
  const p = (s.restorablePoint as { lsn?: string } | undefined)?.lsn;
  return p ? lsnNumber(p) : 0;
}

/** A restore into a fresh database named `name`, dropped afterwards. */
async function restoreLatest(env: Env, name: string): Promise<RestoreFigures & { synthetic: boolean }> {
  const into = await createDatabase(name);
  try {
    const r = await must(['restore', '--into', into, '--latest'], env);
    const base = r.base as { synthetic?: boolean } | undefined;
    return { seconds: Number(r.seconds), replaySeconds: Number(r.replaySeconds), transactions: Number(r.transactions), synthetic: Boolean(base?.synthetic) };
  } finally {
    await dropDatabase(name);
  }
}

/** Steady load on `src`: `rate` transactions per second, each an UPDATE, an INSERT and a DELETE of an older ledger row. */
function startLoad(src: pg.Client, rate: number): { stop: () => Promise<void>; count: () => number } {
  let stopped = false;
  let txns = 0;
  const done = (async () => {
    const started = Date.now();
    while (!stopped) {
      const due = Math.floor(((Date.now() - started) / 1000) * rate);
      while (txns < due && !stopped) {
        const id = 1 + Math.floor(Math.random() * 20000);
        await src.query(
          `WITH u AS (UPDATE acct SET balance = balance + 1 WHERE id = $1 RETURNING id), i AS (INSERT INTO ledger (acct, amount) VALUES ($1, 1) RETURNING id)
           DELETE FROM ledger WHERE id = (SELECT max(id) - 5000 FROM i)`,
          [id],
        );
        txns++;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await done;
    },
    count: () => txns,
  };
}

/** Waits until every pipeline's restorable point reaches `lsn`; fails when a `cdp run` has exited or after 10 minutes. */
async function caughtUp(envs: Env[], runs: ChildProcess[], lsn: number): Promise<void> {
  const deadline = Date.now() + 600_000;
  for (const env of envs) {
    while ((await restorable(env)) < lsn) {
      const dead = runs.find((p) => p.exitCode !== null || p.signalCode !== null);
      if (dead) throw new Error(`cdp run exited (${dead.exitCode ?? dead.signalCode}) before the archive reached the step's end`);
      if (Date.now() > deadline) throw new Error(`${env.CDP_SLOT}: restorable point still behind the step's end after 10 minutes`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** Runs the measurement and returns one point per step; cleans up its database, slots and processes. */
export async function compactBench(o: CompactOptions): Promise<CompactPoint[]> {
  applyStackEnv();
  const log = o.log ?? (() => undefined);
  const rand = randomBytes(3).toString('hex');
  const db = `bench_compact_${rand}`;
  const url = await createDatabase(db);
  const src = new pg.Client({ connectionString: url });
  const A = pipelineEnv(`bc_a_${rand}`, url);
  const B = pipelineEnv(`bc_b_${rand}`, url);
  const runs: ChildProcess[] = [];
  let load: ReturnType<typeof startLoad> | undefined;
  const points: CompactPoint[] = [];
  try {
    await src.connect();
    await src.query(`CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL, note text); INSERT INTO acct SELECT g, 0, 'seed' FROM generate_series(1, 20000) g;
                     CREATE TABLE ledger (id bigserial PRIMARY KEY, acct int NOT NULL, amount int NOT NULL, at timestamptz NOT NULL DEFAULT now())`);
    await must(['setup'], A);
    await must(['setup'], B);
    for (const env of [A, B])
      runs.push(spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'run'], { env: { ...process.env, CDP_LOG_FORMAT: 'json', ...env }, stdio: 'ignore' }));
    load = startLoad(src, o.rate);
    const t0 = Date.now();
    for (let step = 1; step <= o.steps; step++) {
      await new Promise((r) => setTimeout(r, o.stepSeconds * 1000));
      const lsn = lsnNumber((await src.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l);
      await caughtUp([A, B], runs, lsn);
      const c0 = Date.now();
      const compacted = await must(['compact'], A);
      const compactSeconds = (Date.now() - c0) / 1000;
      const withC = await restoreLatest(A, `${db}_r${2 * step}`);
      const { synthetic: _, ...without } = await restoreLatest(B, `${db}_r${2 * step + 1}`);
      const p: CompactPoint = {
        step,
        minutes: Math.round((Date.now() - t0) / 600) / 100,
        sourceTransactions: load.count(),
        without,
        with: withC,
        compactSeconds,
        compactTransactions: typeof compacted.transactions === 'number' ? compacted.transactions : null,
      };
      points.push(p);
      log(`compaction step ${step}/${o.steps}: ${p.minutes.toFixed(1)} min, without ${without.seconds.toFixed(1)} s, with ${withC.seconds.toFixed(1)} s`);
    }
  } finally {
    await load?.stop();
    await src.end().catch(() => undefined);
    for (const p of runs) p.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 3000));
    const c = new pg.Client({ connectionString: adminUrl() });
    await c.connect();
    await c
      .query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ($1, $2) AND NOT active`, [A.CDP_SLOT, B.CDP_SLOT])
      .catch(() => undefined);
    await c.end();
    await dropDatabase(db).catch(() => undefined);
  }
  return points;
}

/** The table the CLI prints. */
export function compactTable(points: CompactPoint[], o: { rate: number; stepSeconds: number }): string {
  const L = [
    `restore of the latest point, ${o.rate} txn/s (3 changes each), compaction every ${o.stepSeconds} s (scaled hours -> minutes)`,
    'step  minutes  txns-src |  w/o (s) replayed |  with (s) replayed base | compact(s) its-txns',
  ];
  for (const p of points) {
    L.push(
      `${String(p.step).padStart(4)} ${p.minutes.toFixed(1).padStart(8)} ${String(p.sourceTransactions).padStart(9)} | ${p.without.seconds.toFixed(1).padStart(8)} ${String(p.without.transactions).padStart(8)} | ${p.with.seconds.toFixed(1).padStart(8)} ${String(p.with.transactions).padStart(8)} ${p.with.synthetic ? 'synthetic' : 'source'} | ${p.compactSeconds.toFixed(1).padStart(7)} ${String(p.compactTransactions ?? '-').padStart(7)}`,
    );
  }
  return L.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name: string, dflt: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? Number(process.argv[i + 1]) : dflt;
  };
  const o = { steps: arg('steps', 4), stepSeconds: arg('step-seconds', 45), rate: arg('rate', 400), log: (m: string) => console.log(m) };
  const points = await compactBench(o);
  console.log(`\n${compactTable(points, o)}`);
}
