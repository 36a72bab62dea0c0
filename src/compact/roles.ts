import { rm } from 'node:fs/promises';
import pg from 'pg';
import type { Keyring } from '../archive/crypto.js';
import type { BaseManifestExt } from '../base/basebackup.js';
import { downloadBase, tocOwners } from '../restore/base-restore.js';
import type { Store } from '../s3/client.js';
import type { Logger } from '../util/log.js';
import { runTool } from './tools.js';

// The roles of the scratch server (compact.ts): the base keeps its owners only when the target has
// every one of them, and replayed DDL runs as the role that ran it. They are created NOLOGIN on the
// scratch server from the base's own dump before the restore; a role the stream names later (DDL by
// a role the base does not know) is created when restore stops on it (replay.ts).

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

/** Creates the roles the server lacks (NOLOGIN); returns the ones it made. */
export async function createRoles(adminUrl: string, roles: Iterable<string>): Promise<string[]> {
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

/** Downloads `base` (restore's checks) and creates on the scratch server every role its dump names. */
export async function createBaseRoles(
  store: Store,
  base: BaseManifestExt,
  keyring: Keyring | undefined,
  opts: { adminUrl: string; pgRestorePath: string; signal: AbortSignal; log: Logger },
): Promise<void> {
  const { dir: baseDir, file: baseFile } = await downloadBase(store, base, keyring);
  try {
    const listing = await runTool(opts.pgRestorePath, ['--list', baseFile], undefined, opts.signal);
    const script = await runTool(opts.pgRestorePath, ['--schema-only', '-f', '-', baseFile], undefined, opts.signal);
    const made = await createRoles(opts.adminUrl, dumpRoles(listing, script));
    if (made.length > 0) opts.log.info({ roles: made }, 'compact: created the roles the base names on the scratch server (NOLOGIN)');
  } finally {
    await rm(baseDir, { recursive: true, force: true });
  }
}
