// Capture start-up, source side: the slot to stream from, and the key of the signed DDL and
// sequence messages. Read on the session's catalog connection.

import type pg from 'pg';
import type { Config } from '../config/config.js';
import { CdpError, ErrorCodes, pgError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { parseLsn, type Lsn } from '../util/lsn.js';
import { redactUrl } from '../util/redact.js';
import type { MessageKey } from './ddl-auth.js';

export interface SlotFacts {
  /** server_version_num of the source. */
  version: number;
  /** The slot's confirmed_flush_lsn (0 when it has none yet): where streaming resumes. */
  confirmed: Lsn;
}

/** The configured slot must exist and use pgoutput (SOURCE_NOT_READY, exit 2, otherwise). */
export async function readSlot(catalog: pg.Client, cfg: Config): Promise<SlotFacts> {
  const q = async <R extends pg.QueryResultRow>(text: string, values: unknown[] = []) => {
    try {
      return (await catalog.query<R>(text, values)).rows;
    } catch (err) {
      throw pgError('capture start-up query failed', err, true);
    }
  };
  const [info] = await q<{ version: number; confirmed: string | null; active_pid: number | null; plugin: string | null }>(
    `SELECT current_setting('server_version_num')::int AS version,
            (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1) AS confirmed,
            (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1) AS active_pid,
            (SELECT plugin FROM pg_replication_slots WHERE slot_name = $1) AS plugin`,
    [cfg.source.slot],
  );
  if (!info || info.plugin === null) {
    throw new CdpError(
      ErrorCodes.SOURCE_NOT_READY,
      `replication slot ${cfg.source.slot} does not exist in ${redactUrl(cfg.source.url)}: run \`cdp setup\` first`,
    );
  }
  if (info.plugin !== 'pgoutput') {
    throw new CdpError(ErrorCodes.SOURCE_NOT_READY, `replication slot ${cfg.source.slot} uses plugin ${info.plugin}, not pgoutput: choose another source.slot`);
  }
  return { version: info.version, confirmed: info.confirmed ? parseLsn(info.confirmed) : 0 };
}

/**
 * The key of the signed messages, from katya_cdp.secret (written by setup). Absent (setup did not
 * install DDL capture): undefined, and every cdp.ddl / cdp.sequences message is dropped as
 * unsigned. Present but unreadable by this role: capture refuses to start (it would drop every DDL).
 */
export async function readMessageKey(catalog: pg.Client, log: Logger): Promise<MessageKey | undefined> {
  const r = await catalog.query<{ present: boolean; readable: boolean }>(
    `SELECT to_regclass('katya_cdp.secret') IS NOT NULL AS present,
            COALESCE(has_table_privilege(to_regclass('katya_cdp.secret'), 'SELECT'), false) AS readable`,
  );
  const { present, readable } = r.rows[0]!;
  if (!present) {
    log.warn(
      'katya_cdp.secret is missing (DDL capture not installed, or installed by an older version): schema changes are not captured; run `cdp setup` as a superuser',
    );
    return undefined;
  }
  if (!readable) {
    throw new CdpError(
      ErrorCodes.SOURCE_NOT_READY,
      'capture cannot read katya_cdp.secret, the key that authenticates DDL messages: run capture as the role that ran `cdp setup` (or a superuser)',
    );
  }
  const k = await catalog.query<{ ikey: Buffer; okey: Buffer }>('SELECT ikey, okey FROM katya_cdp.secret WHERE id = 1');
  const row = k.rows[0];
  if (!row) {
    log.warn('katya_cdp.secret holds no key: DDL messages cannot be verified and are dropped; run `cdp setup`');
    return undefined;
  }
  return { ikey: row.ikey, okey: row.okey };
}
