// The START_REPLICATION command of a logical slot with pgoutput (PostgreSQL 15 docs, 55.4).

import { CdpError, ErrorCodes } from '../errors.js';
import { formatLsn, type Lsn } from '../util/lsn.js';
import { quoteIdent } from './quote.js';

/**
 * pgoutput options for START_REPLICATION (PostgreSQL 15 docs, 31.5 / pgoutput): protocol 1, the
 * publication, and logical decoding messages (pg_logical_emit_message; carries captured DDL).
 * `publication_names` is parsed by the server as a list of identifiers (SplitIdentifierString), so
 * the name is double-quoted with embedded quotes doubled: case and commas survive.
 */
export function pluginOptions(publication: string, serverVersionNum: number): Record<string, string> {
  if (serverVersionNum < 140000) {
    // `messages` (and so DDL capture through logical decoding messages) needs pgoutput from 14.
    throw new CdpError(
      ErrorCodes.SOURCE_NOT_READY,
      `PostgreSQL ${serverVersionNum} is too old: capture needs PostgreSQL 14 or newer (pgoutput option 'messages')`,
      { details: { serverVersionNum } },
    );
  }
  return {
    proto_version: '1',
    publication_names: `"${publication.replaceAll('"', '""')}"`,
    messages: 'true',
  };
}

function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** START_REPLICATION SLOT slot LOGICAL startLsn (options), the names and values quoted. */
export function startReplicationCommand(slot: string, startLsn: Lsn, pluginOptions: Record<string, string>): string {
  const opts = Object.entries(pluginOptions).map(([k, v]) => `${quoteIdent(k)} ${quoteLiteral(v)}`);
  return `START_REPLICATION SLOT ${quoteIdent(slot)} LOGICAL ${formatLsn(startLsn)}${opts.length ? ` (${opts.join(', ')})` : ''}`;
}
