import { execFile, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { promisify } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../../src/util/lsn.js';
import {
  REPO,
  createDatabase,
  dropDatabase,
  fingerprint,
  pipelineEnv,
  rand,
  runCli,
  stackEnvironment,
  startRun,
  waitFor,
  withClient,
} from '../restore/helpers.js';

// DESIGN.md section 8: a Kafka broker restart and a Postgres restart while `cdp run` (capture +
// archive) runs under a workload of committed and rolled-back transactions. `cdp run` must ride
// through both (it retries; it must not exit), and the latest restorable point must restore to
// exactly the source's rows.

const pexec = promisify(execFile);
const name = `restarts_${rand()}`;
const restored = `${name}_r`;
const STACK = `${REPO}deploy/local/stack.sh`;
const KAFKA_PID_FILE = `${process.env.CDP_STACK_HOME ?? `${homedir()}/.cache/katya-cdp`}/run/kafka.pid`;
let url = '';
let env: Record<string, string> = {};
let run: ChildProcess | undefined;
let runStderr = '';
let runExit: Promise<number | null> | undefined;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const runAlive = () => !!run && run.exitCode === null && run.signalCode === null;

/** Fails the test (with its stderr) if `cdp run` is no longer running. */
function assertRunAlive(when: string): void {
  if (runAlive()) return;
  throw new Error(`cdp run exited (code ${run?.exitCode}, signal ${run?.signalCode}) ${when}; its stderr ends with:\n${runStderr.slice(-4000)}`);
}

async function stackUp(): Promise<void> {
  await pexec('bash', [STACK, 'up'], { timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
}

// ---- the workload: one client that reconnects after a Postgres restart ----------------------

const stats = { committed: 0, rolledBack: 0, errors: 0, reconnects: 0, lastError: '' };
let working = false;
let nextId = 1;

async function connectWorkload(): Promise<pg.Client> {
  return waitFor(
    'the workload to (re)connect to Postgres',
    async () => {
      const c = new pg.Client({ connectionString: url });
      // A connection terminated by the restart emits 'error' on an idle client: never let it crash the worker.
      c.on('error', () => {});
      try {
        await c.connect();
        return c;
      } catch (err) {
        await c.end().catch(() => {});
        throw err;
      }
    },
    180_000,
    250,
  );
}

async function workload(): Promise<void> {
  let c: pg.Client | undefined;
  let tx = 0;
  try {
    while (working) {
      try {
        if (!c) {
          c = await connectWorkload();
          stats.reconnects++;
        }
        tx++;
        const rollback = tx % 5 === 0;
        const first = nextId;
        const n = 1 + (tx % 7);
        await c.query('BEGIN');
        await c.query(`INSERT INTO items SELECT g, md5(g::text), $3 FROM generate_series($1::int, $2::int) g`, [first, first + n - 1, tx]);
        await c.query(`UPDATE items SET v = v || 'u', tx = $2 WHERE id % 13 = $1`, [tx % 13, tx]);
        if (tx % 3 === 0) await c.query(`DELETE FROM items WHERE id = $1`, [(tx * 7919) % first]);
        if (rollback) {
          await c.query('ROLLBACK');
          stats.rolledBack++;
        } else {
          await c.query('COMMIT');
          nextId += n;
          stats.committed++;
        }
      } catch (err) {
        // The restart cut the connection (an outcome-unknown COMMIT is fine: the oracle compares
        // whatever the source holds). Reconnect and go on.
        stats.errors++;
        stats.lastError = (err as Error).message;
        await c?.end().catch(() => {});
        c = undefined;
        // nextId may already be taken by a commit whose reply was lost: skip ahead.
        nextId += 100;
        await sleep(200);
      }
      await sleep(20);
    }
  } finally {
    await c?.end().catch(() => {});
  }
}

/** Waits until the workload has committed `count` more transactions (while cdp run stays up). */
async function commitsMore(count: number, what: string): Promise<void> {
  const target = stats.committed + count;
  // A dead cdp run ends the wait at once (waitFor would retry a throwing check until its timeout).
  await waitFor(`${count} more commits ${what}`, async () => !runAlive() || stats.committed >= target, 300_000, 100);
  assertRunAlive(what);
}

async function status() {
  const r = await runCli(['status', '--json'], env);
  return JSON.parse(r.stdout) as Record<string, any>;
}

beforeAll(async () => {
  stackEnvironment();
  url = await createDatabase(name);
  env = pipelineEnv(name, url, 'test-restarts');
  await withClient(url, async (c) => {
    await c.query('CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL, tx int)');
    await c.query(`INSERT INTO items SELECT g, md5(g::text), 0 FROM generate_series(1, 300) g`);
  });
  nextId = 1000;
});

afterAll(async () => {
  working = false;
  if (run && run.exitCode === null && run.signalCode === null) run.kill('SIGKILL');
  // Whatever happened above, leave Kafka and Postgres running for the next test files.
  await stackUp().catch((err) => console.error('stack.sh up in afterAll failed', err));
  await dropDatabase(name);
  await dropDatabase(restored);
  const kafka = new Kafka({ brokers: [process.env.CDP_KAFKA_BROKERS ?? '127.0.0.1:9092'], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin
    .connect()
    .then(() => admin.deleteTopics({ topics: [name] }))
    .catch(() => {})
    .finally(() => admin.disconnect().catch(() => {}));
});

describe('cdp run across service restarts', () => {
  it('survives a Kafka broker kill -9 + restart and a Postgres restart; the latest point restores exactly', async () => {
    const setup = await runCli(['setup'], env);
    expect(setup.code, setup.stderr).toBe(0);
    run = startRun(env);
    run.stderr!.on('data', (d: Buffer) => {
      runStderr += d.toString();
      if (runStderr.length > 4_000_000) runStderr = runStderr.slice(-2_000_000);
    });
    runExit = new Promise((resolve) => run!.on('exit', (code) => resolve(code)));

    working = true;
    const load = workload();
    const t0 = Date.now();
    const times: Record<string, number | string> = {};
    const mark = (k: string) => (times[k] = new Date().toISOString().slice(11, 23));
    try {
      await commitsMore(50, 'before the Kafka restart');

      // Kafka: kill -9 the broker, then let stack.sh start it again.
      const pid = Number(readFileSync(KAFKA_PID_FILE, 'utf8').trim());
      expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('kafka.Kafka');
      let t = Date.now();
      mark('kafkaKilledAt');
      process.kill(pid, 'SIGKILL');
      await waitFor(
        'the broker to die',
        async () => {
          try {
            process.kill(pid, 0);
            return false;
          } catch {
            return true;
          }
        },
        60_000,
        100,
      );
      await stackUp();
      times.kafkaRestartMs = Date.now() - t;
      mark('kafkaUpAt');
      assertRunAlive('during the Kafka restart');
      await commitsMore(50, 'after the Kafka restart');

      // Postgres: a fast restart (terminates every session, the walsender included).
      t = Date.now();
      mark('pgRestartAt');
      await pexec('pg_ctlcluster', ['--skip-systemctl-redirect', '15', 'main', 'restart', '-m', 'fast'], { timeout: 300_000 });
      await waitFor(
        'Postgres to answer after its restart',
        () => withClient(url, async (c) => (await c.query('SELECT 1 AS one')).rows[0].one === 1),
        180_000,
        250,
      );
      times.postgresRestartMs = Date.now() - t;
      mark('pgUpAt');
      assertRunAlive('during the Postgres restart');
      await commitsMore(50, 'after the Postgres restart');
    } finally {
      working = false;
      await load;
    }
    assertRunAlive('after the workload');

    // Every commit is in the WAL before this LSN; the restorable point must pass it.
    mark('workloadEndAt');
    const last = await withClient(url, async (c) => (await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l as string);
    let t = Date.now();
    await waitFor(
      `the restorable point to pass ${last}`,
      async () => {
        if (!runAlive()) return true;
        const r = await status();
        return !!r.restorablePoint && parseLsn(r.restorablePoint.lsn) >= parseLsn(last);
      },
      600_000,
      1_000,
    );
    assertRunAlive('while waiting for the restorable point');
    times.catchUpMs = Date.now() - t;

    t = Date.now();
    const into = await createDatabase(restored);
    const r = await runCli(['restore', '--into', into, '--latest'], env);
    expect(r.code, r.stderr).toBe(0);
    times.restoreMs = Date.now() - t;
    const [a, b] = await Promise.all([withClient(url, fingerprint), withClient(into, fingerprint)]);
    expect(b).toEqual(a);

    assertRunAlive('at the end');
    // What cdp run said about the restarts (warnings and errors), for the record.
    const notes = runStderr.split('\n').flatMap((l) => {
      try {
        const o = JSON.parse(l);
        const noise = /Connection error|Failed to connect to seed broker/.test(String(o.msg));
        return o.level >= 40 && !noise
          ? [`${new Date(o.time).toISOString().slice(11, 23)} ${o.component ?? ''} ${o.msg}: ${String(o.err?.message ?? o.err ?? '').slice(0, 160)}`]
          : [];
      } catch {
        return [];
      }
    });
    console.log(`cdp run warnings/errors other than kafkajs connection refusals (${notes.length}):\n${notes.slice(0, 40).join('\n')}`);
    const sessionRestarts = runStderr.split('\n').filter((l) => l.includes('restarting from the slot')).length;
    console.log(
      `restarts test: ${stats.committed} commits, ${stats.rolledBack} rollbacks, ${stats.errors} workload errors, ` +
        `${stats.reconnects} workload connections, ${sessionRestarts} capture session restarts; ` +
        `rows ${a['public.items']}; times ${JSON.stringify(times)}; total ${Date.now() - t0} ms`,
    );
    run!.kill('SIGTERM');
    const code = await runExit;
    expect(code, runStderr.slice(-4000)).toBe(0);
  });
});
