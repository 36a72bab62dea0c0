import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { CommandContext } from '../context.js';
import { archiveRoot, sourceDatabase, type Config } from '../config/config.js';
import { loadKeyring, type LegacyBaseEncryption } from '../archive/crypto.js';
import { baseDumpKey, baseManifestKey, type BaseManifest } from '../archive/layout.js';
import { redactUrl } from '../util/redact.js';
import { childConnection } from '../pg/child-conn.js';
import { pgConnection } from '../pg/tls.js';
import { gauge } from '../util/metrics.js';
import { CdpError, ErrorCodes, pgError, toError } from '../errors.js';
import { createStore, getObjectIfExists, putOnce } from '../s3/client.js';
import { formatLsn, microsToIso, parseLsn } from '../util/lsn.js';
import { encodeManifest } from './manifest.js';
import { dumpToS3 } from './dump-upload.js';

// `cdp basebackup`: a consistent full copy at a known LSN (DESIGN.md section 4).
//
// CREATE_REPLICATION_SLOT ... TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export') on a replication
// connection returns consistent_point and a snapshot name (PostgreSQL docs 55.4 "Streaming
// Replication Protocol"). The exported snapshot sees exactly the transactions whose commit record
// is before consistent_point, and a slot created there decodes exactly those at or after it
// (snapbuild.c, SnapBuildXactNeedsSkip compares the commit record's start LSN with
// start_decoding_at), so replay after this base applies commit LSN >= consistent_point. The
// snapshot lives only while the replication connection stays idle in that state ("any further
// command destroys it"), so we hold it, untouched, until pg_dump has finished.
//
// The dump streams from pg_dump's stdout through a SHA-256 (and optionally AES-256-GCM) into a
// multipart upload (dump-upload.ts): memory stays at queueSize * partSize whatever the database
// size. The manifest is written last, with
// putOnce: a base without manifest.json is incomplete and never used.

/**
 * Our manifest carries two extra facts restore uses; older readers ignore them. `encryption` is
 * {keyId, envelope: 2} for a dump sealed in the envelope (crypto.ts), or the v1 fields of a dump
 * written before it (the header then lived in the manifest).
 */
export type BaseManifestExt = Omit<BaseManifest, 'encryption'> & {
  encryption: null | (LegacyBaseEncryption & { envelope?: 2 });
  /** 64-bit xmax of the exported snapshot: every xid >= it committed after the base. */
  snapshotXmax?: number;
  compressed?: boolean;
};

// Base metrics (issue 14; alert rules in deploy/prometheus/alerts.yml). The archive's newest base
// and the failures of the schedule are tracked in ops/gauges.ts.
const baseGauges = {
  lastSuccess: gauge('cdp_basebackup_last_success_timestamp_seconds', 'When this process last stored a base, Unix seconds'),
  lastDuration: gauge('cdp_basebackup_last_duration_seconds', 'Duration of the last base this process stored'),
  lastSize: gauge('cdp_basebackup_last_size_bytes', 'Stored size of the last base this process stored'),
  lastResult: gauge('cdp_basebackup_last_result', 'Result of the last base attempt of this process: 1 stored, 0 failed'),
  newestTime: gauge('cdp_basebackup_newest_timestamp_seconds', 'Snapshot time of the newest base in the archive (source or synthetic), Unix seconds'),
};

function baseStored(timeMicros: number, seconds: number, size: number): void {
  baseGauges.lastSuccess.set(Date.now() / 1000);
  baseGauges.lastDuration.set(seconds);
  baseGauges.lastSize.set(size);
  baseGauges.lastResult.set(1);
  baseGauges.newestTime.set(timeMicros / 1e6);
}

/** The CDP's own objects in the source (capture's DDL-capture schema); never part of a base. */
export const CDP_SCHEMA = 'katya_cdp';

/** pg_dump's arguments; the URL in them has no password (it travels in the env: childConnection). */
export function pgDumpArgs(cfg: Config, snapshot: string, excludeSchemas: string[], dbUrl = childConnection(cfg.source.url).url): string[] {
  return [
    '--format=custom',
    `--snapshot=${snapshot}`,
    // The source's publication and subscriptions belong to the source, not to a restored copy.
    '--no-publications',
    '--no-subscriptions',
    ...excludeSchemas.map((s) => `--exclude-schema=${s}`),
    `--dbname=${dbUrl}`,
  ];
}

async function commandVersion(path: string): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn(path, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', () => resolve('unknown'));
    p.on('close', () => resolve(out.trim() || 'unknown'));
  });
}

/**
 * pg_dump refuses a server of a newer major ("aborting because of server version mismatch"), and
 * no older pg_dump can be made to dump one; a newer pg_dump dumps older servers. So a source of
 * major N needs pg_dump N or newer. Returns the message that says so, or undefined when the
 * version is fine or unknown (an unrunnable pg_dump fails later with its own message).
 */
export function pgDumpVersionProblem(pgDumpVersionText: string, pgDumpPath: string, serverVersionNum: number, serverVersion: string): string | undefined {
  const m = /\(PostgreSQL\) (\d+)(?:\.(\d+))?/.exec(pgDumpVersionText);
  if (!m) return undefined;
  // Majors from 10 on are the first number; 9.6 and older are two numbers (90600 -> 9.6).
  const dumpMajor = Number(m[1]) >= 10 ? Number(m[1]) * 10000 : Number(m[1]) * 10000 + Number(m[2] ?? 0) * 100;
  const serverMajor = serverVersionNum >= 100000 ? Math.floor(serverVersionNum / 10000) * 10000 : Math.floor(serverVersionNum / 100) * 100;
  if (dumpMajor >= serverMajor) return undefined;
  const need =
    serverVersionNum >= 100000
      ? String(Math.floor(serverVersionNum / 10000))
      : `${Math.floor(serverVersionNum / 10000)}.${Math.floor(serverVersionNum / 100) % 100}`;
  return (
    `${pgDumpPath} is ${pgDumpVersionText.replace(/\s+/g, ' ').trim()} and the source runs PostgreSQL ${serverVersion}: ` +
    `a base of this source needs pg_dump ${need} or newer (pg_dump refuses newer servers); install the PostgreSQL ${need} client ` +
    `programs and point basebackup.pgDumpPath (and basebackup.pgRestorePath, for restores) at them`
  );
}

/** Connects both source clients (SOURCE_UNREACHABLE when either fails). */
async function connectSource(cfg: Config, clients: pg.Client[]): Promise<void> {
  try {
    for (const c of clients) await c.connect();
  } catch (err) {
    throw new CdpError(
      ErrorCodes.SOURCE_UNREACHABLE,
      `cannot connect to the source ${redactUrl(cfg.source.url)}: ${toError(err).message}; check source.url / CDP_SOURCE_URL`,
      { cause: err, canRetry: true },
    );
  }
}

/** Before a slot is made: a pg_dump too old for this server is a set-up error, not a failed dump. */
async function checkPgDump(cfg: Config, sql: pg.Client): Promise<void> {
  const sv = await sql.query<{ n: number; v: string }>(`SELECT current_setting('server_version_num')::int AS n, current_setting('server_version') AS v`);
  const problem = pgDumpVersionProblem(await commandVersion(cfg.basebackup.pgDumpPath), cfg.basebackup.pgDumpPath, sv.rows[0]!.n, sv.rows[0]!.v);
  if (problem) throw new CdpError(ErrorCodes.SOURCE_NOT_READY, problem);
}

/** A temporary logical slot on the replication connection, exporting its snapshot (held while `repl` stays idle). */
async function exportSnapshot(repl: pg.Client): Promise<{ consistentPoint: string; snapshotName: string }> {
  const slot = `cdp_base_${randomBytes(6).toString('hex')}`;
  try {
    const r = await repl.query(`CREATE_REPLICATION_SLOT ${slot} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')`);
    return { consistentPoint: r.rows[0].consistent_point, snapshotName: r.rows[0].snapshot_name };
  } catch (err) {
    throw pgError(
      'base backup: cannot create the temporary slot that exports a snapshot (needs wal_level=logical, a free replication slot and the REPLICATION attribute)',
      err,
    );
  }
}

/** What the base records about its snapshot. */
interface SnapshotFacts {
  now_us: string;
  xmax: string;
  version: string;
  version_num: number;
  has_cdp_schema: boolean;
}

/**
 * Facts about the snapshot, read inside it (importing an exported snapshot is allowed while the
 * exporter holds it; docs 9.27.5 "Snapshot Synchronization Functions").
 */
async function snapshotFacts(sql: pg.Client, snapshotName: string): Promise<SnapshotFacts> {
  await sql.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  await sql.query(`SET TRANSACTION SNAPSHOT '${snapshotName.replace(/'/g, "''")}'`);
  const facts = await sql.query<SnapshotFacts>(
    `SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text AS now_us,
            txid_snapshot_xmax(txid_current_snapshot())::text AS xmax,
            current_setting('server_version') AS version,
            current_setting('server_version_num')::int AS version_num,
            EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS has_cdp_schema`,
    [CDP_SCHEMA],
  );
  await sql.query('COMMIT');
  return facts.rows[0]!;
}

export async function takeBaseBackup(ctx: CommandContext): Promise<BaseManifestExt> {
  const { cfg, log } = ctx;
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 300_000 });
  const root = archiveRoot(cfg);
  const keyring = loadKeyring(cfg);
  const started = Date.now();

  const repl = new pg.Client({ ...pgConnection(cfg.source.url, cfg.source.tls), replication: 'database' } as pg.ClientConfig);
  const sql = new pg.Client(pgConnection(cfg.source.url, cfg.source.tls));
  try {
    await connectSource(cfg, [repl, sql]);
    await checkPgDump(cfg, sql);
    const { consistentPoint, snapshotName } = await exportSnapshot(repl);
    const lsn = parseLsn(consistentPoint);
    const f = await snapshotFacts(sql, snapshotName);
    const timeMicros = Number(f.now_us);
    const dumpKey = baseDumpKey(root, lsn);
    const manifestKey = baseManifestKey(root, lsn);
    if (await getObjectIfExists(store, manifestKey)) {
      throw new CdpError(ErrorCodes.INTEGRITY, `a base at ${consistentPoint} already exists (${manifestKey}); bases are write-once`);
    }
    log.info({ lsn: consistentPoint, snapshot: snapshotName, key: dumpKey }, 'basebackup: snapshot exported, running pg_dump');

    const conn = childConnection(cfg.source.url, process.env, cfg.source.tls);
    const args = pgDumpArgs(cfg, snapshotName, f.has_cdp_schema ? [CDP_SCHEMA] : [], conn.url);
    const { size, sha256 } = await dumpToS3({
      store,
      key: dumpKey,
      keyring,
      pgDumpPath: cfg.basebackup.pgDumpPath,
      args,
      conn,
      signal: ctx.signal,
      incomplete: `the base at ${consistentPoint} is incomplete (no manifest) and will not be used`,
    });
    const manifest: BaseManifestExt = {
      version: 1,
      database: sourceDatabase(cfg),
      lsn,
      lsnText: formatLsn(lsn),
      time: microsToIso(timeMicros),
      timeMicros,
      key: dumpKey,
      size,
      sha256,
      serverVersion: String(f.version),
      serverVersionNum: Number(f.version_num),
      pgDumpVersion: await commandVersion(cfg.basebackup.pgDumpPath),
      encryption: keyring ? { keyId: keyring.current.id, envelope: 2 } : null,
      snapshotXmax: Number(f.xmax),
    };
    await putOnce(store, manifestKey, encodeManifest(manifest, manifestKey, keyring), { contentType: 'application/json' });
    log.info({ lsn: manifest.lsnText, size, seconds: (Date.now() - started) / 1000, key: dumpKey }, 'basebackup: stored');
    baseStored(manifest.timeMicros, (Date.now() - started) / 1000, size);
    return manifest;
  } finally {
    // Ends the exporting transaction; the temporary slot goes with the connection.
    await repl.end().catch(() => {});
    await sql.end().catch(() => {});
  }
}
