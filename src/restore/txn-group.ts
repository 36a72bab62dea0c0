import type { Lsn } from '../util/lsn.js';
import { CURSOR_SCHEMA } from './cursor.js';
import { DEFERRED_TRIGGER_GUARD_SQL } from './target-catalog.js';
import type { TxnHeader } from './target.js';

// Grouping (split from apply.ts, issue 12 item 5): many small source transactions share one target
// transaction (a COMMIT per source transaction would cost an fsync each; Postgres's own apply
// worker pays exactly that). Atomicity is kept because a group contains only whole source
// transactions, and the resume cursor (last applied commit LSN) is updated in the same target
// transaction, so after a crash the target holds exactly the transactions up to the cursor and
// nothing of the next one (G2, no transaction applied twice).

export interface GroupLimits {
  /** Write the resume cursor into _cdp_restore.cursor in each target transaction. */
  cursor: boolean;
  /** Commit a group once it holds this many changes (at a source transaction boundary). */
  groupMaxChanges?: number;
  /** ... or once it is this old. */
  groupMaxMs?: number;
  /** One target transaction per source transaction (the --sql file: atomicity visible in the text). */
  onePerSource?: boolean;
  /**
   * Changes a group may span while the coalescing buffer keeps a load's inserts (RowWriter.retaining;
   * default = groupMaxChanges: never, and the buffer keeps nothing past its window). A later
   * transaction's updates or delete of a row still in the buffer then cost the target nothing.
   */
  coalesceMaxChanges?: number;
}

/** What the cursor update records: the last applied source transaction and the count since the last commit. */
export interface AppliedSoFar {
  transactions: number;
  last: TxnHeader | undefined;
  lastEndLsn: Lsn;
}

/** The resume cursor's update for a target transaction that applied `newTransactions` source transactions up to `last`. */
export function cursorUpdateSql(last: TxnHeader, endLsn: Lsn, newTransactions: number): string {
  return (
    `UPDATE ${CURSOR_SCHEMA}.cursor SET commit_lsn = ${last.commitLsn}, commit_time = ${last.commitTime}, xid = ${last.xid}, ` +
    `end_lsn = ${endLsn}, transactions = transactions + ${newTransactions}, updated_at = clock_timestamp();\n`
  );
}

/** The open target transaction: when to begin one, when it is full, and the SQL that ends it. */
export class TxnGroup {
  /** A target transaction is open. */
  open = false;
  /** Changes (of every kind) since the open target transaction began. */
  changes = 0;
  private started = 0;
  /** Source transactions committed on the target so far (stats.transactions at the last commit). */
  private committedTxns = 0;
  private readonly cursor: boolean;
  private readonly maxChanges: number;
  private readonly maxMs: number;
  private readonly coalesceMaxChanges: number;

  constructor(
    limits: GroupLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.cursor = limits.cursor;
    this.maxChanges = limits.onePerSource ? 0 : (limits.groupMaxChanges ?? 20_000);
    this.maxMs = limits.groupMaxMs ?? 2_000;
    this.coalesceMaxChanges = limits.coalesceMaxChanges ?? this.maxChanges;
  }

  /** A group may span source transactions while the coalescing buffer keeps a load (see full). */
  get spansLoads(): boolean {
    return this.maxChanges > 0 && this.coalesceMaxChanges > this.maxChanges;
  }

  /** At a source transaction's BEGIN: the SQL that opens a target transaction, or '' when one is open. */
  begin(): string {
    if (this.open) return '';
    this.open = true;
    this.changes = 0;
    this.started = this.now();
    return 'BEGIN;\n';
  }

  /**
   * Whether the open group should commit at this source transaction's end. While the coalescing
   * buffer keeps a load's rows (`keepingLoad`, RowWriter.retaining) the group may go on up to
   * coalesceMaxChanges (and 30 s; the buffer itself is bounded by netMaxBytes): a later
   * transaction's update or delete of a row still in the buffer then costs nothing on the target.
   * Otherwise groupMaxChanges and groupMaxMs bound it.
   */
  full(keepingLoad: boolean): boolean {
    const age = this.now() - this.started;
    if (keepingLoad && this.spansLoads) {
      return this.changes >= this.coalesceMaxChanges || age >= Math.max(this.maxMs, 30_000);
    }
    return this.changes >= this.maxChanges || age >= this.maxMs;
  }

  /**
   * Closes the open target transaction (the caller has written every change): the cursor update
   * and COMMIT; in a live session, the deferred-trigger guard first (target-catalog.ts), which fails
   * the group if user code run in it made a trigger that would fire at COMMIT as the superuser.
   */
  end(applied: AppliedSoFar): string {
    let sql = '';
    if (this.cursor && applied.last) sql = cursorUpdateSql(applied.last, applied.lastEndLsn, applied.transactions - this.committedTxns);
    if (this.cursor) sql += DEFERRED_TRIGGER_GUARD_SQL;
    this.committedTxns = applied.transactions;
    this.open = false;
    return sql + 'COMMIT;\n';
  }
}
