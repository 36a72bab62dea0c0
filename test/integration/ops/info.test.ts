import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { recordGap } from '../../../src/archive/chain.js';
import { listSegments } from '../../../src/archive/catalog.js';
import { syntheticBaseDir } from '../../../src/archive/layout.js';
import { archiveRoot } from '../../../src/config/config.js';
import type { InfoReport } from '../../../src/ops/info.js';
import { createStore, putOnce } from '../../../src/s3/client.js';
import { formatLsn } from '../../../src/util/lsn.js';
import { createDatabase, dropDatabase, fingerprint, rand, runCli, silentLog, startRun, testConfig, withClient } from '../restore/helpers.js';
import { stopDaemon, usePipelineDatabase, waitRestorablePast, walPosition } from './pipeline.js';

// Issue 14, `cdp info`: where do I stand, from the archive alone. A real pipeline makes a base
// (setup), segments (run), a recorded break after them, and a second base after the break; a
// synthetic base (the manifest shape cdp compact writes) is added beside. info must list every
// base with its kind and size, give each the range it can restore (the first one stops at the
// break, the later ones reach the restorable point), the same restorable point as status, and the
// segment counts and bytes the listing shows.

describe('cdp info', () => {
  const db = usePipelineDatabase({
    label: 'info',
    prefix: 'test-info',
    schema: `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g`,
  });
  const name = db.name;

  it('lists bases (source and synthetic) with sizes and restorable ranges, segments per partition, and the break', async () => {
    const { url, env } = db;
    expect((await runCli(['setup'], env)).code).toBe(0);
    const run = (db.run = startRun(env));
    let runErr = '';
    run.stderr!.on('data', (d: Buffer) => (runErr = (runErr + d.toString()).slice(-4000)));
    await withClient(url, async (c) => {
      for (let i = 0; i < 5; i++) await c.query(`UPDATE t SET v = v || '${i}' WHERE id % 3 = ${i % 3}`);
    });
    const until = await walPosition(url);
    await waitRestorablePast(env, until, 'the restorable point past the updates').catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; cdp run said: ${runErr}`);
    });
    // A break recorded now (as the archiver would for records Kafka deleted), then a base after it,
    // and the archive past that base.
    const cfg = testConfig(env);
    const store = createStore(cfg, silentLog);
    const root = archiveRoot(cfg);
    const gap = await recordGap(store, root, {
      kind: 'retention',
      generation: 0,
      topicEpoch: 0,
      partition: 0,
      fromOffset: '1000',
      toOffset: '1001',
      afterLsn: until,
      afterTime: Date.now() * 1000,
      untilLsn: until,
      detail: 'test: a break recorded by hand',
    });
    const bb = await runCli(['basebackup'], env);
    expect(bb.code, bb.stderr).toBe(0);
    await withClient(url, (c) => c.query(`UPDATE t SET v = 'after base 2' WHERE id = 1`));
    await waitRestorablePast(env, await walPosition(url), 'the restorable point past the second base');
    await stopDaemon(run);

    // restore --sql fetches the base itself (issue 14): <file>.base.dump beside the SQL, named in
    // its header; pg_restore of that file then psql of the SQL gives the source's rows.
    const sqlDir = mkdtempSync(join(tmpdir(), 'cdp-info-sql-'));
    const sqlFile = join(sqlDir, 'replay.sql');
    const manual = await createDatabase(`${name}_m`);
    try {
      const out = await runCli(['restore', '--into', manual, '--latest', '--sql', sqlFile], env);
      expect(out.code, out.stderr).toBe(0);
      expect(existsSync(`${sqlFile}.base.dump`)).toBe(true);
      expect(statSync(`${sqlFile}.base.dump`).mode & 0o777).toBe(0o600);
      expect(readFileSync(sqlFile, 'utf8')).toContain(`pg_restore --exit-on-error -d <target> --use-list=${sqlFile}.base.list ${sqlFile}.base.dump`);
      execFileSync('pg_restore', ['--exit-on-error', '-d', manual, `--use-list=${sqlFile}.base.list`, `${sqlFile}.base.dump`], { stdio: 'pipe' });
      execFileSync('psql', ['-q', '-X', '-d', manual, '-f', sqlFile], { stdio: 'pipe' });
      const [want, got] = await Promise.all([withClient(url, fingerprint), withClient(manual, fingerprint)]);
      expect(got).toEqual(want);
    } finally {
      rmSync(sqlDir, { recursive: true, force: true });
      await dropDatabase(`${name}_m`);
    }

    const first = await runCli(['info', '--json'], env, 60_000);
    expect(first.code, first.stderr).toBe(0);
    const sourceBases = (JSON.parse(first.stdout) as InfoReport).bases;
    expect(sourceBases.map((b) => b.kind)).toEqual(['source', 'source']);
    // A synthetic base beside the second (the manifest shape cdp compact writes; info reads manifests generically).
    const second = sourceBases[1]!;
    const secondManifest = JSON.parse(
      (await (await import('../../../src/s3/client.js')).getObject(store, second.key.replace(/base\.dump$/, 'manifest.json'))).toString('utf8'),
    ) as Record<string, unknown> & { lsn: number; lsnText: string; key: string; sha256: string; timeMicros: number };
    const synthLsn = secondManifest.lsn + 8;
    const dir = syntheticBaseDir(root, synthLsn, 'infotest');
    await putOnce(
      store,
      `${dir}manifest.json`,
      Buffer.from(
        JSON.stringify({
          ...secondManifest,
          lsn: synthLsn,
          lsnText: formatLsn(synthLsn),
          key: `${dir}base.dump`,
          synthetic: {
            version: 1,
            fromBase: { lsn: secondManifest.lsn, lsnText: secondManifest.lsnText, key: secondManifest.key, sha256: secondManifest.sha256, synthetic: false },
            rootBase: { lsn: secondManifest.lsn, lsnText: secondManifest.lsnText, timeMicros: secondManifest.timeMicros, key: secondManifest.key },
          },
        }),
      ),
    );

    const r = await runCli(['info', '--json'], env, 60_000);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as InfoReport;
    const status = JSON.parse((await runCli(['status', '--json'], env, 60_000)).stdout) as { restorablePoint: { lsn: string; time: string } };

    expect(info.database).toBe(name);
    expect(info.partitions).toBe(2);
    expect(info.bases.map((b) => b.kind)).toEqual(['source', 'source', 'synthetic']);
    for (const b of info.bases) expect(b.size).toBeGreaterThan(0);
    expect(info.bases[2]!.fromBase).toBe(second.lsn);
    // The first base stops at the break; the second and the synthetic one reach the restorable point.
    const [b1, b2, b3] = info.bases;
    expect(b1!.restorable?.from.lsn).toBe(b1!.lsn);
    expect(b1!.restorable?.to.lsn).toBe(formatLsn(until));
    expect(b1!.restorable?.blockedBy).toMatch(/test: a break recorded by hand/);
    expect(b2!.restorable?.to.lsn).toBe(status.restorablePoint.lsn);
    expect(b3!.restorable?.to.lsn).toBe(status.restorablePoint.lsn);
    expect(info.restorable.earliest?.lsn).toBe(b1!.lsn);
    expect(info.restorable.latest?.lsn).toBe(status.restorablePoint.lsn);
    expect(info.gaps).toHaveLength(1);
    expect(info.gaps[0]!.afterLsn).toBe(formatLsn(gap.afterLsn));
    expect(info.gaps[0]!.coveredBy).toEqual([b2!.lsn, b3!.lsn]);

    // Segment counts and bytes are the listing's.
    let count = 0;
    let bytes = 0;
    for (let p = 0; p < 2; p++) {
      let pc = 0;
      let pb = 0;
      for await (const s of listSegments(store, root, p)) {
        pc += 1;
        pb += s.size;
      }
      expect(info.segments.perPartition[p]).toMatchObject({ partition: p, count: pc, bytes: pb });
      count += pc;
      bytes += pb;
    }
    expect(count).toBeGreaterThan(0);
    expect(info.segments).toMatchObject({ count, bytes });
    expect(info.encryption).toEqual({ configured: false, encryptedBases: 0, plainBases: 3 });

    // The text form says the same in words.
    const text = await runCli(['info'], env, 60_000);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`earliest restorable ${b1!.lsn}`));
    expect(text.stdout).toMatch(new RegExp(`latest restorable   ${status.restorablePoint.lsn}`));
    expect(text.stdout).toMatch(/synthetic/);
    expect(text.stdout).toMatch(/break \(covered\)/);
    store.client.destroy();
  }, 400_000);

  it('a missing bucket: exit 2 naming the bucket', async () => {
    const r = await runCli(['info'], { ...db.env, CDP_S3_BUCKET: `no-such-bucket-${rand()}` }, 60_000);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/does not exist/);
  }, 60_000);
});
