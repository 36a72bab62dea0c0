import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import type { CommandContext } from '../context.js';
import { archiveRoot, sourceDatabase } from '../config/config.js';
import { readArchiveManifest, restorablePoint } from '../archive/catalog.js';
import { listGaps } from '../archive/chain.js';
import { loadKeyring, sealStream } from '../archive/crypto.js';
import { basesPrefix, parseBaseKey, syntheticBaseDir, type SyntheticBaseInfo } from '../archive/layout.js';
import { pgDumpVersionProblem, type BaseManifestExt } from '../base/basebackup.js';
import { childConnection } from '../pg/child-conn.js';
import { checkBase, downloadBase, listBaseManifests, restoreBase, tocOwners } from '../restore/base-restore.js';
import { listPartitionSegments } from '../restore/archive-source.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { createStore, listObjects, putOnce, s3Error, type Store } from '../s3/client.js';
import { MULTIPART_PART_SIZE, uploadMultipart } from '../s3/multipart.js';
import { formatLsn, microsToIso } from '../util/lsn.js';
import { sleep } from '../util/retry.js';
import { fingerprintDiff, fingerprintDigest, tableFingerprints } from './fingerprint.js';
import { createScratchDatabase, embeddedServer, reapScratchClusters, scratchHome, startScratchServer, type ScratchServer } from './scratch-pg.js';
import { encodeManifest } from '../base/manifest.js';
import { hashMeter } from '../util/hash-meter.js';
import { compactPauseAt, type CompactPauseStep } from '../testing/faults.js';

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

export interface CompactOptions {
  dryRun?: boolean;
}

export type CompactReport = Record<string, unknown> & { ok: boolean; skipped?: string };

async function testPause(ctx: CommandContext, step: CompactPauseStep): Promise<void> {
  if (!compactPauseAt(step)) return;
  ctx.log.warn({ step }, 'compact: paused for a test');
  await sleep(3_600_000, ctx.signal);
}

/** Roles a dump names: owners, grantees, default-privilege roles (from pg_restore's schema script). */
export function dumpRoles(listing: string, script: string): Set<string> {
  const roles = tocOwners(listing);
  const ident = String.raw`("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)`;
  const patterns = [
    new RegExp(String.raw`OWNER TO ${ident}`, 'g'),
    new RegExp(String.raw`^GRANT .* TO ${ident}`, 'gm'),
    new RegExp(String.raw`^REVOKE .* FROM ${ident}`, 'gm'),
    new RegExp(String.raw`FOR ROLE ${ident}`, 'g'),
  ];
  for (const re of patterns) {
    for (const m of script.matchAll(re)) {
      const raw = m[1]!;
      roles.add(raw.startsWith('"') ? raw.slice(1, -1).replace(/""/g, '"') : raw.toLowerCase());
    }
  }
  for (const r of [...roles]) if (r === 'PUBLIC' || r === 'public' || r.startsWith('pg_')) roles.delete(r);
  return roles;
}

function runTool(cmd: string, args: string[], env: NodeJS.ProcessEnv | undefined, signal: AbortSignal, stdoutTo?: NodeJS.WritableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    if (stdoutTo) p.stdout.pipe(stdoutTo);
    else p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.length > 64_000) err = err.slice(-32_000);
    });
    const onAbort = () => p.kill('SIGTERM');
    signal.addEventListener('abort', onAbort, { once: true });
    p.on('error', (e) => reject(new CdpError(ErrorCodes.USAGE, `cannot run ${cmd}: ${e.message}`, { cause: e })));
    p.on('close', (code) => {
      signal.removeEventListener('abort', onAbort);
      if (code === 0) resolve(out);
      else reject(new CdpError(ErrorCodes.PG_ERROR, `${cmd} failed (exit ${code}): ${err.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}

async function createRoles(adminUrl: string, roles: Iterable<string>): Promise<string[]> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  const made: string[] = [];
  try {
    const have = new Set((await c.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles')).rows.map((r) => r.rolname));
    for (const r of roles) {
      if (have.has(r)) continue;
      await c.query(`CREATE ROLE "${r.replace(/"/g, '""')}" NOLOGIN`);
      made.push(r);
    }
  } finally {
    await c.end().catch(() => {});
  }
  return made;
}

async function dropDatabase(adminUrl: string, db: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  try {
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  } catch {
    /* best effort: an embedded scratch goes away with its folder */
  } finally {
    await c.end().catch(() => {});
  }
}

/**
 * Synthetic base folders without a manifest (compactions that died), with their objects. Only
 * synthetic ones: a source base being uploaded by `cdp basebackup` also has no manifest yet.
 */
export async function listSyntheticDebris(store: Store, root: string): Promise<Array<{ dir: string; keys: string[]; newest: number }>> {
  const dirs = new Map<string, { keys: string[]; manifest: boolean; newest: number }>();
  for await (const o of listObjects(store, basesPrefix(root))) {
    const k = parseBaseKey(o.key);
    if (!k || !k.synthetic) continue;
    const d = dirs.get(k.dir) ?? { keys: [], manifest: false, newest: 0 };
    d.keys.push(o.key);
    if (k.file === 'manifest.json') d.manifest = true;
    d.newest = Math.max(d.newest, o.lastModified ?? Date.now());
    dirs.set(k.dir, d);
  }
  return [...dirs.entries()].filter(([, d]) => !d.manifest).map(([dir, d]) => ({ dir, keys: d.keys, newest: d.newest }));
}

async function deleteKeys(store: Store, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    try {
      await store.client.send(
        new DeleteObjectsCommand({ Bucket: store.bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true } }),
      );
    } catch (err) {
      throw s3Error('compact: delete debris', err);
    }
  }
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
  const reaped = cfg.compact.scratchUrl ? [] : await reapScratchClusters(home, log);
  const debris = await listSyntheticDebris(store, root);
  const graceMs = cfg.compact.debrisGraceMinutes * 60_000;
  const stale = debris.filter((d) => Date.now() - d.newest >= graceMs);
  if (stale.length > 0 && !opts.dryRun) {
    await deleteKeys(
      store,
      stale.flatMap((d) => d.keys),
    );
    log.info({ folders: stale.map((d) => d.dir) }, 'compact: removed synthetic base folders without manifest (compactions that did not finish)');
  }
  const cleaned = {
    scratchClusters: reaped.length,
    debrisFolders: opts.dryRun ? 0 : stale.length,
    debrisKept: debris.length - (opts.dryRun ? 0 : stale.length),
  };

  const [point, bases, gaps] = await Promise.all([
    restorablePoint(store, root, { partitions: manifest.partitions }),
    listBaseManifests(store, root, keyring),
    listGaps(store, root),
  ]);
  const newest = bases.at(-1);
  if (!newest) throw new CdpError(ErrorCodes.USAGE, 'cdp compact needs a base to start from: run cdp basebackup (or cdp setup) first');
  if (!point) throw new CdpError(ErrorCodes.USAGE, 'the archive has no restorable point yet (is cdp archive running?): nothing to compact');
  const throughLsn = point.lsn;
  const skip = (why: string): CompactReport => {
    log.info({ newestBase: newest.lsnText, restorablePoint: formatLsn(throughLsn) }, `compact: ${why}`);
    return { ok: true, skipped: why, newestBase: newest.lsnText, restorablePoint: formatLsn(throughLsn), cleaned };
  };
  if (newest.lsn - 1 >= throughLsn) return skip('nothing archived after the newest base');
  if (bases.some((b) => b.lsn === throughLsn + 1)) return skip('a base at the restorable point exists already');
  const segLists = await listPartitionSegments(store, root, manifest.partitions, newest.lsn, gaps);
  const segBytes = segLists.flat().reduce((n, s) => n + s.size, 0);
  if (segBytes < cfg.compact.minSegmentBytes)
    return skip(`only ${segBytes} bytes of segments follow the newest base (compact.minSegmentBytes ${cfg.compact.minSegmentBytes})`);
  const rootBase = newest.synthetic ? newest.synthetic.rootBase : { lsn: newest.lsn, lsnText: newest.lsnText, timeMicros: newest.timeMicros, key: newest.key };
  const major = Math.floor(newest.serverVersionNum / 10000);
  if (opts.dryRun) {
    return {
      ok: true,
      dryRun: true,
      fromBase: newest.lsnText,
      throughLsn: formatLsn(throughLsn),
      segments: segLists.flat().length,
      segmentBytes: segBytes,
      major,
      cleaned,
    };
  }

  const pgDumpVersion = await runTool(cfg.basebackup.pgDumpPath, ['--version'], undefined, ctx.signal).catch((err: unknown) => {
    throw new CdpError(ErrorCodes.USAGE, `${toError(err).message}; install the PostgreSQL client or set basebackup.pgDumpPath`, { cause: err });
  });
  const dumpProblem = pgDumpVersionProblem(pgDumpVersion, cfg.basebackup.pgDumpPath, newest.serverVersionNum, newest.serverVersion);
  if (dumpProblem) throw new CdpError(ErrorCodes.USAGE, dumpProblem);

  const run = randomBytes(5).toString('hex');
  const dbA = `cdp_compact_${run}`;
  const dbB = `cdp_compact_${run}_check`;
  const work = await mkdtemp(join(tmpdir(), 'cdp-compact-'));
  let server: ScratchServer | undefined;
  let adminUrl: string;
  let intoUrl: (db: string) => string;
  let scratchText: string;
  try {
    if (cfg.compact.scratchUrl) {
      adminUrl = cfg.compact.scratchUrl;
      intoUrl = (db) => {
        const u = new URL(cfg.compact.scratchUrl!);
        u.pathname = `/${db}`;
        return u.toString();
      };
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect().catch((err: unknown) => {
        throw new CdpError(ErrorCodes.USAGE, `cannot connect to compact.scratchUrl: ${toError(err).message}`, { cause: err });
      });
      const v = Number((await c.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v);
      await c.end();
      if (Math.floor(v / 10000) !== major)
        throw new CdpError(
          ErrorCodes.USAGE,
          `compact.scratchUrl runs PostgreSQL ${Math.floor(v / 10000)}, the source's bases are ${major}: give a server of major ${major}`,
        );
      scratchText = `scratch URL (PostgreSQL ${v})`;
    } else {
      const dir = await embeddedServer(major, home, log);
      server = await startScratchServer(dir, home, log);
      adminUrl = server.url('postgres');
      const s = server;
      intoUrl = (db) => s.url(db);
      scratchText = `embedded ${dir.split('/').pop()}`;
    }
    await createScratchDatabase(adminUrl, dbA);

    // Roles first: the base keeps its owners only when the target has every one of them, and
    // replayed DDL runs as the role that ran it. From the base's own dump; a role the stream names
    // later (DDL by a role the base does not know) is created when restore stops on it.
    const { dir: baseDir, file: baseFile } = await downloadBase(store, newest, keyring);
    try {
      const listing = await runTool(cfg.basebackup.pgRestorePath, ['--list', baseFile], undefined, ctx.signal);
      const script = await runTool(cfg.basebackup.pgRestorePath, ['--schema-only', '-f', '-', baseFile], undefined, ctx.signal);
      const made = await createRoles(adminUrl, dumpRoles(listing, script));
      if (made.length > 0) log.info({ roles: made }, 'compact: created the roles the base names on the scratch server (NOLOGIN)');
    } finally {
      await rm(baseDir, { recursive: true, force: true });
    }

    // 1. The restore, by restore's own code, to the restorable point read above.
    const { runRestore } = await import('../restore/restore.js');
    const reports: Array<Record<string, unknown>> = [];
    for (let attempt = 0; ; attempt++) {
      try {
        reports.push(await runRestore(ctx, { into: intoUrl(dbA), lsn: formatLsn(throughLsn), latest: false, dryRun: false, force: false }));
        break;
      } catch (err) {
        if (err instanceof CdpError && err.code === ErrorCodes.UNSUPPORTED && err.details.legacyDdl === true) {
          // Unattended, nobody can vouch for text no role was recorded with: never trusted here.
          throw new CdpError(
            ErrorCodes.UNSUPPORTED,
            `cdp compact does not replay DDL captured by an earlier version of cdp (no role recorded, the whole query text): it runs unattended, and would run that text as a superuser on nobody's decision. ` +
              `Take a new base with cdp basebackup (compaction then starts after that DDL), or restore that period with cdp restore --ddl-role ROLE or --trust-legacy-ddl. The restore said: ${err.message}`,
            { cause: err, details: err.details },
          );
        }
        const role = err instanceof CdpError && err.code === ErrorCodes.UNSUPPORTED ? err.details.role : undefined;
        if (typeof role !== 'string' || attempt >= 50) throw err;
        // A DDL event ran as a role the scratch lacks: create it and restore again from the start
        // into a fresh database (so that the report covers every replayed transaction: the
        // base's time is taken from it).
        await createRoles(adminUrl, [role]);
        reports.length = 0;
        await dropDatabase(adminUrl, dbA);
        await createScratchDatabase(adminUrl, dbA);
        log.info({ role }, 'compact: created a role the stream names on the scratch server; restoring again');
      }
    }
    const report = reports.at(-1)!;
    const reportBase = (report.base as { lsn: string }).lsn;
    if (reportBase !== newest.lsnText)
      throw new CdpError(ErrorCodes.INTERNAL, `compact: restore started from base ${reportBase}, expected the newest base ${newest.lsnText}`);
    const transactions = reports.reduce((n, r) => n + Number(r.transactions ?? 0), 0);
    const changes = reports.reduce((n, r) => n + Number(r.changes ?? 0), 0);
    const maxCommit = Math.max(newest.timeMicros, ...reports.map((r) => Number(r.maxCommitTimeMicros ?? 0)));
    const fingerprints = await tableFingerprints(intoUrl(dbA));
    await testPause(ctx, 'restored');

    // 2. The dump, and the check that it holds what the scratch held.
    const dumpFile = join(work, 'base.dump');
    const conn = childConnection(intoUrl(dbA));
    await runTool(
      cfg.basebackup.pgDumpPath,
      ['--format=custom', '--no-publications', '--no-subscriptions', `--dbname=${conn.url}`],
      conn.env,
      ctx.signal,
      createWriteStream(dumpFile, { mode: 0o600 }),
    );
    await testPause(ctx, 'dumped');
    await createScratchDatabase(adminUrl, dbB);
    const { roles, versionNum } = await (async () => {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      try {
        const names = (await c.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles')).rows.map((r) => r.rolname);
        const v = (await c.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v;
        return { roles: new Set(names), versionNum: Number(v) };
      } finally {
        await c.end();
      }
    })();
    await restoreBase({
      file: dumpFile,
      dir: work,
      into: intoUrl(dbB),
      jobs: cfg.restore.jobs,
      pgRestorePath: cfg.basebackup.pgRestorePath,
      signal: ctx.signal,
      targetRoles: roles,
      baseDumpVersion: pgDumpVersion.trim(),
      targetVersionNum: versionNum,
    });
    const check = await tableFingerprints(intoUrl(dbB));
    const diff = fingerprintDiff(fingerprints, check);
    if (diff.length > 0) {
      throw new CdpError(
        ErrorCodes.INTEGRITY,
        `compact: the dump of the scratch database does not restore to the same rows (${diff.slice(0, 5).join('; ')}); no synthetic base was written`,
      );
    }
    await dropDatabase(adminUrl, dbB);
    await testPause(ctx, 'checked');

    // 3. Upload, sealed with a key as every base is.
    const lsn = throughLsn + 1;
    const dir = syntheticBaseDir(root, lsn, run);
    const dumpKey = `${dir}base.dump`;
    const meter = hashMeter();
    const body = new PassThrough({ highWaterMark: MULTIPART_PART_SIZE });
    const src = createReadStream(dumpFile);
    (keyring ? src.pipe(sealStream(keyring, dumpKey)).pipe(meter.stream) : src.pipe(meter.stream)).pipe(body);
    await uploadMultipart(store, dumpKey, body, { contentType: 'application/octet-stream', metadata: { 'cdp-kind': 'base', 'cdp-synthetic': 'true' } });
    const size = meter.size();
    const sha256 = meter.digest();
    await testPause(ctx, 'uploaded');

    const info: SyntheticBaseInfo = {
      version: 1,
      fromBase: { lsn: newest.lsn, lsnText: newest.lsnText, key: newest.key, sha256: newest.sha256, synthetic: Boolean(newest.synthetic) },
      rootBase,
      throughLsn,
      throughLsnText: formatLsn(throughLsn),
      segments: segLists.map((segs, partition) => {
        // The segments the replay needed: up to the first whose highest LSN reaches the point.
        const end = segs.findIndex((s) => s.maxLsn >= throughLsn);
        const used = end < 0 ? segs : segs.slice(0, end + 1);
        return { partition, count: used.length, first: used[0]?.key ?? null, last: used.at(-1)?.key ?? null };
      }),
      transactions,
      changes,
      fingerprints,
      fingerprintDigest: fingerprintDigest(fingerprints),
      verified: { restoredFingerprintsMatch: true, readBack: true },
      scratch: scratchText,
      createdAt: new Date().toISOString(),
      seconds: 0,
    };
    const synthetic: BaseManifestExt = {
      version: 1,
      database: sourceDatabase(cfg),
      lsn,
      lsnText: formatLsn(lsn),
      // Every transaction in the base committed at or before this (commit times are not strictly
      // ordered with LSNs, hence the highest replayed, not the last): a --time target chooses this
      // base only when it is at or after it.
      time: microsToIso(maxCommit),
      timeMicros: maxCommit,
      key: dumpKey,
      size,
      sha256,
      serverVersion: newest.serverVersion,
      serverVersionNum: newest.serverVersionNum,
      pgDumpVersion: pgDumpVersion.trim(),
      encryption: keyring ? { keyId: keyring.current.id, envelope: 2 } : null,
      synthetic: info,
    };
    const localSize = (await stat(dumpFile)).size;
    if (!keyring && localSize !== size) throw new CdpError(ErrorCodes.INTEGRITY, `compact: uploaded ${size} bytes of a ${localSize}-byte dump`);

    // 4. Read back what S3 stores, through restore's own checks.
    await checkBase(store, synthetic, keyring);
    await testPause(ctx, 'read-back');

    // 5. The manifest, last.
    info.seconds = Math.round((Date.now() - started) / 100) / 10;
    await putOnce(store, `${dir}manifest.json`, encodeManifest(synthetic, `${dir}manifest.json`, keyring), { contentType: 'application/json' });
    log.info({ lsn: synthetic.lsnText, fromBase: newest.lsnText, transactions, size, seconds: info.seconds }, 'compact: synthetic base stored');
    return {
      ok: true,
      base: { lsn: synthetic.lsnText, time: synthetic.time, key: dumpKey, size },
      fromBase: newest.lsnText,
      rootBase: rootBase.lsnText,
      throughLsn: formatLsn(throughLsn),
      transactions,
      changes,
      tables: Object.keys(fingerprints).length,
      fingerprintDigest: info.fingerprintDigest,
      scratch: scratchText,
      seconds: info.seconds,
      cleaned,
    };
  } finally {
    if (server) await server.stop();
    else if (cfg.compact.scratchUrl) {
      await dropDatabase(cfg.compact.scratchUrl, dbB);
      await dropDatabase(cfg.compact.scratchUrl, dbA);
    }
    await rm(work, { recursive: true, force: true });
  }
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
