import pg from 'pg';
import type { Config } from '../config/config.js';
import { CdpError, ErrorCodes, pgError, toError } from '../errors.js';
import { redactUrl } from '../util/redact.js';
import { pgConnection } from '../pg/tls.js';
import { CATALOG_SESSION_OPTIONS } from './type-names.js';

// Connections to the source database used by setup and capture (the replication stream itself
// lives in src/pg/replication-stream.ts).

/** A normal connection; search_path = pg_catalog so format_type qualifies user types. */
export async function connectCatalog(cfg: Config, applicationName = 'katya-cdp'): Promise<pg.Client> {
  return connectSource(cfg, {
    options: CATALOG_SESSION_OPTIONS.replace('katya-cdp-capture', applicationName),
    keepAlive: true,
  });
}

/** Connects to the source database with `extra` settings, or throws sourceUnreachable(). */
async function connectSource(cfg: Config, extra: pg.ClientConfig): Promise<pg.Client> {
  const client = new pg.Client({ ...pgConnection(cfg.source.url, cfg.source.tls), connectionTimeoutMillis: 15_000, ...extra });
  // An 'error' event without a listener crashes the process; the next query reports the failure.
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw sourceUnreachable(cfg, err);
  }
  return client;
}

export function sourceUnreachable(cfg: Config, err: unknown): CdpError {
  const e = toError(err) as Error & { code?: string };
  const where = redactUrl(cfg.source.url);
  // 28P01/28000: authentication; 3D000: no such database; 57P03: starting up.
  return new CdpError(
    ErrorCodes.SOURCE_UNREACHABLE,
    `cannot connect to the source database ${where}: ${e.message}; check source.url / CDP_SOURCE_URL and that PostgreSQL is up`,
    {
      cause: err,
      canRetry: !(e.code === '28P01' || e.code === '28000' || e.code === '3D000'),
      details: { sqlstate: e.code },
    },
  );
}

/** IDENTIFY_SYSTEM on a short-lived replication connection (55.4): works for any REPLICATION role. */
export async function identifySystem(cfg: Config): Promise<{ systemId: string; timeline: number; xlogpos: string }> {
  // `replication` is a startup parameter absent from @types/pg.
  const client = await connectSource(cfg, { replication: 'database' } as pg.ClientConfig);
  try {
    const res = await client.query('IDENTIFY_SYSTEM');
    const row = res.rows[0] as { systemid: string; timeline: number; xlogpos: string };
    return { systemId: String(row.systemid), timeline: Number(row.timeline), xlogpos: String(row.xlogpos) };
  } catch (err) {
    throw pgError('IDENTIFY_SYSTEM failed (the role needs the REPLICATION attribute)', err);
  } finally {
    await client.end().catch(() => {});
  }
}
