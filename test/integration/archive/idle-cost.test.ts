import { describe, expect, it } from 'vitest';
import { listSegments } from '../../../src/archive/catalog.js';
import { archiveRoot } from '../../../src/config/config.js';
import { createStore } from '../../../src/s3/client.js';
import { parseLsn } from '../../../src/util/lsn.js';
import { runCli, silentLog, startRun, testConfig, waitFor, withClient } from '../restore/helpers.js';
import { expectLatestRestores, stopDaemon, usePipelineDatabase, walPosition } from '../ops/pipeline.js';

// Issue 14, idle cheap: an idle database (capture's heartbeats, watermarks, nothing else) stores
// no segment for idleSegmentMaxAgeMs, while the restorable point keeps following the heartbeats
// (status stays honest: the archive is caught up). The held watermark-only segment must neither
// open a false gap nor hide a real one: the changes after an idle stretch restore exactly, verify
// finds the partition's offsets contiguous, and a stop stores what was held.

describe('idle cost', () => {
  const db = usePipelineDatabase({
    label: 'idle',
    prefix: 'test-idle',
    env: { CDP_IDLE_POINTER_INTERVAL_MS: '1000' },
    schema: 'CREATE TABLE t (id int PRIMARY KEY, v text)',
  });
  const name = db.name;

  const point = async () => {
    const s = await runCli(['status', '--json'], db.env, 60_000);
    const r = JSON.parse(s.stdout) as { restorablePoint: { lsn: string } | null; rpoSeconds: number | null };
    return { lsn: r.restorablePoint ? parseLsn(r.restorablePoint.lsn) : 0, rpo: r.rpoSeconds };
  };

  it('stores no segment while idle, keeps the restorable point fresh, and restores exactly after the idle stretch', async () => {
    const { url, env } = db;
    expect((await runCli(['setup', '--no-basebackup'], env)).code).toBe(0);
    const bb = await runCli(['basebackup'], env);
    expect(bb.code, bb.stderr).toBe(0);
    const run = (db.run = startRun(env));
    await withClient(url, (c) => c.query(`INSERT INTO t SELECT g, 'a' FROM generate_series(1, 50) g`));
    const first = await walPosition(url);
    await waitFor('the first rows restorable', async () => (await point()).lsn >= first, 120_000, 1_000);

    const cfg = testConfig(env);
    const store = createStore(cfg, silentLog);
    const root = archiveRoot(cfg);
    const segments = async () => {
      const out: string[] = [];
      for (let p = 0; p < 2; p++) for await (const s of listSegments(store, root, p)) out.push(s.key);
      return out.sort();
    };
    // Let the segments of the load and of the first idle watermarks settle, then watch 20 s of idle.
    await new Promise((r) => setTimeout(r, 3_000));
    const before = await segments();
    const idleFrom = await point();
    await new Promise((r) => setTimeout(r, 20_000));
    const after = await segments();
    const idleTo = await point();
    console.log(
      `idle 20 s: ${after.length - before.length} new segments; restorable point moved ${idleTo.lsn - idleFrom.lsn} bytes of WAL, RPO ${idleTo.rpo} s`,
    );
    expect(after).toEqual(before);
    // Honest RPO: the point follows the heartbeats (every 500 ms here) without new segments.
    expect(idleTo.lsn).toBeGreaterThan(idleFrom.lsn);
    expect(idleTo.rpo).not.toBeNull();
    expect(idleTo.rpo!).toBeLessThan(10);

    // A restore to the latest point while the idle segments are held (the point is past the last
    // stored segment's watermark in every partition): exact, nothing missing.
    await expectLatestRestores(env, url, `${name}_i`);

    // Changes after the idle stretch: restorable within seconds, and the archive restores exactly.
    await withClient(url, async (c) => {
      await c.query(`UPDATE t SET v = 'b' WHERE id % 2 = 0`);
      await c.query(`INSERT INTO t SELECT g, 'c' FROM generate_series(51, 80) g`);
    });
    const second = await walPosition(url);
    const t0 = Date.now();
    await waitFor('the changes after idle restorable', async () => (await point()).lsn >= second, 60_000, 250);
    console.log(`changes after idle restorable after ${Date.now() - t0} ms (status polled every 250 ms)`);
    await stopDaemon(run);
    expect(run.exitCode).toBe(0);

    const verify = await runCli(['verify'], env);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    await expectLatestRestores(env, url, `${name}_r`);
    store.client.destroy();
  }, 400_000);
});
