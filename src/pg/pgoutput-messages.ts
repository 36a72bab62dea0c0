// The messages decodePgoutput (pgoutput.ts) returns: one interface per pgoutput message type of
// protocol version 1 in text mode (PostgreSQL 15 docs, 55.9 "Logical Replication Message Formats").

import type { Lsn } from '../util/lsn.js';

/** Column values of one row in text output format. */
export interface Tuple {
  /** One entry per column: the text output, or null for SQL NULL and for unchanged TOAST values. */
  values: (string | null)[];
  /**
   * Indexes of columns whose value is an unchanged TOASTed value that the server did not send
   * ('u'). Their entry in `values` is null but they are NOT NULL: the row keeps its old value.
   */
  unchanged: number[];
}

export interface Begin {
  tag: 'begin';
  /** LSN of the commit record of this transaction (the "final LSN"). */
  finalLsn: Lsn;
  /** Microseconds since the Unix epoch. */
  commitTime: number;
  xid: number;
}

export interface Commit {
  tag: 'commit';
  /** Currently unused by the server; always 0. */
  flags: number;
  /** LSN of the commit record (equals Begin.finalLsn). */
  commitLsn: Lsn;
  /** End of the commit record: confirming this LSN means "this transaction is done". */
  endLsn: Lsn;
  /** Microseconds since the Unix epoch. */
  commitTime: number;
}

export interface Origin {
  tag: 'origin';
  /** LSN of the commit on the origin server. */
  lsn: Lsn;
  name: string;
}

export type ReplicaIdentity = 'd' | 'n' | 'f' | 'i';

export interface RelationColumn {
  /** 1 when the column is part of the replica identity key, else 0. */
  flags: number;
  name: string;
  typeOid: number;
  /** atttypmod, -1 when the type has none. */
  typmod: number;
}

export interface Relation {
  tag: 'relation';
  oid: number;
  /** Namespace. The server sends '' for pg_catalog; we report 'pg_catalog'. */
  schema: string;
  name: string;
  /** relreplident: d = default (primary key), n = nothing, f = full, i = index. */
  replicaIdentity: ReplicaIdentity;
  columns: RelationColumn[];
}

export interface Type {
  tag: 'type';
  oid: number;
  /** Namespace. The server sends '' for pg_catalog; we report 'pg_catalog'. */
  schema: string;
  name: string;
}

export interface Insert {
  tag: 'insert';
  relationOid: number;
  new: Tuple;
}

export interface Update {
  tag: 'update';
  relationOid: number;
  /**
   * 'K': `old` holds the old replica-identity key (sent only when the update changed it);
   * 'O': `old` holds the whole old row (REPLICA IDENTITY FULL); null: no old tuple was sent.
   */
  oldKind: 'K' | 'O' | null;
  old: Tuple | null;
  new: Tuple;
}

export interface Delete {
  tag: 'delete';
  relationOid: number;
  /** 'K': only the key columns are set (others are null); 'O': the whole old row. */
  oldKind: 'K' | 'O';
  old: Tuple;
}

export interface Truncate {
  tag: 'truncate';
  cascade: boolean;
  restartIdentity: boolean;
  relationOids: number[];
}

export interface Message {
  tag: 'message';
  /** True for pg_logical_emit_message(true, ...): delivered inside its transaction. */
  transactional: boolean;
  lsn: Lsn;
  prefix: string;
  /** A copy (messages are rare; the source buffer may be reused by the socket layer). */
  content: Buffer;
}

export type PgoutputMessage = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message;
