// Objects an idle database costs (issue 14): `cdp run` against a scratch database with no
// workload, counting the objects its archive gains in --seconds (default 60) after a warm-up.
// Not a test. Run against the local stack:
//   npx tsx bench/idle-objects.ts [--seconds 60] [--warmup 20] [--partitions 6] [--old]
// --old emulates the cut policy before issue 14 (every partition's segment stored every
// segmentMaxAgeMs, watermarks every second) through configuration, in the same build, as the anchor.
// Also prints the restorable point's age (the RPO status reports) at the end: idle must stay honest.

import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { loadConfig, archiveRoot } from '../src/config/config.js';
import { createStore, listObjects } from '../src/s3/client.js';
import { createLogger } from '../src/util/log.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
}
const SECONDS = Number(arg('seconds', '60'));
const WARMUP = Number(arg('warmup', '20'));
const PARTITIONS = Number(arg('partitions', '6'));
const OLD = process.argv.includes('--old');
const REPO = new URL('../', import.meta.url).pathname;

for (const line of execFileSync('bash', [`${REPO}deploy/local/stack.sh`, 'env'], { encoding: 'utf8' }).split('\n')) {
  const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
  if (m) process.env[m[1]!] ??= m[2]!;
}

const name = `bench_idle_${randomBytes(3).toString('hex')}`;
const admin = new URL(process.env.CDP_SOURCE_URL!);
const url = new URL(admin.toString());
url.pathname = `/${name}`;
const env: Record<string, string> = {
  ...(process.env as Record<string, string>),
  CDP_SOURCE_URL: url.toString(),
  CDP_SLOT: name,
  CDP_PUBLICATION: name,
  CDP_TOPIC: name,
  CDP_KAFKA_PARTITIONS: String(PARTITIONS),
  CDP_S3_PREFIX: `bench/${name}`,
  CDP_BASEBACKUP_INTERVAL_HOURS: '0',
  CDP_METRICS_PORT: '0',
  CDP_LOG_LEVEL: 'warn',
  // The policy before issue 14: no idle rule (a watermark-only segment is stored at segmentMaxAgeMs
  // like any other), no early cut at a watermark, watermarks every second.
  ...(OLD ? { CDP_IDLE_SEGMENT_MAX_AGE_MS: '5000', CDP_SEGMENT_MIN_AGE_MS: '100000000', CDP_IDLE_POINTER_INTERVAL_MS: '100000000' } : {}),
};

async function sql(u: string, text: string): Promise<void> {
  const c = new pg.Client({ connectionString: u });
  await c.connect();
  try {
    await c.query(text);
  } finally {
    await c.end();
  }
}

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const cfg = loadConfig({ env, flags: {} });
const store = createStore(cfg, createLogger('warn'));
const root = archiveRoot(cfg);
async function count(): Promise<{ all: number; segments: number }> {
  let all = 0;
  let segments = 0;
  for await (const o of listObjects(store, `${root}/`)) {
    all += 1;
    if (o.key.includes('/segments/')) segments += 1;
  }
  return { all, segments };
}

await sql(admin.toString(), `CREATE DATABASE ${name}`);
let run: ReturnType<typeof spawn> | undefined;
try {
  await sql(url.toString(), 'CREATE TABLE t (id int PRIMARY KEY)');
  const s = await cli(['setup', '--no-basebackup']);
  if (s.code !== 0) throw new Error(`setup: ${s.stderr}`);
  run = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'run'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  await new Promise((r) => setTimeout(r, WARMUP * 1000));
  const a = await count();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const b = await count();
  const st = JSON.parse((await cli(['status', '--json'])).stdout) as { rpoSeconds: number | null };
  const perMin = ((b.all - a.all) * 60) / SECONDS;
  console.log(
    `idle ${OLD ? 'old policy' : 'new policy'}, ${PARTITIONS} partitions: ${b.segments - a.segments} segments, ${b.all - a.all} objects in ${SECONDS} s ` +
      `(${perMin.toFixed(1)} objects/min, ${Math.round(perMin * 1440)} objects/day); status RPO at the end ${st.rpoSeconds} s`,
  );
} finally {
  run?.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 3000));
  await sql(admin.toString(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '${name}'`).catch(() => {});
  await sql(admin.toString(), `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
  store.client.destroy();
}
