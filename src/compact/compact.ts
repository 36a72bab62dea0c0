import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CommandContext } from '../context.js';
import { archiveRoot, sourceDatabase } from '../config/config.js';
import { readArchiveManifest } from '../archive/catalog.js';
import { loadKeyring, type Keyring } from '../archive/crypto.js';
import { syntheticBaseDir, type SyntheticBaseInfo } from '../archive/layout.js';
import type { BaseManifestExt } from '../base/basebackup.js';
import { encodeManifest } from '../base/manifest.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { createStore, putOnce, type Store } from '../s3/client.js';
import { formatLsn } from '../util/lsn.js';
import { sleep } from '../util/retry.js';
import { compactPauseAt, type CompactPauseStep } from '../testing/faults.js';
import { cleanLeftovers, type Cleaned } from './debris.js';
import { checkDump, checkedPgDumpVersion, dumpDatabase } from './dump.js';
import { tableFingerprints } from './fingerprint.js';
import { planCompaction, type CompactPlan } from './plan.js';
import { replayedBy, restoreWithRoles, type Replayed } from './replay.js';
import { createBaseRoles, createRoles } from './roles.js';
import { createScratchDatabase, scratchHome } from './scratch-pg.js';
import { dropDatabase, openScratch, type Scratch } from './scratch-target.js';
import { readBack, syntheticManifest, uploadDump } from './synthetic.js';

// `cdp compact` (issue 11): a synthetic base at the restorable point, made off the source. The
// newest base (source-taken or synthetic) plus the archived changes after it are restored, by the
// restore code itself, into a scratch PostgreSQL of the source's major (embedded, started here, or
// compact.scratchUrl); that database is dumped with pg_dump -Fc, which is what a restore to the
// same point would have left in a target, so the synthetic base is exactly that restore's result:
// rows, schema after replayed DDL, sequences as restore ends them, owners; no restore cursor
// (restore drops it when it ends).
//
// Protocol, so that a compaction killed at any step leaves no base restore would choose:
//   1. restore into scratch database A; fingerprint A's rows (fingerprint.ts)
//   2. pg_dump A to a local file; pg_restore it into scratch database B; B's fingerprints must
//      equal A's (the dump holds what the scratch held)
//   3. upload the dump to bases/<lsn>-synthetic-<run>/base.dump (a folder of its own per run)
//   4. read it back from S3 and check size and SHA-256 (and the envelope with a key), as restore does
//   5. only then the manifest (write-once), with what the base was made from and the fingerprints
// A folder without manifest is debris: restore, status and prune see only manifests; verify lists
// it; the next compaction deletes it once compact.debrisGraceMinutes old. Scratch clusters of a
// killed compaction are stopped and removed by the next one (scratch-pg.ts).
//
// TEST-ONLY: CDP_TEST_FAULTS=compact-pause:<step> (restored, dumped, checked, uploaded, read-back;
// src/testing/faults.ts, refused outside the test suite) stops the compaction there, logging
// "compact: paused for a test", until it is killed: the crash tests kill -9 it at each step.
//
// The steps are modules of their own: choosing the point (plan.ts), the scratch server
// (scratch-target.ts, scratch-pg.ts) and its roles (roles.ts), the restore (replay.ts), the dump
// and its check (dump.ts), the upload, manifest and read-back (synthetic.ts), the clean-up of what
// killed compactions left (debris.ts). This file runs them in the protocol's order.

export interface CompactOptions {
  dryRun?: boolean;
}

export type CompactReport = Record<string, unknown> & { ok: boolean; skipped?: string };

// Kept here for their importers (cdp verify, tests).
export { dumpRoles } from './roles.js';
export { listSyntheticDebris } from './debris.js';

async function testPause(ctx: CommandContext, step: CompactPauseStep): Promise<void> {
  if (!compactPauseAt(step)) return;
  ctx.log.warn({ step }, 'compact: paused for a test');
  await sleep(3_600_000, ctx.signal);
}

export async function compact(ctx: CommandContext, opts: CompactOptions = {}): Promise<CompactReport> {
  const { cfg, log } = ctx;
  const started = Date.now();
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 300_000 });
  const root = archiveRoot(cfg);
  const keyring = loadKeyring(cfg);
  const home = scratchHome(cfg.compact.scratchDir);

  const manifest = await readArchiveManifest(store, root);
  if (!manifest)
    throw new CdpError(
      ErrorCodes.USAGE,
      `no archive at s3://${cfg.s3.bucket}/${root}/ (archive.json missing): check s3.prefix / CDP_S3_PREFIX and the source database name`,
    );

  // What earlier, killed compactions left.
  const cleaned = await cleanLeftovers(store, root, {
    scratchUrl: cfg.compact.scratchUrl,
    home,
    graceMinutes: cfg.compact.debrisGraceMinutes,
    dryRun: Boolean(opts.dryRun),
    log,
  });

  const plan = await planCompaction(store, root, manifest.partitions, keyring, cfg.compact.minSegmentBytes);
  if ('skip' in plan) {
    const at = { newestBase: plan.newest.lsnText, restorablePoint: formatLsn(plan.throughLsn) };
    log.info(at, `compact: ${plan.skip}`);
    return { ok: true, skipped: plan.skip, ...at, cleaned };
  }
  if (opts.dryRun) {
    return {
      ok: true,
      dryRun: true,
      fromBase: plan.newest.lsnText,
      throughLsn: formatLsn(plan.throughLsn),
      segments: plan.segLists.flat().length,
      segmentBytes: plan.segBytes,
      major: plan.major,
      cleaned,
    };
  }
  const pgDumpVersion = await checkedPgDumpVersion(cfg.basebackup.pgDumpPath, plan.newest, ctx.signal);
  return buildSyntheticBase(ctx, { store, root, keyring, home, plan, pgDumpVersion, started, cleaned });
}

interface CompactJob {
  store: Store;
  root: string;
  keyring: Keyring | undefined;
  home: string;
  plan: CompactPlan;
  /** pg_dump's version line (trimmed). */
  pgDumpVersion: string;
  started: number;
  cleaned: Cleaned;
}

/**
 * The protocol's steps 1-5 (see the top of this file), each followed by its test pause. The scratch
 * server or databases and the local dump are removed whatever happens.
 */
async function buildSyntheticBase(ctx: CommandContext, job: CompactJob): Promise<CompactReport> {
  const { cfg, log } = ctx;
  const { store, keyring, plan } = job;
  const run = randomBytes(5).toString('hex');
  const dbA = `cdp_compact_${run}`;
  const dbB = `cdp_compact_${run}_check`;
  const work = await mkdtemp(join(tmpdir(), 'cdp-compact-'));
  let scratch: Scratch | undefined;
  try {
    scratch = await openScratch(cfg.compact.scratchUrl, plan.major, job.home, log);
    const s = scratch;
    await createScratchDatabase(s.adminUrl, dbA);
    const tools = { pgRestorePath: cfg.basebackup.pgRestorePath, signal: ctx.signal };
    await createBaseRoles(store, plan.newest, keyring, { adminUrl: s.adminUrl, ...tools, log });

    // 1. The restore, by restore's own code, to the restorable point read above.
    const replayed = await restoreScratch(ctx, s, dbA, plan);
    const fingerprints = await tableFingerprints(s.intoUrl(dbA));
    await testPause(ctx, 'restored');

    // 2. The dump, and the check that it holds what the scratch held.
    const dumpFile = join(work, 'base.dump');
    await dumpDatabase(cfg.basebackup.pgDumpPath, s.intoUrl(dbA), dumpFile, ctx.signal);
    await testPause(ctx, 'dumped');
    const check = { file: dumpFile, dir: work, adminUrl: s.adminUrl, db: dbB, url: s.intoUrl(dbB), jobs: cfg.restore.jobs };
    await checkDump({ ...check, ...tools, pgDumpVersion: job.pgDumpVersion, expected: fingerprints });
    await testPause(ctx, 'checked');

    // 3. Upload, sealed with a key as every base is.
    const dir = syntheticBaseDir(job.root, plan.throughLsn + 1, run);
    const key = `${dir}base.dump`;
    const stored = await uploadDump(store, keyring, dumpFile, key);
    await testPause(ctx, 'uploaded');
    const database = sourceDatabase(cfg);
    const { manifest, info } = syntheticManifest({
      database,
      plan,
      replayed,
      fingerprints,
      key,
      ...stored,
      pgDumpVersion: job.pgDumpVersion,
      keyring,
      scratch: s.text,
    });

    // 4. Read back what S3 stores, through restore's own checks.
    await readBack(store, manifest, keyring, dumpFile);
    await testPause(ctx, 'read-back');

    // 5. The manifest, last.
    info.seconds = Math.round((Date.now() - job.started) / 100) / 10;
    await putOnce(store, `${dir}manifest.json`, encodeManifest(manifest, `${dir}manifest.json`, keyring), { contentType: 'application/json' });
    log.info(
      { lsn: manifest.lsnText, fromBase: plan.newest.lsnText, transactions: replayed.transactions, size: stored.size, seconds: info.seconds },
      'compact: synthetic base stored',
    );
    return storedReport(manifest, info, job, replayed);
  } finally {
    if (scratch?.server) await scratch.server.stop();
    else if (cfg.compact.scratchUrl) {
      await dropDatabase(cfg.compact.scratchUrl, dbB);
      await dropDatabase(cfg.compact.scratchUrl, dbA);
    }
    await rm(work, { recursive: true, force: true });
  }
}

/** What cdp compact prints for a stored synthetic base. */
function storedReport(manifest: BaseManifestExt, info: SyntheticBaseInfo, job: CompactJob, replayed: Replayed): CompactReport {
  return {
    ok: true,
    base: { lsn: manifest.lsnText, time: manifest.time, key: manifest.key, size: manifest.size },
    fromBase: job.plan.newest.lsnText,
    rootBase: job.plan.rootBase.lsnText,
    throughLsn: formatLsn(job.plan.throughLsn),
    transactions: replayed.transactions,
    changes: replayed.changes,
    tables: Object.keys(info.fingerprints).length,
    fingerprintDigest: info.fingerprintDigest,
    scratch: info.scratch,
    seconds: info.seconds,
    cleaned: job.cleaned,
  };
}

/** Step 1: restore.ts into scratch database `db`, through the plan's point, creating the roles the stream names. */
async function restoreScratch(ctx: CommandContext, s: Scratch, db: string, plan: CompactPlan): Promise<Replayed> {
  const { runRestore } = await import('../restore/restore.js');
  const report = await restoreWithRoles({
    restore: () => runRestore(ctx, { into: s.intoUrl(db), lsn: formatLsn(plan.throughLsn), latest: false, dryRun: false, force: false }),
    createRole: async (role) => {
      await createRoles(s.adminUrl, [role]);
    },
    freshDatabase: async () => {
      await dropDatabase(s.adminUrl, db);
      await createScratchDatabase(s.adminUrl, db);
    },
    log: ctx.log,
  });
  return replayedBy(report, plan.newest);
}

/**
 * `cdp run`'s schedule: a compaction every compact.intervalMinutes (0 = never), the first one
 * after one interval. A failed compaction is logged and tried again at the next interval: the
 * archive and the older bases are untouched by it.
 */
export async function compactSchedule(ctx: CommandContext): Promise<void> {
  const minutes = ctx.cfg.compact.intervalMinutes;
  if (minutes <= 0) return;
  const intervalMs = minutes * 60_000;
  try {
    for (;;) {
      await sleep(intervalMs, ctx.signal);
      try {
        ctx.log.info({ component: 'compact' }, 'scheduled compaction starting');
        await compact(ctx);
      } catch (raw) {
        if (ctx.signal.aborted) return;
        ctx.log.error({ err: toError(raw).message, component: 'compact' }, 'scheduled compaction failed; trying again at the next interval');
      }
    }
  } catch (raw) {
    if (ctx.signal.aborted) return;
    throw raw;
  }
}
