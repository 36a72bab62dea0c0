// The replication connection itself: a pg.Client that starts a walsender, with the session
// settings pgoutput formats values with, and the parts of pg's Connection the stream drives.

import type { Socket } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import pg from 'pg';

/** The parts of pg's Connection we use; they exist at runtime but not in @types/pg. */
export interface PgConnection {
  stream: Socket;
  on(event: 'copyData', fn: (msg: { chunk: Buffer }) => void): unknown;
  once(event: 'replicationStart', fn: () => void): unknown;
  removeListener(event: string, fn: (...args: never[]) => void): unknown;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
}

/**
 * Session settings for the replication connection. pgoutput formats column values with the
 * walsender session's settings, so a database or role default (extra_float_digits = 0, DateStyle
 * 'SQL, DMY', IntervalStyle 'sql_standard') would otherwise reach the archive: floats lose
 * precision and dates / intervals become text the restore target may read differently. These are
 * exactly what PostgreSQL's own logical replication sends (libpqwalreceiver_connect(),
 * src/backend/replication/libpqwalreceiver/libpqwalreceiver.c: for a logical connection
 * "options" = "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3").
 */
export const REPLICATION_SESSION_OPTIONS = '-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3';

/** The connection's `options` startup parameter: any the user gave, then ours (which must win). */
export function replicationOptions(userOptions: string | undefined | null): string {
  const u = userOptions?.trim();
  return u ? `${u} ${REPLICATION_SESSION_OPTIONS}` : REPLICATION_SESSION_OPTIONS;
}

/** A client for a replication connection (not connected yet). */
export function replicationClient(connectionString: string, ssl: false | ConnectionOptions | undefined): pg.Client {
  // `replication: 'database'` makes the server start a walsender that accepts replication
  // commands and simple SQL (55.4). It is a startup parameter, absent from @types/pg.
  const config = {
    connectionString,
    ...(ssl !== undefined ? { ssl } : {}),
    replication: 'database',
    application_name: 'katya-cdp',
  };
  const client = new pg.Client(config as pg.ClientConfig);
  // pg lets a connection string's (or PGOPTIONS') `options` win over the config's: ours are
  // appended to whatever it resolved, so they apply last (a later -c overrides an earlier one).
  const params = (client as unknown as { connectionParameters: { options?: string } }).connectionParameters;
  params.options = replicationOptions(params.options);
  return client;
}

/** pg's Connection under a connected client. */
export function connectionOf(client: pg.Client): PgConnection {
  return (client as unknown as { connection: PgConnection }).connection;
}
