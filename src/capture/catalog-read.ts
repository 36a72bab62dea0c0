import type pg from 'pg';
import { pgError } from '../errors.js';
import { counter } from '../util/metrics.js';
import { sleep } from '../util/retry.js';

// The catalog read behind capture's column type names (type-names.ts), made for a transaction
// being decoded: it must see that transaction. PostgreSQL flushes a commit record (which the
// walsender may decode and send at once) before it takes the transaction out of the running set
// (ProcArrayEndTransaction, after any synchronous-replication wait) and before it sends the cache
// invalidations. A read in that window saw the names from before a rename, and the rows after it
// were archived with the old name (restore stopped on `type "public.mood" does not exist`).
//
// So the read is one statement whose snapshot must show the transaction (pg_visible_in_snapshot),
// asked again with a short backoff while it does not; user-defined type names are built from the
// pg_type / pg_namespace rows read under that snapshot, as format_type names them, and a row whose
// format_type (read through the system caches) still disagrees is asked again too, for a few
// seconds at most (only format_type knows a typmod's output, e.g. PostGIS geometry(Point,4326)).
//
// A committed transaction always becomes visible, unless it waits for a synchronous standby that
// waits for us: this capture's walsender named in synchronous_standby_names (or '*'). The read
// checks for that every second while it waits, and then gives up (the caller keeps those names for
// that lookup only); otherwise it keeps waiting, reporting every warnEveryMs, until stopped.

export interface InvisibleNotice {
  xid: number;
  waitedMs: number;
  /** pg_stat_activity.wait_event of the backend still holding the transaction, if any. */
  waitEvent: string | null;
  /** True when the read gave up: this capture is a synchronous standby the transaction waits for. */
  gaveUp: boolean;
}

export interface ReadTypesOptions {
  /** Whether this capture's walsender is a synchronous standby now (pg_stat_replication.sync_state). */
  syncStandby?: () => Promise<boolean>;
  invisible?: (w: InvisibleNotice) => void;
  /** A notice while the wait goes on, this often (default 30 s). */
  warnEveryMs?: number;
  signal?: AbortSignal;
}

export interface LookupRow {
  i: number;
  name: string | null;
  typtype: string | null;
  schema: string | null;
  typname: string | null;
  array: boolean | null;
  xmins: string[] | null;
  /** Whether the decoded transaction ($3) is visible in the snapshot the row was read under (null: none given). */
  visible: boolean | null;
  /** format_type (system caches) disagrees with the name built from the rows: the caches lag. */
  stale: boolean;
  waitEvent: string | null;
}

const gaveUpTotal = counter(
  'cdp_capture_type_names_invisible_total',
  'Type-name lookups that gave up waiting for the decoded transaction to become visible (this capture is a synchronous standby it waits for)',
);

/** How long a disagreeing format_type is waited for once the transaction is visible. */
const CACHE_LAG_MS = 5_000;

/** The catalog's rows for `wanted` (type oid, typmod), read under a snapshot that shows transaction `xid`. */
export async function readTypes(
  client: pg.ClientBase,
  wanted: Array<{ oid: number; typmod: number }>,
  xid: number | undefined,
  opts: ReadTypesOptions,
): Promise<{ rows: LookupRow[]; gaveUp: boolean }> {
  const started = Date.now();
  let warnedAt = started;
  let checkedAt = started;
  for (let delay = 1; ; delay = Math.min(delay * 2, 100)) {
    const rows = await read(client, wanted, xid);
    const first = rows[0];
    const now = Date.now();
    const waited = now - started;
    if (first === undefined || first.visible === null) return { rows, gaveUp: false };
    if (first.visible) {
      if (!rows.some((r) => r.stale) || waited >= CACHE_LAG_MS) return { rows, gaveUp: false };
    } else {
      let sync = false;
      if (opts.syncStandby && now - checkedAt >= 1000) {
        checkedAt = now;
        sync = await opts.syncStandby();
      }
      if (sync) {
        gaveUpTotal.inc();
        opts.invisible?.({ xid: xid!, waitedMs: waited, waitEvent: first.waitEvent, gaveUp: true });
        return { rows, gaveUp: true };
      }
      if (now - warnedAt >= (opts.warnEveryMs ?? 30_000)) {
        warnedAt = now;
        opts.invisible?.({ xid: xid!, waitedMs: waited, waitEvent: first.waitEvent, gaveUp: false });
      }
    }
    await sleep(delay, opts.signal);
  }
}

async function read(client: pg.ClientBase, wanted: Array<{ oid: number; typmod: number }>, xid: number | undefined): Promise<LookupRow[]> {
  try {
    const res = await client.query<LookupRow>(LOOKUP_SQL, [wanted.map((w) => w.oid), wanted.map((w) => w.typmod), xid ?? null]);
    return res.rows;
  } catch (err) {
    throw pgError('cannot look up column types with format_type', err, true);
  }
}

// One statement, one snapshot (READ COMMITTED): pg_current_snapshot() is the snapshot the joins read
// under. $3 is a 32-bit xid as pgoutput sends it, widened to the xid8 nearest the snapshot's xmax
// (which is latestCompletedXid + 1: a transaction still running can be past it).
// h.name: a user-defined type as format_type names it on this connection (search_path pg_catalog):
// schema-qualified unless in pg_catalog; a true array (an element, array_subscript_handler, not
// plain storage) is its element's name and []. Built-in types (oid < 16384, and a user array of
// one) keep format_type: they are never renamed. With a typmod, format_type gives the name.
const LOOKUP_SQL = `
WITH s AS (SELECT pg_current_snapshot() AS snap),
     x AS (SELECT snap, ((pg_snapshot_xmax(snap)::text::bigint >> 32) << 32) + $3::bigint AS wide, pg_snapshot_xmax(snap)::text::bigint AS mx FROM s),
     y AS (SELECT snap, CASE WHEN wide - mx > 2147483648 THEN wide - 4294967296 WHEN mx - wide > 2147483648 THEN wide + 4294967296 ELSE wide END AS w FROM x),
     v AS (SELECT CASE WHEN $3::bigint IS NULL THEN NULL WHEN w < 3 THEN true ELSE pg_visible_in_snapshot(w::text::xid8, snap) END AS visible FROM y),
     b AS (SELECT v.visible,
                  CASE WHEN v.visible = false
                       THEN (SELECT a.wait_event::text FROM pg_stat_activity a WHERE a.backend_xid = ($3::bigint % 4294967296)::text::xid LIMIT 1) END AS wait_event
             FROM v)
SELECT (o.i)::int AS i,
       -- The typmod as sent, -1 for none: format_type(oid, NULL) names an unbounded bpchar
       -- 'character' and an unbounded bit 'bit', which as a cast mean character(1) and bit(1)
       -- (restore's '...'::character cut values to one character); -1 gives bpchar and "bit".
       CASE WHEN o.typmod < 0 AND h.name IS NOT NULL THEN h.name
            ELSE format_type(o.oid, o.typmod) END AS name,
       t.typtype::text AS typtype, n.nspname::text AS schema, t.typname::text AS typname,
       (e.oid IS NOT NULL) AS array,
       ARRAY[t.xmin::text, n.xmin::text, e.xmin::text, en.xmin::text] AS xmins,
       b.visible,
       (h.name IS NOT NULL AND format_type(o.oid, NULL) IS DISTINCT FROM h.name) AS stale,
       b.wait_event AS "waitEvent"
  FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY AS o(oid, typmod, i)
  CROSS JOIN b
  LEFT JOIN pg_type t ON t.oid = o.oid
  LEFT JOIN pg_namespace n ON n.oid = t.typnamespace
  LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typsubscript = 'array_subscript_handler'::regproc AND t.typstorage <> 'p'
  LEFT JOIN pg_namespace en ON en.oid = e.typnamespace
  LEFT JOIN LATERAL (
    SELECT CASE WHEN o.oid < 16384 OR t.oid IS NULL OR e.oid < 16384 THEN NULL
                WHEN e.oid IS NOT NULL
                  THEN CASE WHEN en.nspname = 'pg_catalog' THEN '' ELSE quote_ident(en.nspname) || '.' END || quote_ident(e.typname) || '[]'
                ELSE CASE WHEN n.nspname = 'pg_catalog' THEN '' ELSE quote_ident(n.nspname) || '.' END || quote_ident(t.typname) END AS name
  ) h ON true`;

/** Whether the walsender streaming `slot` is a synchronous standby (sync or quorum) of the source. */
export async function isSyncStandby(client: pg.ClientBase, slot: string): Promise<boolean> {
  try {
    const r = await client.query<{ s: string }>(
      `SELECT r.sync_state::text AS s FROM pg_stat_replication r JOIN pg_replication_slots l ON l.active_pid = r.pid WHERE l.slot_name = $1`,
      [slot],
    );
    return r.rows.some((x) => x.s === 'sync' || x.s === 'quorum');
  } catch (err) {
    throw pgError('cannot read pg_stat_replication', err, true);
  }
}
