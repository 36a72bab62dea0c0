// Capture decode benchmark: ReplicationStream + pgoutput decoder (no Kafka) against pg_recvlogical
// draining the same backlog, in the same run (DESIGN.md section 9: ratios, not absolute times).
//
//   npx tsx bench/capture-decode.ts [--inserts 300000] [--updates 150000] [--deletes 60000] [--rounds 2]
//
// Workload shaped like ANCHORS.md (bigint key, int, md5 text, timestamptz, numeric), in three
// transactions. All slots are created before the workload, so every reader decodes the same WAL.
// Rounds alternate which reader goes first, so neither always gets a cold or a warm page cache.
// Env: CDP_BENCH_PG_URL (admin URL, default postgres://postgres@127.0.0.1:5432/postgres),
// PG_RECVLOGICAL (path to the binary).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { pino } from 'pino';
import { pluginOptions, ReplicationStream } from '../src/pg/replication-stream.js';
import { formatLsn, parseLsn } from '../src/util/lsn.js';
import { plainLibpqUrl } from './lib/env.js';

const { values: args } = parseArgs({
  options: {
    inserts: { type: 'string', default: '300000' },
    updates: { type: 'string', default: '150000' },
    deletes: { type: 'string', default: '60000' },
    rounds: { type: 'string', default: '2' },
  },
});
const INSERTS = Number(args.inserts);
const UPDATES = Math.min(Number(args.updates), INSERTS);
const DELETES = Math.min(Number(args.deletes), INSERTS);
const ROUNDS = Math.max(1, Number(args.rounds));
const CHANGES = INSERTS + UPDATES + DELETES;

const ADMIN_URL = process.env.CDP_BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DB = `cdp_bench_${randomBytes(4).toString('hex')}`;
const PUB = 'bench_pub';
const log = pino({ level: 'warn' });

function dbUrl(database: string): string {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${database}`;
  return u.toString();
}

function findRecvlogical(): string {
  if (process.env.PG_RECVLOGICAL) return process.env.PG_RECVLOGICAL;
  for (const v of ['18', '17', '16', '15', '14']) {
    const p = `/usr/lib/postgresql/${v}/bin/pg_recvlogical`;
    if (existsSync(p)) return p;
  }
  return 'pg_recvlogical';
}

interface Result {
  reader: string;
  seconds: number;
  changes: number;
  rate: number;
  rssMb?: number;
  /** CPU time of this Node process while draining, as a share of wall time (1 = one core busy). */
  cpu?: number;
}

async function drainRecvlogical(slot: string, endpos: number): Promise<Result> {
  const bin = findRecvlogical();
  const argv = [
    '-d',
    plainLibpqUrl(dbUrl(DB)),
    '--slot',
    slot,
    '--start',
    '-o',
    'proto_version=1',
    '-o',
    `publication_names=${PUB}`,
    '-f',
    '/dev/null',
    '--endpos',
    formatLsn(endpos),
    '--no-loop',
  ];
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(bin, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`pg_recvlogical exited with ${code ?? signal}`))));
  });
  const seconds = (performance.now() - t0) / 1000;
  return { reader: 'pg_recvlogical', seconds, changes: CHANGES, rate: CHANGES / seconds };
}

async function drainOurs(slot: string, endpos: number, serverVersionNum: number): Promise<Result> {
  let rss = 0;
  const sampler = setInterval(() => (rss = Math.max(rss, process.memoryUsage().rss)), 100);
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const rs = new ReplicationStream({ connectionString: dbUrl(DB), log });
  let changes = 0;
  try {
    await rs.start(slot, 0, pluginOptions(PUB, serverVersionNum));
    // Stop where pg_recvlogical --endpos stops: a record at or past endpos, or a keepalive there.
    for await (const ev of rs) {
      if (ev.kind === 'data') {
        const m = ev.message;
        if (m.tag === 'insert' || m.tag === 'update' || m.tag === 'delete') changes++;
        else if (m.tag === 'commit') rs.confirm(m.endLsn);
        if (ev.walStart >= endpos) break;
      } else if (ev.walEnd >= endpos) {
        break;
      }
    }
  } finally {
    clearInterval(sampler);
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await rs.close();
  if (changes !== CHANGES) throw new Error(`ReplicationStream saw ${changes} changes, expected ${CHANGES}`);
  return { reader: 'ReplicationStream+decoder', seconds, changes, rate: changes / seconds, rssMb: rss / 2 ** 20, cpu: (cpu.user + cpu.system) / 1e6 / seconds };
}

async function main(): Promise<void> {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  const level = (await admin.query<{ wal_level: string }>('SHOW wal_level')).rows[0]!.wal_level;
  if (level !== 'logical') throw new Error(`wal_level is ${level}; run: bash deploy/local/stack.sh up`);
  const serverVersionNum = Number((await admin.query<{ v: string }>('SHOW server_version_num')).rows[0]!.v);
  await admin.query(`CREATE DATABASE ${DB}`);
  const db = new pg.Client({ connectionString: dbUrl(DB) });
  const slots: string[] = [];
  try {
    await db.connect();
    await db.query(`CREATE TABLE bench (id bigint PRIMARY KEY, n int NOT NULL, h text NOT NULL, ts timestamptz NOT NULL, amount numeric NOT NULL)`);
    await db.query(`CREATE PUBLICATION ${PUB} FOR TABLE bench`);
    for (let r = 0; r < ROUNDS; r++) {
      for (const who of ['recv', 'ours']) {
        const slot = `${DB}_${who}_${r}`;
        await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
        slots.push(slot);
      }
    }

    process.stderr.write(`workload: ${INSERTS} inserts, ${UPDATES} updates, ${DELETES} deletes in 3 transactions...\n`);
    const w0 = performance.now();
    const startLsn = parseLsn((await db.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l);
    await db.query(
      `INSERT INTO bench SELECT g, g % 1000, md5(g::text), timestamptz '2024-01-01' + g * interval '1 second', g * 1.37 FROM generate_series(1, $1) g`,
      [INSERTS],
    );
    await db.query(`UPDATE bench SET n = n + 1, amount = amount + 1 WHERE id <= $1`, [UPDATES]);
    await db.query(`DELETE FROM bench WHERE id > $1`, [INSERTS - DELETES]);
    const endpos = parseLsn((await db.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l);
    process.stderr.write(
      `workload done in ${((performance.now() - w0) / 1000).toFixed(1)} s, ${((endpos - startLsn) / 2 ** 20).toFixed(0)} MB of WAL, endpos ${formatLsn(endpos)}\n`,
    );

    const results: Result[][] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const recv = () => drainRecvlogical(`${DB}_recv_${r}`, endpos);
      const ours = () => drainOurs(`${DB}_ours_${r}`, endpos, serverVersionNum);
      const round: Result[] = [];
      if (r % 2 === 0) {
        round.push(await recv());
        round.push(await ours());
      } else {
        round.push(await ours());
        round.push(await recv());
      }
      results.push(round);
      for (const x of round) {
        process.stdout.write(
          `round ${r + 1}  ${x.reader.padEnd(26)} ${x.seconds.toFixed(2).padStart(7)} s  ${Math.round(x.rate).toLocaleString('en-US').padStart(9)} changes/s` +
            (x.rssMb ? `  peak RSS ${x.rssMb.toFixed(0)} MB` : '') +
            (x.cpu ? `  node CPU ${(x.cpu * 100).toFixed(0)}% of one core` : '') +
            '\n',
        );
      }
    }
    const sum = (who: string) =>
      results
        .flat()
        .filter((x) => x.reader === who)
        .reduce((a, x) => a + x.seconds, 0);
    const recvS = sum('pg_recvlogical');
    const oursS = sum('ReplicationStream+decoder');
    process.stdout.write(
      `\n${CHANGES.toLocaleString('en-US')} changes x ${ROUNDS} round(s): pg_recvlogical ${Math.round((CHANGES * ROUNDS) / recvS).toLocaleString('en-US')} changes/s, ` +
        `ReplicationStream+decoder ${Math.round((CHANGES * ROUNDS) / oursS).toLocaleString('en-US')} changes/s, ratio ${(recvS / oursS).toFixed(2)}x\n`,
    );
  } finally {
    for (const slot of slots) {
      await db
        .query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, [slot])
        .catch(() => undefined);
    }
    for (const slot of slots) {
      for (let i = 0; i < 50; i++) {
        try {
          await db.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 100)); // still active for a moment after terminate
        }
      }
    }
    await db.end().catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    await admin.end();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`capture-decode benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
