import pg from 'pg';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { embeddedServer, startScratchServer, type ScratchServer } from './scratch-pg.js';

// The server cdp compact restores into (compact.ts): compact.scratchUrl when configured (a server
// of the source's major), else an embedded server of that major started for this compaction
// (scratch-pg.ts). Also the few statements compact runs there besides restore's.

export interface Scratch {
  /** A URL of the server's maintenance database, to create and drop databases and roles. */
  adminUrl: string;
  /** The URL of database `db` on the server. */
  intoUrl(db: string): string;
  /** How the report names the server. */
  text: string;
  /** The embedded server, stopped (and removed) when the compaction ends; undefined with a scratch URL. */
  server?: ScratchServer;
}

async function serverVersionNum(c: pg.Client): Promise<number> {
  return Number((await c.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v);
}

/** The configured scratch server, checked to run PostgreSQL `major`. */
async function configuredScratch(scratchUrl: string, major: number): Promise<Scratch> {
  const c = new pg.Client({ connectionString: scratchUrl });
  await c.connect().catch((err: unknown) => {
    throw new CdpError(ErrorCodes.USAGE, `cannot connect to compact.scratchUrl: ${toError(err).message}`, { cause: err });
  });
  const v = await serverVersionNum(c);
  await c.end();
  if (Math.floor(v / 10000) !== major)
    throw new CdpError(
      ErrorCodes.USAGE,
      `compact.scratchUrl runs PostgreSQL ${Math.floor(v / 10000)}, the source's bases are ${major}: give a server of major ${major}`,
    );
  return {
    adminUrl: scratchUrl,
    intoUrl: (db) => {
      const u = new URL(scratchUrl);
      u.pathname = `/${db}`;
      return u.toString();
    },
    text: `scratch URL (PostgreSQL ${v})`,
  };
}

/** The scratch server of PostgreSQL `major`: the configured one, or an embedded one started now. */
export async function openScratch(scratchUrl: string | undefined, major: number, home: string, log: Logger): Promise<Scratch> {
  if (scratchUrl) return configuredScratch(scratchUrl, major);
  const dir = await embeddedServer(major, home, log);
  const server = await startScratchServer(dir, home, log);
  return { adminUrl: server.url('postgres'), intoUrl: (db) => server.url(db), text: `embedded ${dir.split('/').pop()}`, server };
}

/** Drops a scratch database, best effort (an embedded scratch goes away with its folder). */
export async function dropDatabase(adminUrl: string, db: string): Promise<void> {
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

/** The server's roles and version, what restoring a dump into it needs to know (base-restore.ts). */
export async function scratchFacts(adminUrl: string): Promise<{ roles: Set<string>; versionNum: number }> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    const names = (await c.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles')).rows.map((r) => r.rolname);
    return { roles: new Set(names), versionNum: await serverVersionNum(c) };
  } finally {
    await c.end();
  }
}
