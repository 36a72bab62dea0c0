import { afterAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../../src/util/lsn.js';
import { cdpSync, confirmedFlush, freshSource, peakRssKb, query, scanTopic, startCaptureChild, waitFor, type Daemon, type Fixture } from './helpers.js';

// Capture as a child process (`node bin/cdp.mjs capture`), the way operators run it: a huge
// transaction under a memory bound, and kill -9 at random moments under a workload.

/** Peak RSS bound for capture streaming one 1,000,000-row transaction. */
const RSS_BOUND_MB = 400;

const fixtures: Fixture[] = [];
const daemons: Daemon[] = [];
afterAll(async () => {
  for (const d of daemons) if (d.child.exitCode === null) d.child.kill('SIGKILL');
  for (const f of fixtures) await f.cleanup().catch((err) => console.error(`cleanup of ${f.name} failed`, err));
});

async function prepared(label: string, ddl: string): Promise<Fixture> {
  const f = await freshSource(label);
  fixtures.push(f);
  await query(f.url, ddl);
  const r = cdpSync(f.env, ['setup', '--no-basebackup']);
  expect(r.code, r.stderr).toBe(0);
  return f;
}

function capture(f: Fixture): Daemon {
  const d = startCaptureChild(f.env);
  daemons.push(d);
  return d;
}

async function caughtUp(f: Fixture, d: Daemon): Promise<void> {
  const [{ lsn }] = await query<{ lsn: string }>(f.url, 'SELECT pg_current_wal_lsn()::text AS lsn');
  const target = parseLsn(lsn);
  await waitFor(
    `capture to confirm ${lsn}`,
    async () => {
      if (d.child.exitCode !== null) throw new Error(`capture exited with ${d.child.exitCode}: ${d.stderr().slice(-2000)}`);
      return (await confirmedFlush(f.url, f.name)) >= target;
    },
    600_000,
  );
}

async function stop(d: Daemon): Promise<number | null> {
  d.child.kill('SIGTERM');
  return d.exited;
}

describe('capture under stress', () => {
  it('streams one 1,000,000-row transaction within a bounded memory, every row arriving', async () => {
    const ROWS = 1_000_000;
    const f = await prepared('million', `CREATE TABLE big (id integer PRIMARY KEY, s text, n numeric(12,2))`);
    const d = capture(f);
    await query(f.url, `INSERT INTO big SELECT g, md5(g::text), g / 100.0 FROM generate_series(1, ${ROWS}) g`);
    await caughtUp(f, d);
    const peakMb = peakRssKb(d.child.pid!) / 1024;
    console.log(`capture peak RSS (VmHWM) for a ${ROWS}-row transaction: ${peakMb.toFixed(0)} MB (bound ${RSS_BOUND_MB} MB)`);
    expect(await stop(d)).toBe(0);
    expect(peakMb).toBeLessThan(RSS_BOUND_MB);

    const seen = new Uint8Array(ROWS + 1);
    let others = 0;
    let commitPositions: number[] = [];
    await scanTopic(f.name, ({ ev }) => {
      if (ev.op === 'INSERT' && ev.table === 'big') {
        const id = Number(ev.new![0]);
        if (id >= 1 && id <= ROWS && ev.new![1] !== null) seen[id] = 1;
        else others++;
      } else if (ev.op === 'COMMIT') commitPositions.push(ev.position);
    });
    const missing: number[] = [];
    for (let id = 1; id <= ROWS && missing.length < 10; id++) if (!seen[id]) missing.push(id);
    expect(missing).toEqual([]);
    expect(others).toBe(0);
    commitPositions = [...new Set(commitPositions)];
    expect(commitPositions).toEqual([ROWS]);
  });

  it('loses nothing committed and produces nothing rolled back across kill -9 and a cut connection', async () => {
    const f = await prepared('kill', `CREATE TABLE k (id bigint PRIMARY KEY, v text, tx integer)`);
    let d = capture(f);
    let next = 1;
    let abortedNext = 1;
    let txs = 0;
    let working = true;
    const client = new (await import('pg')).default.Client(f.url);
    await client.connect();
    const workload = (async () => {
      try {
        while (working) {
          const kind = Math.random();
          txs++;
          if (kind < 0.2) {
            // Rolled back: negative ids must never appear in Kafka.
            const n = 1 + Math.floor(Math.random() * 50);
            await client.query('BEGIN');
            await client.query(`INSERT INTO k SELECT -g, 'aborted', $2 FROM generate_series($1::bigint, $1::bigint + $3 - 1) g`, [abortedNext, txs, n]);
            abortedNext += n;
            await client.query('ROLLBACK');
          } else {
            const n = kind > 0.99 ? 10_000 : 1 + Math.floor(Math.random() * 50);
            await client.query(`INSERT INTO k SELECT g, md5(g::text), $3 FROM generate_series($1::bigint, $1::bigint + $2 - 1) g`, [next, n, txs]);
            next += n;
          }
        }
      } finally {
        await client.end();
      }
    })();

    // kill -9 at random moments, restart each time; once, cut the replication connection instead.
    for (let round = 0; round < 5; round++) {
      await new Promise((r) => setTimeout(r, 1_000 + Math.random() * 4_000));
      if (round === 2) {
        await query(f.url, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, [f.name]);
        continue;
      }
      d.child.kill('SIGKILL');
      await d.exited;
      d = capture(f);
    }
    working = false;
    await workload;
    await caughtUp(f, d);
    expect(await stop(d)).toBe(0);

    const committed = await query<{ id: string }>(f.url, 'SELECT id::text FROM k');
    const inKafka = new Set<string>();
    const negatives: string[] = [];
    // Per transaction: positions seen and the COMMIT marker's count, to check completeness.
    const positions = new Map<number, Set<number>>();
    const counts = new Map<number, number>();
    await scanTopic(f.name, ({ ev }) => {
      if (ev.op === 'INSERT' && ev.table === 'k') {
        if (ev.new![0]!.startsWith('-')) negatives.push(ev.new![0]!);
        inKafka.add(ev.new![0]!);
        let s = positions.get(ev.commitLsn);
        if (!s) positions.set(ev.commitLsn, (s = new Set()));
        s.add(ev.position);
      } else if (ev.op === 'COMMIT') counts.set(ev.commitLsn, ev.position);
    });
    console.log(
      `kill -9 test: ${txs} transactions, ${committed.length} committed rows, ${abortedNext - 1} rolled-back rows, ${inKafka.size} distinct rows in Kafka`,
    );
    expect(negatives).toEqual([]);
    expect([...inKafka].sort()).toEqual(committed.map((r) => r.id).sort());
    for (const [lsn, s] of positions) {
      const n = counts.get(lsn);
      expect(n, `transaction ${lsn} has no COMMIT marker`).toBeDefined();
      expect(s.size, `transaction ${lsn} is incomplete`).toBe(n);
    }
  });
});
