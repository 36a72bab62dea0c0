import { CdpError, ErrorCodes } from '../errors.js';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../format/change-event.js';
import type { Begin, Commit, Delete, Insert, Message, Relation, Truncate, Update } from '../pg/pgoutput.js';
import type { Lsn } from '../util/lsn.js';
import { verifyMessage, type MessageKey } from './ddl-auth.js';

// pgoutput messages -> change events (DESIGN.md section 3, schemas/change-event.avsc). Pure: no
// I/O, no clock. The capture loop resolves column types (an async catalog lookup) before handing a
// Relation over, so that mapping every change stays synchronous and allocation-light.
//
// Identity of a change = (commitLsn, position). pgoutput sends a transaction only once it has
// committed (the reorder buffer replays it at commit: PostgreSQL docs 49.1 "Logical Decoding
// Examples" / 49.6.4 "Output Plugin Callbacks"), and Begin already carries the commit record's LSN
// (final_lsn), commit time and xid, so every change can be stamped and produced before its Commit
// arrives: a transaction of any size streams through without being held in memory.

/** Logical-message prefixes written by setup's event trigger and by capture itself. */
export const PREFIX = {
  heartbeat: 'cdp.heartbeat',
  ddl: 'cdp.ddl',
  sequences: 'cdp.sequences',
} as const;

/**
 * The engine's own schema in the source (DDL capture: its key, its configuration). A FOR ALL TABLES
 * publication publishes its tables too; their rows never leave capture (the HMAC key must not
 * reach Kafka or the archive, and restore has nothing to do with them).
 */
export const ENGINE_SCHEMA = 'katya_cdp';

/** Shared empty list (never mutated): DELETE has no new tuple, hence no unchanged columns. */
const NO_COLUMNS: number[] = [];

interface KnownRelation {
  schema: string;
  table: string;
  info: RelationInfo;
}

export class ChangeMapper {
  private readonly relations = new Map<number, KnownRelation>();
  private open = false;
  /** Non-transactional logical messages dropped so far (see message()). */
  nonTransactionalDropped = 0;
  /**
   * Key of the signed messages (ddl-auth.ts), read by capture from katya_cdp.secret. cdp.ddl and
   * cdp.sequences messages that do not verify under it are dropped and reported to onForged.
   */
  messageKey: MessageKey | undefined;
  onForged: ((prefix: string, why: string, lsn: Lsn) => void) | undefined;
  /** Signed-prefix messages refused so far. */
  forgedDropped = 0;
  private commitLsn: Lsn = 0;
  private xid = 0;
  private commitTime = 0;
  private position = 0;

  constructor(readonly database: string) {}

  /** Relation messages precede the first change of a relation in each session and after DDL. */
  relation(rel: Relation, types: string[]): RelationInfo {
    if (types.length !== rel.columns.length) {
      throw new CdpError(ErrorCodes.INTERNAL, `relation ${rel.schema}.${rel.name}: ${types.length} types for ${rel.columns.length} columns`);
    }
    const key: number[] = [];
    rel.columns.forEach((c, i) => {
      if (c.flags & 1) key.push(i);
    });
    const info: RelationInfo = {
      oid: rel.oid,
      replicaIdentity: rel.replicaIdentity,
      columns: rel.columns.map((c) => c.name),
      types,
      key,
    };
    this.relations.set(rel.oid, { schema: rel.schema, table: rel.name, info });
    return info;
  }

  /** The xid of the open transaction (its Begin's), for lookups made while decoding it. */
  get currentXid(): number | undefined {
    return this.open ? this.xid : undefined;
  }

  get inTransaction(): boolean {
    return this.open;
  }

  begin(b: Begin): void {
    if (this.open) throw protocol(`pgoutput Begin of xid ${b.xid} inside the open transaction ${this.xid}`);
    this.open = true;
    this.commitLsn = b.finalLsn;
    this.xid = b.xid;
    this.commitTime = b.commitTime;
    this.position = 0;
  }

  /**
   * Closes the transaction. Returns its COMMIT marker (position = number of data records, endLsn
   * = end of the commit record), or null when the transaction had no data record (heartbeats).
   */
  commit(c: Commit, changeLsn: Lsn = c.commitLsn): ChangeEvent | null {
    if (!this.open) throw protocol(`pgoutput Commit at ${c.commitLsn} without a Begin`);
    if (c.commitLsn !== this.commitLsn) {
      throw protocol(`pgoutput Commit LSN ${c.commitLsn} differs from its Begin's final LSN ${this.commitLsn}`);
    }
    this.open = false;
    if (this.position === 0) return null;
    return this.event('COMMIT', changeLsn, {
      endLsn: c.endLsn,
      // The marker's own position is the count of data records before it.
      position: this.position,
    });
  }

  // INSERT / UPDATE / DELETE are the hot path: one object literal of a fixed shape per change,
  // no intermediate objects.
  insert(m: Insert, changeLsn: Lsn): ChangeEvent | null {
    const rel = this.known(m.relationOid, 'Insert');
    this.requireOpen('INSERT');
    if (rel.schema === ENGINE_SCHEMA) return null;
    return this.row('INSERT', changeLsn, rel, null, null, m.new.values, m.new.unchanged);
  }

  update(m: Update, changeLsn: Lsn): ChangeEvent | null {
    const rel = this.known(m.relationOid, 'Update');
    this.requireOpen('UPDATE');
    if (rel.schema === ENGINE_SCHEMA) return null;
    return this.row('UPDATE', changeLsn, rel, m.oldKind, m.old ? m.old.values : null, m.new.values, m.new.unchanged);
  }

  delete(m: Delete, changeLsn: Lsn): ChangeEvent | null {
    const rel = this.known(m.relationOid, 'Delete');
    this.requireOpen('DELETE');
    if (rel.schema === ENGINE_SCHEMA) return null;
    return this.row('DELETE', changeLsn, rel, m.oldKind, m.old.values, null, NO_COLUMNS);
  }

  truncate(m: Truncate, changeLsn: Lsn): ChangeEvent {
    const rels = m.relationOids.map((oid) => this.known(oid, 'Truncate'));
    const content = JSON.stringify({ relations: rels.map((r) => [r.schema, r.table]), cascade: m.cascade, restartIdentity: m.restartIdentity });
    // schema/table name the relation when there is exactly one (table filters); else the content says.
    const one = rels.length === 1 ? rels[0]! : undefined;
    this.requireOpen('Truncate');
    return this.event('TRUNCATE', changeLsn, { schema: one?.schema ?? '', table: one?.table ?? '', content, position: this.position++ });
  }

  /**
   * Logical messages: cdp.heartbeat is dropped (it exists only to make a transaction), cdp.ddl and
   * cdp.sequences become DDL / SEQUENCES records, anything else a MESSAGE record.
   *
   * A non-transactional message (pg_logical_emit_message(false, ...)) belongs to no transaction:
   * it has no commit LSN, xid or COMMIT marker, and restore has nothing to apply for it. Produced
   * as a record it would break restore's transaction grouping (a record with no COMMIT marker),
   * so it is dropped here (null) and counted in `nonTransactionalDropped`; capture logs and
   * meters it. (Transactional ones — all of ours — are kept.)
   */
  message(m: Message, changeLsn: Lsn): ChangeEvent | null {
    if (!m.transactional) {
      this.nonTransactionalDropped++;
      return null;
    }
    if (m.prefix === PREFIX.heartbeat) return null;
    if (!this.open) throw protocol(`pgoutput transactional Message '${m.prefix}' outside a transaction`);
    let text = messageText(m.content);
    const op = m.prefix === PREFIX.ddl ? 'DDL' : m.prefix === PREFIX.sequences ? 'SEQUENCES' : 'MESSAGE';
    if (op !== 'MESSAGE') {
      // Anyone can write a message with our prefix (pg_logical_emit_message is PUBLIC); restore
      // acts on these, so only the signed ones are kept, as their verified body.
      const v = verifyMessage(this.messageKey, text);
      if (!v.ok) {
        this.forgedDropped++;
        this.onForged?.(m.prefix, v.why, changeLsn);
        return null;
      }
      text = v.body;
    }
    return this.event(op, changeLsn, { content: text, prefix: m.prefix, position: this.position++ });
  }

  private known(oid: number, what: string): KnownRelation {
    const rel = this.relations.get(oid);
    if (!rel) throw protocol(`pgoutput ${what} for relation ${oid} before its Relation message`);
    return rel;
  }

  private requireOpen(what: string): void {
    if (!this.open) throw protocol(`pgoutput ${what} outside a transaction`);
  }

  private row(
    op: 'INSERT' | 'UPDATE' | 'DELETE',
    changeLsn: Lsn,
    rel: KnownRelation,
    oldKind: string | null,
    old: (string | null)[] | null,
    values: (string | null)[] | null,
    unchanged: number[],
  ): ChangeEvent {
    return {
      op,
      database: this.database,
      commitLsn: this.commitLsn,
      changeLsn,
      endLsn: 0,
      xid: this.xid,
      commitTime: this.commitTime,
      position: this.position++,
      schema: rel.schema,
      table: rel.table,
      relation: rel.info,
      oldKind,
      old,
      new: values,
      unchanged,
      content: null,
      prefix: null,
    };
  }

  /** Events other than row changes (COMMIT, TRUNCATE, DDL, messages), stamped with the open transaction. */
  private event(op: ChangeEvent['op'], changeLsn: Lsn, fields: Partial<ChangeEvent> & { position: number }): ChangeEvent {
    return emptyEvent({ op, database: this.database, commitLsn: this.commitLsn, changeLsn, xid: this.xid, commitTime: this.commitTime, ...fields });
  }
}

/**
 * Message content as text. Ours are JSON (UTF-8); a foreign message that is not valid UTF-8 is
 * kept losslessly as bytea text output (\x + hex), the same convention as bytea columns.
 */
export function messageText(content: Buffer): string {
  const text = content.toString('utf8');
  if (Buffer.from(text, 'utf8').equals(content)) return text;
  return `\\x${content.toString('hex')}`;
}

function protocol(message: string): CdpError {
  return new CdpError(ErrorCodes.PROTOCOL, message);
}
