// Setup, DDL capture: the event triggers of ddl-capture.sql, their check and their installation.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import type { Config } from '../config/config.js';
import type { Logger } from '../util/log.js';
import { hmacPads } from './ddl-auth.js';
import type { Findings } from './setup-findings.js';
import type { Query, ServerFacts } from './setup-source.js';

/**
 * The DDL capture event triggers (ddl-capture.sql): name, event, function. Triggers of one event
 * fire in name order: the invoker's one (…_a), then the one that signs and emits (…_end), then the
 * keyless-table one (…_keyless).
 */
const EVENT_TRIGGER_DEFS: Array<[string, string, string]> = [
  ['katya_cdp_sql_drop', 'sql_drop', 'katya_cdp.on_sql_drop()'],
  ['katya_cdp_table_rewrite', 'table_rewrite', 'katya_cdp.on_table_rewrite()'],
  ['katya_cdp_ddl_command_a', 'ddl_command_end', 'katya_cdp.on_ddl_invoker()'],
  ['katya_cdp_ddl_command_end', 'ddl_command_end', 'katya_cdp.on_ddl_command_end()'],
  ['katya_cdp_ddl_command_keyless', 'ddl_command_end', 'katya_cdp.on_ddl_keyless()'],
];
const EVENT_TRIGGERS = EVENT_TRIGGER_DEFS.map(([name]) => name);

export const DDL_CAPTURE_SQL = readFileSync(new URL('./ddl-capture.sql', import.meta.url), 'utf8');

/** DDL capture: event triggers need a superuser (PostgreSQL docs: CREATE EVENT TRIGGER). */
export async function checkDdlCapture(q: Query, s: ServerFacts, f: Findings): Promise<boolean> {
  const triggers = await q<{ evtname: string; evtenabled: string }>('SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname = ANY($1)', [
    EVENT_TRIGGERS,
  ]);
  const ddlCaptureInstalled = triggers.length === EVENT_TRIGGERS.length;
  for (const t of triggers)
    if (t.evtenabled === 'D')
      f.warnings.push(`event trigger ${t.evtname} is disabled: schema changes will not be captured; ALTER EVENT TRIGGER ${t.evtname} ENABLE`);
  if (!s.rolsuper) {
    f.warnings.push(
      ddlCaptureInstalled
        ? 'not a superuser: the DDL capture functions cannot be refreshed (the installed event triggers stay in place)'
        : 'the role cannot create event triggers (superuser only): schema changes (DDL) will NOT be captured, and a restore past a schema change will fail; run setup once as a superuser to install DDL capture',
    );
  }

  return ddlCaptureInstalled;
}

/**
 * Installs (or refreshes) DDL capture, inside setup's transaction in the source (setup-source.ts
 * createInSource): the functions, its configuration, the message key, and the event triggers
 * unless all are there already. Needs a superuser.
 */
export async function installDdlCapture(client: pg.Client, cfg: Config, installed: boolean, log: Logger): Promise<void> {
  await client.query(DDL_CAPTURE_SQL);
  await client.query(
    `INSERT INTO katya_cdp.config (key, value) VALUES ('publication', $1), ('newKeylessTables', $2)
       ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value WHERE katya_cdp.config.value IS DISTINCT FROM EXCLUDED.value`,
    [cfg.source.publication, cfg.source.newKeylessTables],
  );
  // The HMAC key of the DDL messages (ddl-capture.sql): made once, kept across setups (a new key
  // would make capture drop the messages still in the slot, signed with the old one).
  await client.query(`INSERT INTO katya_cdp.secret (id, ikey, okey) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING`, hmacPads(randomBytes(32)));
  if (!installed) {
    for (const t of EVENT_TRIGGERS) await client.query(`DROP EVENT TRIGGER IF EXISTS ${t}`);
    for (const [name, event, fn] of EVENT_TRIGGER_DEFS) await client.query(`CREATE EVENT TRIGGER ${name} ON ${event} EXECUTE FUNCTION ${fn}`);
    log.info('setup: DDL capture installed (event triggers katya_cdp_*)');
  }
}
