import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { formatLsn, parseLsn } from '../../../src/util/lsn.js';
import { archiveRoot } from '../../../src/config/config.js';
import { createStore, getObject, listObjects } from '../../../src/s3/client.js';
import { createDatabase, fingerprint, runCli, silentLog, startRun, testConfig, waitFor, withClient } from '../restore/helpers.js';
import { usePipelineDatabase, walPosition } from './pipeline.js';

// The operator's commands on a real archive: status (and its RPO check), verify (and what it finds
// in an altered segment), replicate (a second bucket holding the same objects), prune (what it keeps
// is still restorable), and `cdp run` stopping cleanly on SIGTERM.

const db = usePipelineDatabase({
  label: 'ops',
  prefix: 'test-ops',
  schema: `CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 500) g`,
});
const name = db.name;
const restored = `${name}_r`;
db.dropAfter.push(restored);

async function status(extra: Record<string, string> = {}) {
  const r = await runCli(['status', '--json'], { ...db.env, ...extra });
  return { code: r.code, report: JSON.parse(r.stdout) as Record<string, any> };
}

/** The status report once its restorable point is at or past the source's current WAL position. */
async function waitRestorable() {
  const lsn = await walPosition(db.url);
  return waitFor(`restorable point past ${formatLsn(lsn)}`, async () => {
    const { report } = await status();
    return report.restorablePoint && parseLsn(report.restorablePoint.lsn) >= lsn ? report : undefined;
  });
}

describe('operations on a live archive', () => {
  it('setup, run, status: the restorable point follows the source and the RPO is within the objective', async () => {
    const setup = await runCli(['setup'], db.env);
    expect(setup.code, setup.stderr).toBe(0);
    db.run = startRun(db.env);
    await withClient(db.url, async (c) => {
      for (let i = 0; i < 20; i++) {
        await c.query(`UPDATE items SET v = v || $1 WHERE id % 20 = $2`, [String(i), i]);
        await c.query(`INSERT INTO items VALUES ($1, 'new')`, [1000 + i]);
      }
    });
    const report = await waitRestorable();
    expect(report.database).toBe(name);
    expect(report.partitions).toHaveLength(2);
    expect(report.slot.active).toBe(true);
    expect(report.bases).toHaveLength(1);
    expect(report.rpoBreached).toBe(false);
    // The estimated time to restore the latest point: the base and the segments after it.
    expect(report.rto).toMatchObject({ objectiveSeconds: 3600, breached: false });
    expect(report.rto.segments).toBeGreaterThan(0);
    expect(report.rto.baseBytes).toBeGreaterThan(0);
    expect((await status()).code).toBe(0);
    const check = await runCli(['status', '--check'], db.env);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    // A replay slower than the objective allows (here: 1 byte/s against 1 s): --check exits 4.
    const slow = await runCli(['status', '--check'], { ...db.env, CDP_RTO_SECONDS: '1', CDP_STATUS_REPLAY_BYTES_PER_SECOND: '1' });
    expect(slow.code, slow.stdout + slow.stderr).toBe(4);
    expect(slow.stderr).toMatch(/over the RTO objective of 1 s: take a base/);
  });

  it('a second base, then SIGTERM: cdp run stops cleanly with exit 0', async () => {
    const base = await runCli(['basebackup'], db.env);
    expect(base.code, base.stderr).toBe(0);
    await withClient(db.url, (c) => c.query(`DELETE FROM items WHERE id % 7 = 0`));
    await waitRestorable();
    const exited = new Promise<number | null>((resolve) => db.run!.on('exit', (code) => resolve(code)));
    db.run!.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('status --check exits 4 once the restorable point is older than the objective', async () => {
    // Nothing captures any more, so the restorable point ages; poll instead of sleeping a fixed time.
    const code = await waitFor('RPO breach', async () => {
      const r = await runCli(['status', '--check'], { ...db.env, CDP_RPO_SECONDS: '1' });
      return r.code === 4 ? r.code : undefined;
    });
    expect(code).toBe(4);
  });

  it('verify finds the archive whole', async () => {
    const r = await runCli(['verify'], db.env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.ok).toBe(true);
    expect(out.bases).toBe(2);
    expect(out.segments).toBeGreaterThan(0);
  });

  it('verify --deep test-restores the latest point into a scratch database and drops it', async () => {
    const before = await withClient(db.url, (c) => c.query(`SELECT count(*)::int AS n FROM pg_database WHERE datname LIKE 'cdp_verify_%'`));
    const r = await runCli(['verify', '--deep'], db.env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.ok).toBe(true);
    expect(out.deep).toMatch(/^test restore of the latest point into cdp_verify_[0-9a-f]+ succeeded$/);
    const after = await withClient(db.url, (c) => c.query(`SELECT count(*)::int AS n FROM pg_database WHERE datname LIKE 'cdp_verify_%'`));
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('replicate copies every object to a second bucket, and a second run copies only the mutable pointers', async () => {
    const cfg = testConfig(db.env);
    const store = createStore(cfg, silentLog);
    const bucket = `offsite-${name.replace(/_/g, '-')}`;
    await store.client.send(new CreateBucketCommand({ Bucket: bucket }));
    const first = await runCli(['replicate', '--to-bucket', bucket], db.env);
    expect(first.code, first.stderr).toBe(0);
    const root = archiveRoot(cfg);
    const keys = async (b: string) => {
      const out: string[] = [];
      for await (const o of listObjects({ ...store, bucket: b }, `${root}/`)) out.push(o.key);
      return out;
    };
    const src = await keys(cfg.s3.bucket);
    expect(await keys(bucket)).toEqual(src);
    for (const k of src.filter((k) => k.endsWith('.avro')).slice(0, 3)) {
      expect((await getObject({ ...store, bucket }, k)).equals(await getObject(store, k))).toBe(true);
    }
    const second = JSON.parse((await runCli(['replicate', '--to-bucket', bucket], db.env)).stdout);
    const mutable = src.filter((k) => k.endsWith('/archive.json') || k.includes('/state/')).length;
    expect(second.copied).toBe(mutable);
    expect(second.alreadyThere).toBe(src.length - mutable);
  });

  it('prune removes the older base and the segments before the kept one; the latest point still restores exactly', async () => {
    const pruneEnv = { ...db.env, CDP_RETENTION_DAYS: '0.000000001' }; // the cutoff is now: both bases are "old"
    const before = (await status()).report.bases as Array<{ lsn: string }>;
    const dry = JSON.parse((await runCli(['prune', '--dry-run'], pruneEnv)).stdout);
    expect(dry.anchorBase).toBe(before[1]!.lsn);
    expect(dry.keys.some((k: string) => k.includes('/bases/') && k.endsWith('manifest.json'))).toBe(true);
    expect((await status()).report.bases).toHaveLength(2); // dry run deleted nothing
    const real = await runCli(['prune'], pruneEnv);
    expect(real.code, real.stderr).toBe(0);
    const after = (await status()).report.bases as Array<{ lsn: string }>;
    expect(after.map((b) => b.lsn)).toEqual([before[1]!.lsn]);
    expect((await runCli(['verify'], db.env)).code).toBe(0);

    const into = await createDatabase(restored);
    const r = await runCli(['restore', '--into', into, '--latest'], db.env);
    expect(r.code, r.stderr).toBe(0);
    const [a, b] = await Promise.all([withClient(db.url, fingerprint), withClient(into, fingerprint)]);
    expect(b).toEqual(a);
  });

  it('verify exits 3 and names the segment whose bytes were altered', async () => {
    const cfg = testConfig(db.env);
    const store = createStore(cfg, silentLog);
    let victim: string | undefined;
    for await (const o of listObjects(store, `${archiveRoot(cfg)}/segments/`)) {
      victim = o.key;
      break;
    }
    expect(victim).toBeDefined();
    const bytes = await getObject(store, victim!);
    bytes[bytes.length - 20] ^= 0xff;
    await store.client.send(new PutObjectCommand({ Bucket: store.bucket, Key: victim!, Body: bytes }));
    const r = await runCli(['verify'], db.env);
    expect(r.code).toBe(3);
    const out = JSON.parse(r.stdout);
    expect(out.ok).toBe(false);
    expect(out.problems.map((p: { what: string }) => p.what)).toContain(victim);
  });
});
