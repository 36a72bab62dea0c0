import { spawn, type ChildProcess } from 'node:child_process';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatLsn, parseLsn } from '../../../src/util/lsn.js';
import {
  createDatabase,
  dropDatabase,
  fingerprint,
  pipelineEnv,
  rand,
  REPO,
  restorableLsn,
  runCli,
  stackEnvironment,
  startRun,
  waitFor,
  withClient,
} from './helpers.js';

// Chain of custody (issue 13, items 6-8): a break in the stream between Postgres and the archive
// is recorded the moment it is seen, and never restores silently. Each scenario runs the whole
// pipeline on a scratch database and breaks it the way an unlucky operator would:
//  - Kafka loses records the archiver had not read yet (retention shorter than an archiver outage);
//  - the topic is deleted and `cdp setup` creates it again;
//  - the slot is dropped (failover, major upgrade) and `cdp setup` creates it again.
// Each time: `status --check` and `verify` report the gap, a restore whose replay crosses it exits
// 3 naming it, a point before it still restores exactly, and after a new base a point after it
// restores exactly (whole table contents compared, not counts).

const dbs: string[] = [];

function kafka(): Kafka {
  return new Kafka({ clientId: 'chain-test', brokers: (process.env.CDP_KAFKA_BROKERS ?? '127.0.0.1:9092').split(','), logLevel: logLevel.NOTHING });
}

function spawnCdp(cmd: string, env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [`${REPO}bin/cdp.mjs`, cmd], {
    env: { ...process.env, ...stackEnvironment(), CDP_LOG_FORMAT: 'json', CDP_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

async function stop(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  await exited;
}

async function currentLsn(url: string): Promise<number> {
  return withClient(url, async (c) => parseLsn((await c.query('SELECT pg_current_wal_lsn()::text AS l')).rows[0].l as string));
}

async function waitRestorable(env: Record<string, string>, url: string): Promise<number> {
  const lsn = await currentLsn(url);
  return waitFor(`restorable point past ${lsn}`, async () => {
    const p = await restorableLsn(env);
    return p !== undefined && p >= lsn ? p : undefined;
  });
}

async function insert(url: string, from: number, to: number): Promise<void> {
  await withClient(url, async (c) => {
    for (let i = from; i <= to; i++) await c.query(`INSERT INTO items VALUES ($1::int, md5($1::int::text))`, [i]);
    await c.query(`UPDATE items SET v = v || '+' WHERE id % 7 = 0`);
  });
}

async function source(url: string) {
  return withClient(url, fingerprint);
}

/** Restores into a fresh database; returns the CLI result and, on success, its fingerprint. */
async function restore(env: Record<string, string>, args: string[]) {
  const target = `${env.CDP_SLOT}_r${dbs.length}`;
  dbs.push(target);
  const into = await createDatabase(target);
  const r = await runCli(['restore', '--into', into, ...args], env);
  return { ...r, fp: r.code === 0 ? await withClient(into, fingerprint) : undefined };
}

async function pipeline(kind: string) {
  const name = `chain_${kind}_${rand()}`;
  const url = await createDatabase(name);
  dbs.push(name);
  const env = pipelineEnv(name, url, 'test-chain');
  await withClient(url, (c) => c.query('CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL)'));
  const setup = await runCli(['setup'], env);
  expect(setup.code, setup.stderr).toBe(0);
  return { name, url, env };
}

beforeAll(() => {
  stackEnvironment();
});

afterAll(async () => {
  for (const d of dbs) await dropDatabase(d);
});

describe('chain of custody: a gap in the stream is never silent', () => {
  it('retention: records deleted from Kafka during an archiver outage are a recorded gap; restore refuses to cross it, restores before it, and after a new base', async () => {
    const { url, env } = await pipeline('ret');
    const capture = spawnCdp('capture', env);
    let archive: ChildProcess | undefined = spawnCdp('archive', env);
    try {
      await insert(url, 1, 20);
      const before = await waitRestorable(env, url);
      const fpBefore = await source(url);
      await stop(archive);

      // The archiver is down; capture goes on into Kafka, then Kafka loses everything it holds.
      await insert(url, 21, 60);
      const produced = await currentLsn(url);
      await waitFor('capture to confirm the inserts', () =>
        withClient(url, async (c) => {
          const r = await c.query(`SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1`, [env.CDP_SLOT]);
          return parseLsn(r.rows[0].l as string) >= produced;
        }),
      );
      const admin = kafka().admin();
      await admin.connect();
      try {
        const offsets = await admin.fetchTopicOffsets(env.CDP_TOPIC!);
        await admin.deleteTopicRecords({ topic: env.CDP_TOPIC!, partitions: offsets.map((o) => ({ partition: o.partition, offset: o.high })) });
      } finally {
        await admin.disconnect();
      }

      // Seen before the archiver is back: the group's committed offsets are below the log start.
      const early0 = await runCli(['status', '--check'], env);
      expect(early0.code, early0.stdout + early0.stderr).toBe(3);
      expect(early0.stderr).toMatch(/Kafka deleted \d+ record\(s\) before the archive read them \(partition \d+ offsets \d+\.\.\d+/);

      archive = spawnCdp('archive', env);
      const gaps = await waitFor('the gap to be recorded', async () => {
        const r = await runCli(['status', '--json'], env);
        const g = (JSON.parse(r.stdout) as { gaps: Array<{ kind: string; key: string; covered: boolean }> }).gaps;
        return g.length > 0 ? g : undefined;
      });
      expect(gaps.every((g) => g.kind === 'retention' && !g.covered)).toBe(true);
      await insert(url, 61, 70);
      await waitRestorable(env, url);

      const check = await runCli(['status', '--check'], env);
      expect(check.code, check.stdout + check.stderr).toBe(3);
      expect(check.stderr).toMatch(/retention gap partition \d+ offsets \d+\.\.\d+/);
      const verify = await runCli(['verify'], env);
      expect(verify.code, verify.stdout + verify.stderr).toBe(3);
      expect(JSON.parse(verify.stdout).breaks.length).toBeGreaterThan(0);

      const latest = await restore(env, ['--latest']);
      expect(latest.code, latest.stderr).toBe(3);
      expect(latest.stderr).toMatch(/crosses a break in the archive: retention gap/);
      expect(latest.stderr).toMatch(/gaps\/[0-9A-F]{16}-retention-/);

      const early = await restore(env, ['--lsn', formatLsn(before)]);
      expect(early.code, early.stderr).toBe(0);
      expect(early.fp).toEqual(fpBefore);

      const base = await runCli(['basebackup'], env);
      expect(base.code, base.stderr).toBe(0);
      await insert(url, 71, 80);
      await waitRestorable(env, url);
      const fpAfter = await source(url);
      const after = await restore(env, ['--latest']);
      expect(after.code, after.stderr).toBe(0);
      expect(after.fp).toEqual(fpAfter);

      // Covered by a base: listed, no longer failing the check.
      const check2 = await runCli(['status', '--check'], env);
      expect(check2.code, check2.stdout + check2.stderr).toBe(0);
      const verify2 = await runCli(['verify'], env);
      expect(verify2.code, verify2.stdout + verify2.stderr).toBe(0);
      expect((JSON.parse(verify2.stdout).breaks as Array<{ covered: boolean }>).every((b) => b.covered)).toBe(true);
    } finally {
      await stop(archive);
      await stop(capture);
    }
  });

  it("retention before anything was archived: Kafka lost the first records of every partition; no silent partial restore (the issue's 20 of 60 rows)", async () => {
    const { url, env } = await pipeline('ret0');
    const capture = spawnCdp('capture', env);
    let archive: ChildProcess | undefined;
    try {
      const admin = kafka().admin();
      await admin.connect();
      try {
        await insert(url, 1, 40);
        const lsn = await currentLsn(url);
        await waitFor('capture to confirm the inserts', () =>
          withClient(url, async (c) => {
            const r = await c.query(`SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1`, [env.CDP_SLOT]);
            return parseLsn(r.rows[0].l as string) >= lsn;
          }),
        );
        const offsets = await admin.fetchTopicOffsets(env.CDP_TOPIC!);
        await insert(url, 41, 60);
        // Retention takes the first 40 rows' records before any archiver read them.
        await admin.deleteTopicRecords({ topic: env.CDP_TOPIC!, partitions: offsets.map((o) => ({ partition: o.partition, offset: o.high })) });
      } finally {
        await admin.disconnect();
      }
      archive = spawnCdp('archive', env);
      await waitRestorable(env, url);
      const check = await runCli(['status', '--check'], env);
      expect(check.code, check.stdout + check.stderr).toBe(3);
      const latest = await restore(env, ['--latest']);
      expect(latest.code, `${latest.stderr} restored ${JSON.stringify(latest.fp)}`).toBe(3);
      expect(latest.stderr).toMatch(/crosses a break in the archive: retention gap/);

      const base = await runCli(['basebackup'], env);
      expect(base.code, base.stderr).toBe(0);
      await insert(url, 61, 70);
      await waitRestorable(env, url);
      const fpAfter = await source(url);
      const after = await restore(env, ['--latest']);
      expect(after.code, after.stderr).toBe(0);
      expect(after.fp).toEqual(fpAfter);
    } finally {
      await stop(archive);
      await stop(capture);
    }
  });

  it('topic recreated: setup starts a new topic epoch and records the break; no silent restore across it; exact from a later base', async () => {
    const { url, env } = await pipeline('topic');
    let run: ChildProcess | undefined = startRun(env);
    try {
      await insert(url, 1, 30);
      const before = await waitRestorable(env, url);
      const fpBefore = await source(url);
      await stop(run);
      await insert(url, 31, 40);

      const admin = kafka().admin();
      await admin.connect();
      try {
        await admin.deleteTopics({ topics: [env.CDP_TOPIC!] });
        await waitFor('the topic to be gone', async () => !(await admin.listTopics()).includes(env.CDP_TOPIC!));
      } finally {
        await admin.disconnect();
      }
      const setup = await runCli(['setup', '--no-basebackup'], env);
      expect(setup.code, setup.stderr).toBe(0);
      expect(setup.stderr).toMatch(/stream was broken/);

      run = startRun(env);
      await insert(url, 41, 50);
      await waitRestorable(env, url);

      const check = await runCli(['status', '--check'], env);
      expect(check.code, check.stdout + check.stderr).toBe(3);
      expect(check.stderr).toMatch(/topic-recreated gap/);
      const latest = await restore(env, ['--latest']);
      expect(latest.code, latest.stderr).toBe(3);
      expect(latest.stderr).toMatch(/crosses a break in the archive: topic-recreated gap/);

      const early = await restore(env, ['--lsn', formatLsn(before)]);
      expect(early.code, early.stderr).toBe(0);
      expect(early.fp).toEqual(fpBefore);

      const base = await runCli(['basebackup'], env);
      expect(base.code, base.stderr).toBe(0);
      await insert(url, 51, 60);
      await waitRestorable(env, url);
      const fpAfter = await source(url);
      const after = await restore(env, ['--latest']);
      expect(after.code, after.stderr).toBe(0);
      expect(after.fp).toEqual(fpAfter);

      const verify = await runCli(['verify'], env);
      expect(verify.code, verify.stdout + verify.stderr).toBe(0);
      const breaks = JSON.parse(verify.stdout).breaks as Array<{ kind: string; covered: boolean }>;
      expect(breaks.map((b) => [b.kind, b.covered])).toEqual([['topic-recreated', true]]);
      const status = JSON.parse((await runCli(['status', '--json'], env)).stdout);
      expect(status.generation).toEqual({ generation: 1, topicEpoch: 1 });
    } finally {
      await stop(run);
    }
  });

  it('slot dropped and recreated by setup: the changes made without a slot are a recorded gap; no silent restore across it; exact from a later base', async () => {
    const { url, env } = await pipeline('slot');
    let run: ChildProcess | undefined = startRun(env);
    try {
      await insert(url, 1, 30);
      const before = await waitRestorable(env, url);
      const fpBefore = await source(url);
      await stop(run);
      await withClient(url, (c) => c.query('SELECT pg_drop_replication_slot($1)', [env.CDP_SLOT]));
      await insert(url, 31, 40); // in no stream: lost to the archive

      const setup = await runCli(['setup', '--no-basebackup'], env);
      expect(setup.code, setup.stderr).toBe(0);
      run = startRun(env);
      await insert(url, 41, 50);
      await waitRestorable(env, url);

      const check = await runCli(['status', '--check'], env);
      expect(check.code, check.stdout + check.stderr).toBe(3);
      expect(check.stderr).toMatch(/slot-recreated gap/);
      const verify = await runCli(['verify'], env);
      expect(verify.code, verify.stdout + verify.stderr).toBe(3);
      expect(verify.stdout).toMatch(/slot-recreated gap/);
      const latest = await restore(env, ['--latest']);
      expect(latest.code, latest.stderr).toBe(3);
      expect(latest.stderr).toMatch(/crosses a break in the archive: slot-recreated gap/);

      const early = await restore(env, ['--lsn', formatLsn(before)]);
      expect(early.code, early.stderr).toBe(0);
      expect(early.fp).toEqual(fpBefore);

      const base = await runCli(['basebackup'], env);
      expect(base.code, base.stderr).toBe(0);
      await insert(url, 51, 60);
      await waitRestorable(env, url);
      const fpAfter = await source(url);
      const after = await restore(env, ['--latest']);
      expect(after.code, after.stderr).toBe(0);
      expect(after.fp).toEqual(fpAfter);
      const status = JSON.parse((await runCli(['status', '--json'], env)).stdout);
      expect(status.generation).toEqual({ generation: 1, topicEpoch: 0 });
    } finally {
      await stop(run);
    }
  });
});
