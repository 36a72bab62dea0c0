import type pg from 'pg';

// Failover slots (PostgreSQL 17+, issue 10). A logical slot lives on one server. Before 17, a
// physical standby has no copy of it: after a failover the promoted standby has no slot, the WAL
// the old slot held back is not kept for us, and capture cannot continue where it stopped: the
// stream breaks (`cdp setup` on the new primary makes a new slot and records the break in the
// archive's chain of custody; no restore spans it, a new base is needed). From 17 a slot created
// with `failover = true` is copied to standbys that run with `sync_replication_slots = on`
// (plus `hot_standby_feedback = on`, `primary_slot_name`, and a dbname in `primary_conninfo`);
// listing the standby's physical slot in `synchronized_standby_slots` on the primary keeps the
// slot from confirming changes the standby has not received, so the copy can be used after
// promotion. Capture then resumes on the new primary from the synced slot.

export const FAILOVER_MIN_VERSION = 170000;

/** Set-up problem of `source.failoverSlot` on this server, or undefined. */
export function failoverSlotProblem(wanted: boolean, serverVersionNum: number): string | undefined {
  if (!wanted || serverVersionNum >= FAILOVER_MIN_VERSION) return undefined;
  return (
    `source.failoverSlot needs PostgreSQL 17 or newer (the source runs ${serverVersionNum}); before 17 a standby has no copy of a logical slot, ` +
    `so after a failover run cdp setup on the new primary (it records the break; take a new base), or set source.failoverSlot: false`
  );
}

/** The statement that creates the engine's slot (parameter $1: its name). */
export function createSlotSql(failover: boolean): string {
  // pg_create_logical_replication_slot(name, plugin, temporary, twophase, failover): the fifth
  // argument exists from 17 on.
  return failover
    ? `SELECT (lsn - '0/0'::pg_lsn)::text AS l FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)`
    : `SELECT (lsn - '0/0'::pg_lsn)::text AS l FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')`;
}

/** A warning when the existing slot's failover flag differs from source.failoverSlot (17+), or undefined. */
export async function existingSlotFailoverWarning(client: pg.Client, slot: string, wanted: boolean, serverVersionNum: number): Promise<string | undefined> {
  if (serverVersionNum < FAILOVER_MIN_VERSION) return undefined;
  const r = await client.query<{ failover: boolean }>('SELECT failover FROM pg_catalog.pg_replication_slots WHERE slot_name = $1', [slot]);
  if (r.rowCount === 0 || r.rows[0]!.failover === wanted) return undefined;
  return (
    `slot ${slot} exists with failover = ${r.rows[0]!.failover}, but source.failoverSlot is ${wanted}: ` +
    `with capture stopped, run ALTER_REPLICATION_SLOT ${slot} (FAILOVER ${wanted}) on a replication connection ` +
    `(psql "dbname=<db> replication=database")`
  );
}
