// Fault soak (not a test, not part of `npm test` or `npm run bench`): capture and archive under a
// steady write load for N minutes while capture, archive and the Kafka broker are killed with
// SIGKILL at random moments and restarted as a supervisor would; meanwhile "points" are recorded
// (writes paused for an instant: the WAL position and a fingerprint of every table); at the end,
// several random points (and always the last) are restored with `cdp restore --lsn` into fresh
// databases and every table is compared with its fingerprint at that point.
//
//   npm run soak -- --minutes 10 [--seed 42] [--check 4] [--single] [--rate 150] [--keep]
//
// Isolation: the soak never touches the shared stack's Kafka or S3. It starts its own Kafka
// (KRaft, 127.0.0.1:29092, controller 29093) and its own S3Proxy (127.0.0.1:29000) from the jars
// deploy/local/stack.sh already downloaded, with data under ~/.cache/katya-cdp-soak/<run>; only the
// broker it started is ever killed. The source is a scratch database on the shared PostgreSQL
// (its own slot, publication and topic), dropped at the end with the restored databases.
//
// Processes: `cdp capture` and `cdp archive` (the two halves of `cdp run`) as separately supervised
// children, so that each can be killed alone; --single runs one `cdp run` instead (kill targets:
// run and broker). A supervised child that exits for any reason (killed, or failing fast while the
// broker is down) is started again after a short back-off.
//
// Output: every kill and exit with its time, each checked point with the comparison per table, and
// the verdict. Exit 0 when every checked point restored identical tables; 1 on any mismatch or a
// restore that failed; 2 when the soak itself could not run (setup, services).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { restorablePoint } from '../src/archive/catalog.js';
import { archiveRoot, loadConfig } from '../src/config/config.js';
import { createLogger } from '../src/util/log.js';
import { createStore } from '../src/s3/client.js';
import { dbUrl, lsnNum, REPO, sleep, sql } from './lib/env.js';

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
const opt = (n: string, d: string) => {
  const i = argv.indexOf(`--${n}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : d;
};
const MINUTES = Number(opt('minutes', '5'));
const SEED = Number(opt('seed', String(Date.now() % 1_000_000)));
const CHECK = Number(opt('check', '4'));
const RATE = Number(opt('rate', '150'));
const SINGLE = argv.includes('--single');
const KEEP = argv.includes('--keep');
const KAFKA_PORT = Number(opt('kafka-port', '29092'));
const S3_PORT = Number(opt('s3-port', '29000'));
const POINT_EVERY_MS = 12_000;
if (!(MINUTES > 0) || !(CHECK > 0) || !(RATE > 0)) {
  console.error('usage: npm run soak -- --minutes N [--seed S] [--check K] [--rate TX_PER_S] [--single] [--keep]');
  process.exit(2);
}

// A small seeded PRNG (mulberry32): the kill schedule and the load are reproducible from --seed
// (the moments they land on are not: the machine's timing decides those).
let seedState = SEED >>> 0;
function rand(): number {
  seedState = (seedState + 0x6d2b79f5) >>> 0;
  let t = seedState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const between = (a: number, b: number) => a + rand() * (b - a);
const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;

const t0 = Date.now();
// Same reason as bin/cdp.mjs: the AWS SDK's Node 20 notice is noise in the soak's output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const stamp = () => `${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s`;
const events: string[] = [];
function say(m: string): void {
  const line = `[soak ${stamp()}] ${m}`;
  events.push(line);
  console.log(line);
}

// ---------------------------------------------------------------------------------------------
// Our own Kafka and S3Proxy, from the jars stack.sh downloaded

const STACK = process.env.CDP_STACK_HOME ?? join(homedir(), '.cache/katya-cdp');
const version = (name: string) => new RegExp(`^${name}=(\\S+)`, 'm').exec(readFileSync(`${REPO}deploy/local/stack.sh`, 'utf8'))?.[1] ?? '?';
const KAFKA_LIBS = join(STACK, `kafka-${version('KAFKA_VERSION')}`, 'libs');
const S3_LIBS = join(STACK, `s3proxy-${version('S3PROXY_VERSION')}`, 'libs');
const id = randomBytes(3).toString('hex');
const HOME = join(homedir(), '.cache/katya-cdp-soak', id);
const S3_ID = 'cdp-soak';
const S3_SECRET = 'cdp-soak-secret'; // fake credentials of a loopback-only, throw-away server

class Service {
  proc: ChildProcess | undefined;
  constructor(
    readonly name: string,
    private readonly args: string[],
    private readonly log: string,
  ) {}
  start(): void {
    const out = createWriteStream(this.log, { flags: 'a' });
    const p = spawn('java', this.args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: HOME });
    p.stdout!.pipe(out);
    p.stderr!.pipe(out);
    this.proc = p;
  }
  kill9(): number | undefined {
    const pid = this.proc?.pid;
    if (pid && this.proc!.exitCode === null) process.kill(pid, 'SIGKILL');
    return pid;
  }
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    const done = new Promise((r) => p.once('exit', r));
    if ((await Promise.race([done.then(() => 'exit'), sleep(30_000).then(() => 'timeout')])) === 'timeout') p.kill('SIGKILL');
  }
}

function kafkaService(): Service {
  const dir = join(HOME, 'kafka');
  mkdirSync(join(dir, 'data'), { recursive: true });
  const props = join(dir, 'server.properties');
  writeFileSync(
    props,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${KAFKA_PORT + 1}`,
      'controller.listener.names=CONTROLLER',
      `listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT},CONTROLLER://127.0.0.1:${KAFKA_PORT + 1}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT}`,
      'inter.broker.listener.name=PLAINTEXT',
      'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
      `log.dirs=${join(dir, 'data')}`,
      'num.partitions=1',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=3',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'share.coordinator.state.topic.replication.factor=1',
      'share.coordinator.state.topic.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      'auto.create.topics.enable=false',
      'min.insync.replicas=1',
      '',
    ].join('\n'),
  );
  const tool = (...a: string[]) =>
    spawnSync(
      'java',
      ['-Xmx256m', `-Dlog4j2.configurationFile=${REPO}deploy/local/kafka/log4j2-tools.properties`, '-cp', `${KAFKA_LIBS}/*`, 'kafka.tools.StorageTool', ...a],
      { encoding: 'utf8' },
    );
  if (!existsSync(join(dir, 'data', 'meta.properties'))) {
    const uuid = tool('random-uuid').stdout.trim();
    const f = tool('format', '-t', uuid, '-c', props, '-g');
    if (f.status !== 0) throw new Error(`formatting the soak's Kafka failed: ${f.stderr}`);
  }
  return new Service(
    'broker',
    [
      '-Xms256m',
      '-Xmx512m',
      '-XX:+UseG1GC',
      `-Dlog4j2.configurationFile=${REPO}deploy/local/kafka/log4j2.properties`,
      `-Dcdp.kafka.log=${join(dir, 'kafka.log')}`,
      '-cp',
      `${KAFKA_LIBS}/*`,
      'kafka.Kafka',
      props,
    ],
    join(dir, 'kafka.out'),
  );
}

function s3Service(): Service {
  const dir = join(HOME, 's3');
  mkdirSync(join(dir, 'data'), { recursive: true });
  const props = join(dir, 's3proxy.properties');
  writeFileSync(
    props,
    [
      `s3proxy.endpoint=http://127.0.0.1:${S3_PORT}`,
      's3proxy.authorization=aws-v2-or-v4',
      `s3proxy.identity=${S3_ID}`,
      `s3proxy.credential=${S3_SECRET}`,
      'jclouds.provider=filesystem',
      `jclouds.filesystem.basedir=${join(dir, 'data')}`,
      '',
    ].join('\n'),
  );
  return new Service(
    's3',
    [
      '-Xmx256m',
      `-Dlogback.configurationFile=${REPO}deploy/local/s3proxy/logback.xml`,
      `-Dcdp.s3.log=${join(dir, 's3proxy.log')}`,
      '-cp',
      `${S3_LIBS}/*`,
      'org.gaul.s3proxy.Main',
      '--properties',
      props,
    ],
    join(dir, 's3proxy.out'),
  );
}

async function kafkaReady(timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const admin = new Kafka({ clientId: 'soak-probe', brokers: [`127.0.0.1:${KAFKA_PORT}`], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).admin();
    try {
      await admin.connect();
      await admin.describeCluster();
      await admin.listTopics();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`the soak's Kafka did not serve 127.0.0.1:${KAFKA_PORT} within ${timeoutMs / 1000} s (log ${HOME}/kafka)`);
      await sleep(1000);
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }
}

async function s3Ready(): Promise<void> {
  const c = new S3Client({
    endpoint: `http://127.0.0.1:${S3_PORT}`,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: S3_ID, secretAccessKey: S3_SECRET },
  });
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      await c.send(new CreateBucketCommand({ Bucket: 'katya-cdp' }));
      break;
    } catch (e) {
      const code = (e as { name?: string }).name;
      if (code === 'BucketAlreadyOwnedByYou' || code === 'BucketAlreadyExists') break;
      if (Date.now() > deadline) throw new Error(`the soak's S3Proxy did not answer on ${S3_PORT}: ${(e as Error).message}`, { cause: e });
      await sleep(1000);
    }
  }
  c.destroy();
}

// ---------------------------------------------------------------------------------------------
// Supervised cdp processes

const NAME = `soak_${id}`;
const SRC_URL = dbUrl(NAME);
const cdpEnv: NodeJS.ProcessEnv = {
  ...process.env,
  CDP_SOURCE_URL: SRC_URL,
  CDP_SLOT: NAME,
  CDP_PUBLICATION: NAME,
  CDP_TOPIC: NAME,
  CDP_KAFKA_PARTITIONS: '3',
  CDP_KAFKA_BROKERS: `127.0.0.1:${KAFKA_PORT}`,
  CDP_S3_ENDPOINT: `http://127.0.0.1:${S3_PORT}`,
  CDP_S3_BUCKET: 'katya-cdp',
  CDP_S3_PREFIX: `soak-${id}`,
  CDP_S3_FORCE_PATH_STYLE: 'true',
  AWS_ACCESS_KEY_ID: S3_ID,
  AWS_SECRET_ACCESS_KEY: S3_SECRET,
  AWS_REGION: 'us-east-1',
  CDP_ARCHIVE_GROUP_ID: `soak-${id}`,
  CDP_SEGMENT_MAX_AGE_MS: '2000',
  CDP_BASEBACKUP_INTERVAL_HOURS: '0',
  CDP_METRICS_PORT: '0',
  CDP_LOG_FORMAT: 'json',
  CDP_LOG_LEVEL: 'warn',
  NODE_NO_WARNINGS: '1',
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
};

class Supervised {
  proc: ChildProcess | undefined;
  starts = 0;
  private stopping = false;
  private killedAt = 0;
  private loop: Promise<void> | undefined;
  constructor(
    readonly name: string,
    private readonly args: string[],
  ) {}
  run(): void {
    this.loop = (async () => {
      while (!this.stopping) {
        const out = createWriteStream(join(HOME, `${this.name}.log`), { flags: 'a' });
        const p = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, ...this.args], { env: cdpEnv, stdio: ['ignore', 'pipe', 'pipe'] });
        this.starts++;
        this.proc = p;
        p.stdout!.pipe(out);
        p.stderr!.pipe(out);
        const [code, sig] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => p.once('exit', (c, s) => r([c, s])));
        if (this.stopping) break;
        if (Date.now() - this.killedAt > 2000) say(`${this.name} exited on its own (${code ?? sig}); restarting after 2 s`);
        // A supervisor's back-off: short after our kill (random), 2 s after a failure.
        await sleep(Date.now() - this.killedAt < 2000 ? between(300, 3000) : 2000);
      }
    })();
  }
  kill9(): number | undefined {
    const p = this.proc;
    if (!p?.pid || p.exitCode !== null || p.signalCode !== null) return undefined;
    this.killedAt = Date.now();
    process.kill(p.pid, 'SIGKILL');
    return p.pid;
  }
  async stop(): Promise<void> {
    this.stopping = true;
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      await Promise.race([new Promise((r) => p.once('exit', r)), sleep(30_000).then(() => p.kill('SIGKILL'))]);
    }
    await this.loop;
  }
}

// ---------------------------------------------------------------------------------------------
// Load and points

const TABLES = ['accounts', 'transfers', 'docs'] as const;
const ACCOUNTS = 5_000;

interface Point {
  at: number;
  lsn: string;
  fingerprints: Record<string, string>;
}

async function fingerprints(url: string): Promise<Record<string, string>> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const out: Record<string, string> = {};
    for (const t of TABLES) {
      const r = await c.query<{ n: number; h: string | null }>(
        `SELECT count(*)::int AS n, md5(coalesce(string_agg(x::text, E'\\n' ORDER BY id), '')) AS h FROM ${t} x`,
      );
      out[t] = `${r.rows[0]!.n} rows, md5 ${r.rows[0]!.h}`;
    }
    return out;
  } finally {
    await c.end();
  }
}

async function main(): Promise<number> {
  for (const [what, dir] of [
    ['Kafka', KAFKA_LIBS],
    ['S3Proxy', S3_LIBS],
  ] as const) {
    if (!existsSync(dir)) {
      console.error(`soak: the ${what} jars are not in ${dir}: run \`bash deploy/local/stack.sh up\` once (it downloads them)`);
      return 2;
    }
  }
  mkdirSync(HOME, { recursive: true });
  say(
    `seed ${SEED}; ${MINUTES} min; ${RATE} tx/s offered; own Kafka 127.0.0.1:${KAFKA_PORT}, own S3Proxy 127.0.0.1:${S3_PORT}, data and logs in ${HOME}; source database ${NAME} on the shared PostgreSQL`,
  );
  const broker = kafkaService();
  const s3 = s3Service();
  broker.start();
  s3.start();
  const daemons: Supervised[] = SINGLE ? [new Supervised('run', ['run'])] : [new Supervised('capture', ['capture']), new Supervised('archive', ['archive'])];
  const restored: string[] = [];
  // Ctrl-C / SIGTERM: stop what the soak started (its Kafka, S3Proxy and cdp children) before leaving.
  const onSignal = () => {
    console.error(`soak: interrupted; stopping its own services (database ${NAME} and logs in ${HOME} are left)`);
    for (const p of [broker.proc, s3.proc, ...daemons.map((d) => d.proc)]) if (p?.pid && p.exitCode === null) process.kill(p.pid, 'SIGKILL');
    process.exit(2);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const points: Point[] = [];
  let failures = 0;
  let loadStop = false;
  let paused = false;
  let inFlight = 0;
  let committed = 0;
  const clients: pg.Client[] = [];
  try {
    await Promise.all([kafkaReady(), s3Ready()]);
    say('own Kafka and S3Proxy ready');
    await sql(dbUrl('postgres'), `CREATE DATABASE ${NAME}`);
    await sql(SRC_URL, `CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text)`);
    await sql(
      SRC_URL,
      `CREATE TABLE transfers (id bigserial PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount int NOT NULL, at timestamptz NOT NULL DEFAULT now())`,
    );
    await sql(SRC_URL, `CREATE TABLE docs (id int PRIMARY KEY, version int NOT NULL, body text NOT NULL)`);
    await sql(SRC_URL, `INSERT INTO accounts SELECT g, 1000, md5(g::text) FROM generate_series(1, ${ACCOUNTS}) g`);
    const setup = spawnSync(process.execPath, [`${REPO}bin/cdp.mjs`, 'setup'], { env: cdpEnv, encoding: 'utf8' });
    if (setup.status !== 0) throw new Error(`cdp setup exited ${setup.status}: ${setup.stderr.slice(-2000)}`);
    say('cdp setup done (slot, publication, topic, base backup)');
    for (const d of daemons) d.run();

    // The load: transfers (two account updates + one insert), document writes (TOAST-sized
    // bodies, insert or replace), and deletes of old transfers; paced open-loop over 2 connections.
    for (let i = 0; i < 2; i++) {
      const c = new pg.Client({ connectionString: SRC_URL });
      await c.connect();
      clients.push(c);
    }
    const txn = (): string => {
      const r = rand();
      if (r < 0.7) {
        const a = 1 + Math.floor(rand() * ACCOUNTS);
        const b = 1 + Math.floor(rand() * ACCOUNTS);
        const amt = 1 + Math.floor(rand() * 100);
        return `BEGIN; UPDATE accounts SET balance = balance - ${amt} WHERE id = ${a}; UPDATE accounts SET balance = balance + ${amt}, note = md5(random()::text) WHERE id = ${b}; INSERT INTO transfers (src, dst, amount) VALUES (${a}, ${b}, ${amt}); COMMIT`;
      }
      if (r < 0.9) {
        const d = 1 + Math.floor(rand() * 300);
        const kb = 2 + Math.floor(rand() * 14);
        return `BEGIN; INSERT INTO docs VALUES (${d}, 1, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, ${kb * 32}))) ON CONFLICT (id) DO UPDATE SET version = docs.version + 1, body = excluded.body; COMMIT`;
      }
      return `BEGIN; DELETE FROM transfers WHERE id IN (SELECT id FROM transfers ORDER BY id LIMIT ${1 + Math.floor(rand() * 5)}); COMMIT`;
    };
    const load = Promise.all(
      clients.map(async (c) => {
        let next = Date.now();
        while (!loadStop) {
          next += (1000 * clients.length) / RATE;
          const wait = next - Date.now();
          if (wait > 0) await sleep(wait);
          else if (wait < -1000) next = Date.now();
          while (paused && !loadStop) await sleep(5);
          if (loadStop) break;
          inFlight++;
          try {
            await c.query(txn());
            committed++;
          } catch (e) {
            await c.query('ROLLBACK').catch(() => {});
            say(`load: a transaction failed (${(e as Error).message}); going on`);
          } finally {
            inFlight--;
          }
        }
      }),
    );
    const recordPoint = async () => {
      paused = true;
      while (inFlight > 0) await sleep(2);
      try {
        const [{ l }] = await sql<{ l: string }>(SRC_URL, 'SELECT pg_current_wal_lsn()::text AS l');
        points.push({ at: Date.now(), lsn: l, fingerprints: await fingerprints(SRC_URL) });
      } finally {
        paused = false;
      }
    };

    // Kills at random moments until the time is up; points every POINT_EVERY_MS meanwhile.
    const end = t0 + MINUTES * 60_000;
    const targets = [...daemons.map((d) => d.name), 'broker'];
    let nextPoint = Date.now() + POINT_EVERY_MS / 2;
    let nextKill = Date.now() + between(8_000, 20_000);
    while (Date.now() < end) {
      await sleep(200);
      if (Date.now() >= nextPoint) {
        await recordPoint();
        nextPoint = Date.now() + POINT_EVERY_MS;
      }
      if (Date.now() >= nextKill) {
        const target = pick(targets);
        if (target === 'broker') {
          const pid = broker.kill9();
          const down = between(2_000, 8_000);
          say(`kill -9 broker (pid ${pid}); restarting it in ${(down / 1000).toFixed(1)} s`);
          await sleep(down);
          broker.start();
          await kafkaReady();
          say(`broker back (pid ${broker.proc?.pid})`);
        } else {
          const d = daemons.find((x) => x.name === target)!;
          const pid = d.kill9();
          say(`kill -9 ${target} (pid ${pid ?? '- (was restarting)'}; start #${d.starts})`);
        }
        nextKill = Date.now() + between(10_000, 30_000);
      }
    }
    loadStop = true;
    await load;
    await recordPoint();
    say(`load stopped: ${committed} transactions committed, ${points.length} points recorded`);

    // Wait until the archive covers the last point, with everything running.
    const last = points[points.length - 1]!;
    const cfg = loadConfig({ env: cdpEnv, flags: { 'metrics.port': 0 } });
    // The S3 client here takes its credentials from this process's environment (the soak's own
    // throw-away S3Proxy; this process talks to no other S3).
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: S3_ID, AWS_SECRET_ACCESS_KEY: S3_SECRET, AWS_REGION: 'us-east-1' });
    const store = createStore(cfg, createLogger('error'), { maxElapsedMs: 20_000 });
    const deadline = Date.now() + 300_000;
    for (;;) {
      const p = await restorablePoint(store, archiveRoot(cfg), { partitions: 3 }).catch(() => undefined);
      if (p && p.lsn >= lsnNum(last.lsn)) break;
      if (Date.now() > deadline)
        throw new Error(`the restorable point did not reach the last recorded point (${last.lsn}) within 5 minutes of the end of the load`);
      await sleep(1000);
    }
    store.client.destroy();
    say('restorable point covers the last recorded point');
    for (const d of daemons) await d.stop();

    // Restore random points (and the last) into fresh databases; compare whole tables.
    const chosen = new Set<number>([points.length - 1]);
    while (chosen.size < Math.min(CHECK, points.length)) chosen.add(Math.floor(rand() * points.length));
    for (const i of [...chosen].sort((a, b) => a - b)) {
      const p = points[i]!;
      const target = `${NAME}_r${i}`;
      restored.push(target);
      await sql(dbUrl('postgres'), `CREATE DATABASE ${target}`);
      const r = spawnSync(process.execPath, [`${REPO}bin/cdp.mjs`, 'restore', '--into', dbUrl(target), '--lsn', p.lsn], { env: cdpEnv, encoding: 'utf8' });
      const when = `point ${i + 1}/${points.length} (t=${((p.at - t0) / 1000).toFixed(1)} s, LSN ${p.lsn})`;
      if (r.status !== 0) {
        failures++;
        say(`${when}: RESTORE FAILED (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
        continue;
      }
      const got = await fingerprints(dbUrl(target));
      for (const t of TABLES) {
        const ok = got[t] === p.fingerprints[t];
        if (!ok) failures++;
        say(`${when} ${t}: ${ok ? 'identical' : `MISMATCH: source had ${p.fingerprints[t]}, restore has ${got[t]}`} (${p.fingerprints[t]})`);
      }
    }
  } catch (e) {
    say(`soak could not complete: ${(e as Error).message}`);
    failures = -1;
  } finally {
    loadStop = true;
    for (const c of clients) await c.end().catch(() => {});
    for (const d of daemons) await d.stop().catch(() => {});
    await sql(dbUrl('postgres'), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, [NAME]).catch(
      () => {},
    );
    for (const db of [...restored, NAME]) await sql(dbUrl('postgres'), `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => {});
    await broker.stop();
    await s3.stop();
    if (!KEEP && failures === 0) rmSync(HOME, { recursive: true, force: true });
  }
  const kills = events.filter((l) => l.includes('kill -9')).length;
  const exits = events.filter((l) => l.includes('exited on its own')).length;
  console.log('\nwhat was killed when (seconds from the start):');
  for (const l of events.filter((x) => x.includes('kill -9') || x.includes('exited on its own') || x.includes('broker back'))) console.log(`  ${l}`);
  console.log(
    `\nsoak summary: seed ${SEED}, ${MINUTES} min, ${kills} kills (${events.filter((l) => l.includes('kill -9 broker')).length} of the broker), ${exits} unprompted exits (restarted), ${points.length} points recorded, ${Math.min(CHECK, points.length)} restored and compared`,
  );
  if (failures < 0) {
    console.log(`verdict: SOAK DID NOT COMPLETE (logs kept in ${HOME})`);
    return 2;
  }
  console.log(
    failures === 0
      ? 'verdict: PASS, every restored point matches the source at that point, table by table'
      : `verdict: FAIL, ${failures} mismatched table(s) or failed restore(s) (logs kept in ${HOME})`,
  );
  return failures === 0 ? 0 : 1;
}

process.exit(await main());
