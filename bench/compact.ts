// Restore time of the latest point against the history since the source's base, with and without
// compaction (issue 11 item 1). Not a test: it prints figures.
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
import pg from 'pg';
import { applyStackEnv, adminUrl, createDatabase, dropDatabase, REPO } from '../test/support/stack.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const STEPS = arg('steps', 4);
const STEP_SECONDS = arg('step-seconds', 45);
const RATE = arg('rate', 400);

applyStackEnv();
const rand = randomBytes(3).toString('hex');
const db = `bench_compact_${rand}`;

function pipelineEnv(name: string, url: string): Record<string, string> {
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

function cli(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
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

async function must(args: string[], env: Record<string, string>): Promise<Record<string, unknown>> {
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

async function restorable(env: Record<string, string>): Promise<number> {
  const s = await must(['status', '--json'], env);
  const p = (s.restorablePoint as { lsn?: string } | undefined)?.lsn;
  if (!p) return 0;
  const [h, l] = p.split('/');
  return parseInt(h!, 16) * 2 ** 32 + parseInt(l!, 16);
}

async function currentLsn(c: pg.Client): Promise<number> {
  const t = (await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
  const [h, l] = t.split('/');
  return parseInt(h!, 16) * 2 ** 32 + parseInt(l!, 16);
}

let targets = 0;
async function restoreLatest(env: Record<string, string>): Promise<{ seconds: number; transactions: number; base: string; synthetic: boolean }> {
  const name = `${db}_r${targets++}`;
  const into = await createDatabase(name);
  try {
    const r = await must(['restore', '--into', into, '--latest'], env);
    const base = r.base as { lsn: string; synthetic?: boolean };
    return { seconds: Number(r.seconds), transactions: Number(r.transactions), base: base.lsn, synthetic: Boolean(base.synthetic) };
  } finally {
    await dropDatabase(name);
  }
}

async function main(): Promise<void> {
  const url = await createDatabase(db);
  const src = new pg.Client({ connectionString: url });
  await src.connect();
  await src.query(`CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL, note text); INSERT INTO acct SELECT g, 0, 'seed' FROM generate_series(1, 20000) g;
                   CREATE TABLE ledger (id bigserial PRIMARY KEY, acct int NOT NULL, amount int NOT NULL, at timestamptz NOT NULL DEFAULT now())`);
  const A = pipelineEnv(`bc_a_${rand}`, url);
  const B = pipelineEnv(`bc_b_${rand}`, url);
  await must(['setup'], A);
  await must(['setup'], B);
  const runs: ChildProcess[] = [A, B].map((env) =>
    spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'run'], { env: { ...process.env, CDP_LOG_FORMAT: 'json', ...env }, stdio: 'ignore' }),
  );

  // Steady load: RATE transactions per second, each an UPDATE, an INSERT and a DELETE of an older ledger row.
  let stop = false;
  let txns = 0;
  const load = (async () => {
    const started = Date.now();
    while (!stop) {
      const due = Math.floor(((Date.now() - started) / 1000) * RATE);
      while (txns < due && !stop) {
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

  const rows: string[] = [];
  const t0 = Date.now();
  try {
    for (let step = 1; step <= STEPS; step++) {
      await new Promise((r) => setTimeout(r, STEP_SECONDS * 1000));
      const lsn = await currentLsn(src);
      for (const env of [A, B]) while ((await restorable(env)) < lsn) await new Promise((r) => setTimeout(r, 500));
      const c0 = Date.now();
      const compacted = await must(['compact'], A);
      const compactSeconds = (Date.now() - c0) / 1000;
      const withC = await restoreLatest(A);
      const without = await restoreLatest(B);
      const minutes = ((Date.now() - t0) / 60_000).toFixed(1);
      const line = `${String(step).padStart(4)} ${minutes.padStart(8)} ${String(txns).padStart(9)} | ${without.seconds.toFixed(1).padStart(8)} ${String(without.transactions).padStart(8)} | ${withC.seconds.toFixed(1).padStart(8)} ${String(withC.transactions).padStart(8)} ${withC.synthetic ? 'synthetic' : 'source'} | ${compactSeconds.toFixed(1).padStart(7)} ${String(compacted.transactions ?? '-').padStart(7)}`;
      rows.push(line);
      console.log(line);
    }
  } finally {
    stop = true;
    await load;
    await src.end();
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
  console.log(`\nrestore of the latest point, ${RATE} txn/s (3 changes each), compaction every ${STEP_SECONDS} s (scaled hours -> minutes)`);
  console.log('step  minutes  txns-src |  w/o (s) replayed |  with (s) replayed base | compact(s) its-txns');
  for (const r of rows) console.log(r);
}

await main();
