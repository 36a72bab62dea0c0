import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, rand, REPO, runCli, stackEnvironment, startRun, withClient, type CliResult } from '../restore/helpers.js';
import { stopDaemon, usePipelineDatabase, waitRestorablePast, walPosition } from './pipeline.js';

// Issue 14, fail fast: what cannot fix itself (a wrong address, wrong credentials, a missing
// bucket, a busy metrics port, a table that exists nowhere) ends a command with exit 2 and one line
// naming the setting, in seconds; `status` exits 1 when a component is unreachable.

/** Generous for a loaded CI machine; the design target is 10 s (measured values are printed). */
const BOUND_MS = 20_000;
const REFUSED_PG = 'postgres://postgres@127.0.0.1:1/postgres';
const REFUSED_HTTP = 'http://127.0.0.1:1';

async function timed(args: string[], env: Record<string, string>): Promise<CliResult & { ms: number }> {
  const t = Date.now();
  const r = await runCli(args, env, 60_000);
  return { ...r, ms: Date.now() - t };
}

/** Exactly one line on stderr, and no stack trace. */
function expectOneLine(r: CliResult) {
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe('fail fast at start-up (exit 2, one line, within seconds)', () => {
  beforeAll(() => {
    stackEnvironment();
  });

  it('cdp --version prints the version of package.json', async () => {
    const { version } = JSON.parse(readFileSync(`${REPO}package.json`, 'utf8')) as { version: string };
    const r = await runCli(['--version'], {});
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(version);
  });

  it('a wrong source, Kafka, S3 endpoint or bucket: exit 2 naming the setting, for every command that needs it', async () => {
    const bucket = `no-such-bucket-${rand()}`;
    const cases: Array<{ what: string; args: string[]; env: Record<string, string>; says: RegExp }> = [
      { what: 'capture, source refused', args: ['capture'], env: { CDP_SOURCE_URL: REFUSED_PG }, says: /CDP_SOURCE_URL/ },
      {
        what: 'run, source auth',
        args: ['run'],
        env: { CDP_SOURCE_URL: 'postgres://no_such_role_h8:x@127.0.0.1:5432/postgres' },
        says: /authentication failed.*CDP_SOURCE_URL/,
      },
      { what: 'basebackup, source refused', args: ['basebackup'], env: { CDP_SOURCE_URL: REFUSED_PG }, says: /CDP_SOURCE_URL/ },
      { what: 'capture, Kafka refused', args: ['capture'], env: { CDP_KAFKA_BROKERS: '127.0.0.1:1' }, says: /CDP_KAFKA_BROKERS/ },
      {
        what: 'archive, Kafka unknown host',
        args: ['archive'],
        env: { CDP_KAFKA_BROKERS: 'no-such-host.invalid:9092' },
        says: /unknown host.*CDP_KAFKA_BROKERS/,
      },
      { what: 'run, Kafka refused', args: ['run'], env: { CDP_KAFKA_BROKERS: '127.0.0.1:1' }, says: /CDP_KAFKA_BROKERS/ },
      { what: 'archive, S3 refused', args: ['archive'], env: { CDP_S3_ENDPOINT: REFUSED_HTTP }, says: /CDP_S3_ENDPOINT/ },
      {
        what: 'restore, S3 refused',
        args: ['restore', '--into', REFUSED_PG, '--latest', '--dry-run'],
        env: { CDP_S3_ENDPOINT: REFUSED_HTTP },
        says: /CDP_S3_ENDPOINT/,
      },
      {
        what: 'verify, S3 unknown host',
        args: ['verify'],
        env: { CDP_S3_ENDPOINT: 'http://no-such-host.invalid:9000' },
        says: /unknown host.*CDP_S3_ENDPOINT/,
      },
      { what: 'verify, missing bucket', args: ['verify'], env: { CDP_S3_BUCKET: bucket }, says: new RegExp(`bucket ${bucket} does not exist.*CDP_S3_BUCKET`) },
      { what: 'restore, missing bucket', args: ['restore', '--into', REFUSED_PG, '--latest'], env: { CDP_S3_BUCKET: bucket }, says: /CDP_S3_BUCKET/ },
      { what: 'basebackup, missing bucket', args: ['basebackup'], env: { CDP_S3_BUCKET: bucket }, says: /CDP_S3_BUCKET/ },
      { what: 'status, missing bucket', args: ['status'], env: { CDP_S3_BUCKET: bucket }, says: /CDP_S3_BUCKET/ },
      {
        what: 'status, source auth',
        args: ['status'],
        env: { CDP_SOURCE_URL: 'postgres://no_such_role_h8:x@127.0.0.1:5432/postgres' },
        says: /authentication failed/,
      },
    ];
    // One after the other: each time is then the command's own, not 14 processes starting at once.
    const results: Array<{ c: (typeof cases)[number]; r: CliResult & { ms: number } }> = [];
    for (const c of cases) results.push({ c, r: await timed(c.args, c.env) });
    console.log(`fail-fast exit times: ${results.map(({ c, r }) => `${c.what} ${r.ms} ms (exit ${r.code})`).join('; ')}`);
    for (const { c, r } of results) {
      expect(r.code, `${c.what}: ${r.stderr}`).toBe(2);
      expect(r.ms, c.what).toBeLessThan(BOUND_MS);
      expect(r.stderr, c.what).toMatch(c.says);
      if (c.args[0] !== 'status') expectOneLine(r);
      else expect(r.stderr, c.what).not.toMatch(/\n\s+at /);
    }
  });

  it('status exits 1 when a component is unreachable (refused), and still prints its report', async () => {
    const [kafka, s3, source] = await Promise.all([
      timed(['status', '--json'], { CDP_KAFKA_BROKERS: '127.0.0.1:1' }),
      timed(['status', '--json'], { CDP_S3_ENDPOINT: REFUSED_HTTP }),
      timed(['status'], { CDP_SOURCE_URL: REFUSED_PG }),
    ]);
    console.log(`status with an unreachable component: kafka ${kafka.ms} ms, s3 ${s3.ms} ms, source ${source.ms} ms`);
    expect(kafka.code, kafka.stderr).toBe(1);
    expect(kafka.ms).toBeLessThan(BOUND_MS);
    const report = JSON.parse(kafka.stdout) as { consumer: { error?: string }; unreachable: Array<{ component: string }> };
    expect(report.consumer.error).toMatch(/no Kafka broker reachable/);
    expect(report.unreachable.map((u) => u.component)).toEqual(['kafka']);
    expect(s3.code, s3.stderr).toBe(1);
    expect(s3.ms).toBeLessThan(BOUND_MS);
    expect((JSON.parse(s3.stdout) as { unreachable: Array<{ component: string }> }).unreachable.map((u) => u.component)).toEqual(['s3']);
    expect(source.code, source.stderr).toBe(1);
    expect(source.ms).toBeLessThan(BOUND_MS);
    expect(source.stdout).toMatch(/slot\s+source: .*connection refused/);
    expect(source.stderr).toMatch(/source unreachable/);
  });

  it('a busy metrics port: one line naming metrics.port / CDP_METRICS_PORT, exit 2', async () => {
    const holder: Server = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', () => resolve()));
    const port = String((holder.address() as { port: number }).port);
    try {
      const [capture, run] = await Promise.all([timed(['capture'], { CDP_METRICS_PORT: port }), timed(['run'], { CDP_METRICS_PORT: port })]);
      for (const r of [capture, run]) {
        expect(r.code, r.stderr).toBe(2);
        expect(r.stderr).toMatch(new RegExp(`metrics endpoint 127\\.0\\.0\\.1:${port} is already in use.*metrics\\.port / CDP_METRICS_PORT`));
        expectOneLine(r);
      }
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  });
});

describe('restore --tables: a table that exists nowhere is refused (exit 2)', () => {
  const db = usePipelineDatabase({
    label: 'ff',
    prefix: 'test-failfast',
    schema: `CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 100) g`,
  });
  const name = db.name;
  db.dropAfter.push(...['nosuch', 'later', 'items'].map((s) => `${name}_${s}`));

  it('refuses a table neither in the base nor created by the stream; restores one created after the base', async () => {
    const { url, env } = db;
    const setup = await runCli(['setup'], env);
    expect(setup.code, setup.stderr).toBe(0);
    const run = (db.run = startRun(env));
    await withClient(url, async (c) => {
      await c.query('CREATE TABLE later (id int PRIMARY KEY, v text)');
      await c.query(`INSERT INTO later SELECT g, 'x' || g FROM generate_series(1, 10) g`);
      await c.query(`UPDATE items SET v = 'changed' WHERE id <= 5`);
    });
    await waitRestorablePast(env, await walPosition(url), 'the restorable point');
    await stopDaemon(run);

    const nosuch = await runCli(['restore', '--into', await createDatabase(`${name}_nosuch`), '--latest', '--tables', 'items,nosuch'], env);
    expect(nosuch.code, nosuch.stderr).toBe(2);
    expect(nosuch.stderr).toMatch(/--tables: public\.nosuch is neither in base .* nor created by the stream/);
    expect(nosuch.stderr).not.toMatch(/\n\s+at /);

    const laterUrl = await createDatabase(`${name}_later`);
    const later = await runCli(['restore', '--into', laterUrl, '--latest', '--tables', 'later'], env);
    expect(later.code, later.stderr).toBe(0);
    expect(await withClient(laterUrl, async (c) => Number((await c.query('SELECT count(*) AS n FROM later')).rows[0].n))).toBe(10);

    const itemsUrl = await createDatabase(`${name}_items`);
    const items = await runCli(['restore', '--into', itemsUrl, '--latest', '--tables', 'public.items'], env);
    expect(items.code, items.stderr).toBe(0);
    expect(await withClient(itemsUrl, async (c) => Number((await c.query(`SELECT count(*) AS n FROM items WHERE v = 'changed'`)).rows[0].n))).toBe(5);
  });
});
