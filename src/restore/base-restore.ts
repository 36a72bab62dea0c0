import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { openBaseStream, type Keyring } from '../archive/crypto.js';
import { childConnection } from '../pg/child-conn.js';
import type { PgTlsConfig } from '../pg/tls.js';
import type { BaseManifestExt } from '../base/basebackup.js';
import { CDP_SCHEMA } from '../base/basebackup.js';
import { CdpError, ErrorCodes, IntegrityError, toError } from '../errors.js';
import { s3Error, type Store } from '../s3/client.js';
import { withRetry } from '../util/retry.js';
import { hashMeter } from '../util/hash-meter.js';
import type { TableFilter } from './apply.js';
import { pgRestoreVersionProblem, scriptMode, ScriptHeaderFilter } from './client-version.js';

// Loading a base: download to a temporary file (pg_restore -j needs a seekable archive file),
// checking size and SHA-256 of the stored bytes while streaming (G5), decrypting when the manifest
// says so (the GCM tag, checked at the end, authenticates the whole dump), then pg_restore with a
// filtered table of contents (pg_restore -l / -L, docs "pg_restore"): the CDP's own event triggers
// never reach the target, and with --tables only the chosen tables get their data.

// Listing and checking manifests: src/base/manifest.ts.
export { listBaseManifests } from '../base/manifest.js';

/**
 * Streams a base's stored bytes into `sink`, checking size and SHA-256 of the stored bytes (G5)
 * and, with a keyring, opening the envelope (crypto.ts): only a dump sealed for this base's key in
 * this archive passes; the GCM tag, checked at the end, authenticates the whole dump. Whatever the
 * (unauthenticated) manifest says, a keyring means the dump must be sealed.
 */
async function streamBase(store: Store, base: BaseManifestExt, keyring: Keyring | undefined, sink: () => NodeJS.WritableStream): Promise<void> {
  const what = `base ${base.key}`;
  const opener = () => openBaseStream(keyring, base.key, base.encryption, what);
  opener(); // refuses before the download what the manifest alone decides (no key, v1 refused)
  await withRetry(
    async () => {
      let body: Readable;
      try {
        const out = await store.client.send(new GetObjectCommand({ Bucket: store.bucket, Key: base.key }), { abortSignal: store.signal });
        body = out.Body as Readable;
      } catch (err) {
        throw s3Error(`get s3://${store.bucket}/${base.key}`, err);
      }
      const meter = hashMeter();
      const open = opener();
      const stages: NodeJS.ReadWriteStream[] = open ? [meter.stream, open] : [meter.stream];
      try {
        await pipeline(body, ...(stages as [NodeJS.ReadWriteStream]), sink());
      } catch (err) {
        if (err instanceof CdpError) throw err;
        throw new CdpError(ErrorCodes.S3, `downloading ${base.key}: ${toError(err).message}`, { cause: err, canRetry: true });
      }
      const digest = meter.digest();
      const size = meter.size();
      if (digest !== base.sha256 || size !== base.size) {
        throw new IntegrityError(
          `base ${base.key}: ${size} bytes with SHA-256 ${digest}, its manifest says ${base.size} bytes / ${base.sha256}; the dump was altered or truncated: restore from another base or the offsite copy`,
        );
      }
    },
    { what: `download ${base.key}`, log: store.log, signal: store.signal, maxElapsedMs: 300_000 },
  );
}

export async function downloadBase(
  store: Store,
  base: BaseManifestExt,
  keyring: Keyring | undefined,
  progress?: { written?: () => number },
): Promise<{ dir: string; file: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'cdp-restore-'));
  const file = join(dir, 'base.dump');
  try {
    await streamBase(store, base, keyring, () => {
      const out = createWriteStream(file, { mode: 0o600 });
      // Bytes written so far, for restore's progress line.
      if (progress) progress.written = () => out.bytesWritten;
      return out;
    });
    return { dir, file };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** `cdp verify`: reads a base through the same checks as restore, keeping nothing. */
export async function checkBase(store: Store, base: BaseManifestExt, keyring: Keyring | undefined): Promise<void> {
  await streamBase(store, base, keyring, () => new Writable({ write: (_c, _e, cb) => cb() }));
}

async function run(cmd: string, args: string[], signal: AbortSignal, env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.length > 64_000) err = err.slice(-32_000);
    });
    const onAbort = () => p.kill('SIGTERM');
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
    p.on('error', (e) =>
      reject(
        new CdpError(ErrorCodes.SOURCE_NOT_READY, `cannot run ${cmd}: ${e.message}; install the PostgreSQL client or set basebackup.pgRestorePath`, {
          cause: e,
        }),
      ),
    );
    p.on('close', (code) => {
      signal.removeEventListener('abort', onAbort);
      if (code === 0) resolve(out);
      else reject(new CdpError(ErrorCodes.PG_ERROR, `${cmd} failed (exit ${code}): ${err.trim().split('\n').slice(-6).join(' | ')}`));
    });
  });
}

/**
 * Filters a pg_restore -l listing. Each entry line is "id; tableoid oid TYPE schema name owner"
 * (comments start with ';'). Dropped: the CDP's event triggers and schema; with a table filter,
 * TABLE DATA of other tables and every FK CONSTRAINT (a key pointing at a table left empty would
 * fail to validate; the chosen tables still get their own constraints, indexes and sequences).
 */
export function filterToc(listing: string, filter: TableFilter | undefined): string {
  const out: string[] = [];
  for (const line of listing.split('\n')) {
    if (line.startsWith(';') || line.trim() === '') {
      out.push(line);
      continue;
    }
    const m = /^\d+; \d+ \d+ (.*)$/.exec(line);
    if (!m) {
      out.push(line);
      continue;
    }
    const rest = m[1]!;
    if (/^EVENT TRIGGER - katya_cdp_/.test(rest)) continue;
    if (rest.startsWith(`SCHEMA - ${CDP_SCHEMA} `) || new RegExp(`^[A-Z ]+ ${CDP_SCHEMA} `).test(rest)) continue;
    if (filter) {
      if (rest.startsWith('FK CONSTRAINT ')) continue;
      const d = /^TABLE DATA (\S+) (.+) \S+$/.exec(rest);
      if (d && !filter.tables.has(`${d[1]}.${d[2]}`)) continue;
    }
    out.push(line);
  }
  return out.join('\n');
}

export async function restoreBase(opts: {
  file: string;
  dir: string;
  into: string;
  /** TLS for the target (restore.tls): PGSSL* for pg_restore / psql (pg/tls.ts). */
  tls?: PgTlsConfig;
  jobs: number;
  pgRestorePath: string;
  filter?: TableFilter;
  signal: AbortSignal;
  /** Roles of the target: when every owner in the dump is one of them, ownership is kept. */
  targetRoles?: Set<string>;
  /** The base manifest's pgDumpVersion and the target's server_version_num: checked against pg_restore's version first. */
  baseDumpVersion?: string;
  targetVersionNum?: number;
}): Promise<{ ownersKept: boolean; materializedViews: string[] }> {
  let viaScript = false;
  if (opts.targetVersionNum !== undefined) {
    const pgRestoreVersion = await run(opts.pgRestorePath, ['--version'], opts.signal);
    const problem = pgRestoreVersionProblem({
      pgRestorePath: opts.pgRestorePath,
      pgRestoreVersion,
      baseDumpVersion: opts.baseDumpVersion,
      targetVersionNum: opts.targetVersionNum,
    });
    if (problem) throw new CdpError(ErrorCodes.USAGE, problem);
    viaScript = scriptMode(pgRestoreVersion, opts.targetVersionNum);
  }
  const listing = await run(opts.pgRestorePath, ['--list', opts.file], opts.signal);
  // DDL is replayed as the role that ran it (ddl-replay.ts), which must own what it alters: keep
  // the source's owners when the target has every one of them, else --no-owner as before (the
  // restore role owns everything, and DDL by a role missing on the target stops the replay).
  const owners = tocOwners(listing);
  const keepOwners = Boolean(opts.targetRoles) && owners.size > 0 && [...owners].every((o) => opts.targetRoles!.has(o));
  const listFile = join(opts.dir, 'toc.list');
  await writeFile(listFile, filterToc(listing, opts.filter));
  const conn = childConnection(opts.into, process.env, opts.tls, 'restore.tls');
  try {
    if (viaScript) await restoreViaScript({ ...opts, listFile, keepOwners, conn });
    else await run(opts.pgRestorePath, pgRestoreArgs({ ...opts, into: conn.url, listFile, keepOwners }), opts.signal, conn.env);
  } finally {
    conn.cleanup?.();
  }
  return { ownersKept: keepOwners, materializedViews: tocMaterializedViews(listing) };
}

/**
 * Materialized views the base populates ("MATERIALIZED VIEW DATA schema name owner"): pg_dump
 * carries no stored rows for them, pg_restore refreshes them from the base's tables, so one that
 * was stale on the source (not refreshed since its tables changed) comes back with newer rows.
 */
export function tocMaterializedViews(listing: string): string[] {
  const out: string[] = [];
  for (const line of listing.split('\n')) {
    const m = /^\d+; \d+ \d+ MATERIALIZED VIEW DATA (\S+) (\S+) \S+$/.exec(line);
    if (m) out.push(`${m[1]}.${m[2]}`);
  }
  return out;
}

/** Owners named in a pg_restore -l listing (the last field of each entry line). */
export function tocOwners(listing: string): Set<string> {
  const owners = new Set<string>();
  for (const line of listing.split('\n')) {
    const m = /^\d+; \d+ \d+ .* (\S+)$/.exec(line);
    if (m) owners.add(m[1]!);
  }
  return owners;
}

/**
 * pg_restore -f - | (header filter) | psql, for a target older than the pg_restore (client-version.ts
 * scriptMode). The psql beside that pg_restore reads its script (\\restrict lines included); one
 * session, so no parallel jobs.
 */
async function restoreViaScript(opts: {
  file: string;
  listFile: string;
  keepOwners: boolean;
  pgRestorePath: string;
  signal: AbortSignal;
  conn: { url: string; env: NodeJS.ProcessEnv };
}): Promise<void> {
  const psqlPath = join(dirname(opts.pgRestorePath), 'psql');
  const psql = existsSync(psqlPath) ? psqlPath : 'psql';
  const restore = spawn(opts.pgRestorePath, [...(opts.keepOwners ? [] : ['--no-owner']), `--use-list=${opts.listFile}`, '-f', '-', opts.file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const load = spawn(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', `--dbname=${opts.conn.url}`], { stdio: ['pipe', 'ignore', 'pipe'], env: opts.conn.env });
  const filter = new ScriptHeaderFilter();
  let err = '';
  const keep = (d: Buffer) => {
    err += d.toString();
    if (err.length > 64_000) err = err.slice(-32_000);
  };
  restore.stderr.on('data', keep);
  load.stderr.on('data', keep);
  const onAbort = () => {
    restore.kill('SIGTERM');
    load.kill('SIGTERM');
  };
  opts.signal.addEventListener('abort', onAbort, { once: true });
  if (opts.signal.aborted) onAbort();
  const exited = (p: ReturnType<typeof spawn>, what: string) =>
    new Promise<void>((resolve, reject) => {
      p.on('error', (e) => reject(new CdpError(ErrorCodes.SOURCE_NOT_READY, `cannot run ${what}: ${e.message}`, { cause: e })));
      p.on('close', (code) =>
        code === 0 ? resolve() : reject(new CdpError(ErrorCodes.PG_ERROR, `${what} failed (exit ${code}): ${err.trim().split('\n').slice(-6).join(' | ')}`)),
      );
    });
  const done = Promise.all([exited(restore, opts.pgRestorePath), exited(load, psql)]);
  restore.stdout.setEncoding('utf8');
  restore.stdout.on('data', (chunk: string) => {
    if (!load.stdin.write(filter.push(chunk))) {
      restore.stdout.pause();
      load.stdin.once('drain', () => restore.stdout.resume());
    }
  });
  restore.stdout.on('end', () => load.stdin.end(filter.end()));
  load.stdin.on('error', () => {});
  try {
    await done;
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
  }
}

/** pg_restore's arguments. `into` must already be password-free (childConnection). */
export function pgRestoreArgs(opts: { into: string; jobs: number; listFile: string; file: string; keepOwners?: boolean }): string[] {
  return [
    ...(opts.keepOwners ? [] : ['--no-owner']),
    '--exit-on-error',
    `--jobs=${opts.jobs}`,
    `--use-list=${opts.listFile}`,
    `--dbname=${opts.into}`,
    opts.file,
  ];
}

/**
 * `restore --sql` (issue 14): the table of contents pg_restore --use-list needs to load the base by
 * hand as restore would, without the CDP's own objects (their event triggers name a schema the base
 * does not hold) and, with --tables, with only the chosen tables' data.
 */
export async function writeBaseList(
  pgRestorePath: string,
  dumpFile: string,
  listFile: string,
  filter: TableFilter | undefined,
  signal: AbortSignal,
): Promise<void> {
  await writeFile(listFile, filterToc(await run(pgRestorePath, ['--list', dumpFile], signal), filter), { mode: 0o600 });
}
