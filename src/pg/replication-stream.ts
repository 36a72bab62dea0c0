// A logical replication client over node-postgres: connection, authentication and the simple
// query protocol come from `pg`; the COPY BOTH sub-protocol of START_REPLICATION is ours.
//
// PostgreSQL 15 docs, 55.4 "Streaming Replication Protocol": after START_REPLICATION the server
// sends CopyData messages holding XLogData ('w') or Primary keepalive ('k'); the client sends
// CopyData holding Standby status updates ('r'). For a logical slot the "flushed" position of a
// status update becomes the slot's confirmed_flush_lsn, the point from which the next
// START_REPLICATION with LSN 0/0 resumes. That is the whole of guarantee G1 (DESIGN.md section 2):
//
//   - we never acknowledge by ourselves: write = flush = apply = what the consumer confirm()ed,
//     never what we merely received (pg-logical-replication acknowledges every message on arrival
//     and from a 1 s timer, which loses data on a crash);
//   - we still talk to the server while the consumer is blocked (on Kafka, say): keepalives that
//     request a reply are answered at once from the socket handler, and a status update goes out
//     every statusIntervalMs, so wal_sender_timeout (default 60 s) never fires;
//   - back-pressure (G4): when `highWaterMark` events, or `highWaterBytes` bytes of CopyData
//     payload, wait for the consumer, the socket is paused, TCP flow control stops the walsender,
//     and the slot keeps the WAL. Reading resumes once both are below half. The byte bound is what
//     makes memory independent of row size: a count alone lets 4,000 rows of 50 MB hold 200 GB.
//     What may still arrive after the pause is the rest of the socket chunk being parsed, and a
//     single message is held whole however large (pg's parser needs all of it), so the buffer stays
//     within highWaterBytes + one socket read + one message.

import type { Socket } from 'node:net';
import pg from 'pg';
import { CdpError, ErrorCodes, pgError, toError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { formatLsn, parseLsn, type Lsn } from '../util/lsn.js';
import { withTimeout } from '../util/timeout.js';
import { quoteIdent } from './quote.js';
import { CopyTag, decodePgoutput, encodeStandbyStatus, parseKeepalive, XLOGDATA_HEADER_SIZE, type PgoutputMessage } from './pgoutput.js';

export type StreamEvent =
  { kind: 'data'; walStart: number; walEnd: number; message: PgoutputMessage } | { kind: 'keepalive'; walEnd: number; replyRequested: boolean };

export interface ReplicationStreamOptions {
  connectionString: string;
  /** TLS options for node-postgres (tls.ts pgConnection); absent: plain, as the URL says. */
  ssl?: false | import('node:tls').ConnectionOptions;
  log: Logger;
  /** Interval of unsolicited standby status updates (ms). Keep well below wal_sender_timeout. */
  statusIntervalMs?: number;
  /** Events buffered for the consumer before the socket is paused. */
  highWaterMark?: number;
  /**
   * Bytes buffered for the consumer (the CopyData payload sizes of the waiting events, a proxy for
   * the memory their decoded rows hold) before the socket is paused. Default 64 MiB.
   */
  highWaterBytes?: number;
  /** Bound on the graceful part of close() (CopyDone handshake, Terminate), ms. */
  closeTimeoutMs?: number;
}

export interface SystemIdentity {
  systemId: string;
  timeline: number;
  xlogpos: Lsn;
  dbname: string | null;
}

/** The parts of pg's Connection we use; they exist at runtime but not in @types/pg. */
interface PgConnection {
  stream: Socket;
  on(event: 'copyData', fn: (msg: { chunk: Buffer }) => void): unknown;
  once(event: 'replicationStart', fn: () => void): unknown;
  removeListener(event: string, fn: (...args: never[]) => void): unknown;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
}

type State = 'idle' | 'connecting' | 'connected' | 'starting' | 'streaming' | 'ended' | 'failed' | 'closed';

const DEFAULT_STATUS_INTERVAL_MS = 10_000;
const DEFAULT_HIGH_WATER_MARK = 10_000;
const DEFAULT_HIGH_WATER_BYTES = 64 * 1024 * 1024;
const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;

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

// SQLSTATEs after which trying again later may work (Appendix A, PostgreSQL Error Codes).
function retryableSqlstate(code: string): boolean {
  return (
    code.startsWith('08') || // connection_exception
    code === '57P01' || // admin_shutdown
    code === '57P02' || // crash_shutdown
    code === '57P03' || // cannot_connect_now
    code === '53300' || // too_many_connections
    code === '55006' // object_in_use: the slot is active for another process
  );
}

function isDatabaseError(err: unknown): err is pg.DatabaseError {
  return (
    err instanceof pg.DatabaseError || (typeof (err as { severity?: unknown })?.severity === 'string' && typeof (err as { code?: unknown }).code === 'string')
  );
}

/** Normalises anything thrown by pg or the socket into a CdpError with the SQLSTATE kept. */
export function replicationError(context: string, err: unknown): CdpError {
  if (err instanceof CdpError) return err;
  if (isDatabaseError(err)) {
    const e = pgError(context, err, retryableSqlstate(err.code ?? ''));
    if (err.code === '55006') e.message += ' (another process is streaming from this slot; stop it or wait)';
    if (err.code === '42704') e.message += ' (create the slot first: cdp setup)';
    return e;
  }
  const e = toError(err);
  const errno = (e as { code?: unknown }).code;
  return new CdpError(ErrorCodes.SOURCE_UNREACHABLE, `${context}: ${e.message} (check that Postgres is running and reachable; retryable)`, {
    cause: e,
    canRetry: true,
    details: { errno: typeof errno === 'string' ? errno : undefined },
  });
}

export class ReplicationStream implements AsyncIterable<StreamEvent> {
  private readonly opts: ReplicationStreamOptions;
  private readonly log: Logger;
  private readonly statusIntervalMs: number;
  private readonly highWaterMark: number;
  private readonly lowWaterMark: number;
  private readonly highWaterBytes: number;
  private readonly lowWaterBytes: number;
  private readonly closeTimeoutMs: number;

  private state: State = 'idle';
  private client: pg.Client | null = null;
  private con: PgConnection | null = null;
  private connecting: Promise<pg.Client> | null = null;
  private replication: Promise<unknown> | null = null;
  private closing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private failure: CdpError | null = null;

  // Event queue: an array consumed from `head`, compacted now and then (no O(n) shift per event).
  // `sizes` runs beside it: the CopyData payload size of each queued event, summed in `bytes`.
  private queue: (StreamEvent | undefined)[] = [];
  private sizes: number[] = [];
  private head = 0;
  private bytes = 0;
  private paused = false;
  private waiter: { resolve: (r: IteratorResult<StreamEvent>) => void; reject: (e: unknown) => void } | null = null;

  private confirmed: Lsn = 0;
  private lastReceived: Lsn = 0;

  constructor(opts: ReplicationStreamOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.statusIntervalMs = opts.statusIntervalMs ?? DEFAULT_STATUS_INTERVAL_MS;
    this.highWaterMark = opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    if (!(this.statusIntervalMs > 0)) throw new CdpError(ErrorCodes.INTERNAL, `statusIntervalMs must be > 0, got ${this.statusIntervalMs}`);
    if (!(this.highWaterMark >= 1)) throw new CdpError(ErrorCodes.INTERNAL, `highWaterMark must be >= 1, got ${this.highWaterMark}`);
    this.lowWaterMark = Math.floor(this.highWaterMark / 2);
    this.highWaterBytes = opts.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
    if (!(this.highWaterBytes >= 1)) throw new CdpError(ErrorCodes.INTERNAL, `highWaterBytes must be >= 1, got ${this.highWaterBytes}`);
    this.lowWaterBytes = Math.floor(this.highWaterBytes / 2);
  }

  /** The highest LSN passed to confirm(): what the next status update reports as flushed. */
  get confirmedLsn(): Lsn {
    return this.confirmed;
  }

  /** walEnd of the last message received (for lag metrics only; never acknowledged). */
  get receivedLsn(): Lsn {
    return this.lastReceived;
  }

  /** True while back-pressure holds the socket (the buffer reached highWaterMark or highWaterBytes). */
  get isPaused(): boolean {
    return this.paused;
  }

  /** Events waiting for the consumer. */
  get buffered(): number {
    return this.queue.length - this.head;
  }

  /** CopyData payload bytes of the events waiting for the consumer. */
  get bufferedBytes(): number {
    return this.bytes;
  }

  /** IDENTIFY_SYSTEM (55.4). Connects if needed; not allowed once streaming. */
  async identifySystem(): Promise<SystemIdentity> {
    const client = await this.connect();
    if (this.state !== 'connected') throw this.usage('identifySystem() must be called before start()');
    let res: pg.QueryResult;
    try {
      res = await client.query('IDENTIFY_SYSTEM');
    } catch (err) {
      throw replicationError('IDENTIFY_SYSTEM failed', err);
    }
    const row = res.rows[0] as { systemid: string; timeline: number | string; xlogpos: string; dbname: string | null };
    return {
      systemId: String(row.systemid),
      timeline: Number(row.timeline),
      xlogpos: parseLsn(row.xlogpos),
      dbname: row.dbname ?? null,
    };
  }

  /**
   * START_REPLICATION SLOT slot LOGICAL startLsn (options). Resolves once the server has entered
   * COPY BOTH mode; rejects (and ends the iteration with the same error) when it refuses, e.g.
   * SQLSTATE 55006 when another process is using the slot, 42704 when the slot does not exist.
   * @param startLsn 0 resumes from the slot's confirmed_flush_lsn. A position below it is raised
   *   to it by the server; transactions whose commit record starts before it are skipped.
   */
  async start(slot: string, startLsn: Lsn, pluginOptions: Record<string, string>): Promise<void> {
    const client = await this.connect();
    if (this.state !== 'connected') throw this.usage(`start() called in state ${this.state}`);
    this.state = 'starting';
    const con = this.con!;
    const opts = Object.entries(pluginOptions).map(([k, v]) => `${quoteIdent(k)} ${quoteLiteral(v)}`);
    const sql = `START_REPLICATION SLOT ${quoteIdent(slot)} LOGICAL ${formatLsn(startLsn)}${opts.length ? ` (${opts.join(', ')})` : ''}`;
    this.log.info({ slot, startLsn: formatLsn(startLsn), pluginOptions }, 'starting logical replication');

    con.on('copyData', this.onCopyData);
    await new Promise<void>((resolve, reject) => {
      let begun = false;
      const onStart = () => {
        begun = true;
        this.state = 'streaming';
        this.timer = setInterval(this.onTimer, this.statusIntervalMs);
        this.timer.unref();
        resolve();
      };
      con.once('replicationStart', onStart);
      // The query stays active for the whole COPY: it settles when replication ends.
      this.replication = client.query(sql).then(
        () => {
          con.removeListener('replicationStart', onStart);
          if (!begun) {
            const err = new CdpError(ErrorCodes.PROTOCOL, `START_REPLICATION for slot ${slot} completed without streaming`);
            this.fail(err);
            reject(err);
          } else if (this.state === 'closed' || this.state === 'failed') {
            // our CopyDone was answered (close), or the failure is already recorded
          } else if (this.state === 'streaming') {
            // The server left COPY mode by itself (we did not send CopyDone).
            this.fail(new CdpError(ErrorCodes.SOURCE_UNREACHABLE, 'the server ended the replication stream', { canRetry: true }));
          } else {
            this.state = 'ended';
            this.wake();
          }
        },
        (err: unknown) => {
          con.removeListener('replicationStart', onStart);
          const e = replicationError(begun ? `replication from slot ${slot} failed` : `START_REPLICATION for slot ${slot} failed`, err);
          this.fail(e);
          if (!begun) reject(e);
        },
      );
    });
  }

  /**
   * Records that everything up to `lsn` is durable downstream. Never moves backwards. Reported
   * (as write, flush and apply) by the next status update: the timer, a keepalive reply, or
   * sendStatus(). Confirm a Commit's `endLsn` once all its changes are acknowledged: a restart
   * skips transactions whose commit record starts before the confirmed LSN. When nothing is in
   * flight, confirming a keepalive's walEnd is safe too (everything before it was sent before it)
   * and keeps an idle slot from holding WAL; a walsender asked to stop (server shutdown) waits
   * until the client has confirmed up to the walEnd of its last keepalive.
   */
  confirm(lsn: Lsn): void {
    if (!Number.isSafeInteger(lsn) || lsn < 0) throw this.usage(`confirm(${lsn}): not an LSN`);
    if (lsn > this.confirmed) this.confirmed = lsn;
  }

  /** Sends a standby status update now: write = flush = apply = confirmedLsn. No-op unless streaming. */
  sendStatus(replyRequested = false): void {
    if (this.state !== 'streaming' || this.con === null) return;
    const c = this.confirmed;
    try {
      this.con.sendCopyFromChunk(encodeStandbyStatus(c, c, c, replyRequested));
    } catch (err) {
      this.fail(replicationError('sending a standby status update failed', err));
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<StreamEvent> {
    return {
      next: () => this.next(),
      // Leaving a for-await loop does not close the stream: the caller owns it and calls close().
      // The socket stays paused once the buffer is full, and status updates keep the slot alive.
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }

  /** Ends COPY (CopyDone, after a last status update) and the connection. Idempotent; never throws. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  // -------------------------------------------------------------------------------------------

  private next(): Promise<IteratorResult<StreamEvent>> {
    if (this.head < this.queue.length) return Promise.resolve({ value: this.take(), done: false });
    if (this.failure) return Promise.reject(this.failure);
    if (this.state === 'closed' || this.state === 'ended') return Promise.resolve({ value: undefined, done: true });
    if (this.waiter) return Promise.reject(this.usage('concurrent next() calls on a ReplicationStream'));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  private take(): StreamEvent {
    const q = this.queue;
    const ev = q[this.head]!;
    q[this.head] = undefined;
    this.bytes -= this.sizes[this.head++]!;
    if (this.head === q.length) {
      q.length = 0;
      this.sizes.length = 0;
      this.head = 0;
    } else if (this.head >= 4096 && this.head * 2 >= q.length) {
      q.splice(0, this.head);
      this.sizes.splice(0, this.head);
      this.head = 0;
    }
    if (this.paused && q.length - this.head <= this.lowWaterMark && this.bytes <= this.lowWaterBytes) {
      this.paused = false;
      this.con?.stream.resume();
    }
    return ev;
  }

  private push(ev: StreamEvent, size: number): void {
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      w.resolve({ value: ev, done: false });
      return;
    }
    this.queue.push(ev);
    this.sizes.push(size);
    this.bytes += size;
    if (!this.paused && (this.queue.length - this.head >= this.highWaterMark || this.bytes >= this.highWaterBytes)) {
      this.paused = true;
      this.con?.stream.pause();
    }
  }

  /** Settles a waiting next() after the stream ended, failed or closed. */
  private wake(): void {
    const w = this.waiter;
    if (w === null) return;
    this.waiter = null;
    if (this.failure) w.reject(this.failure);
    else w.resolve({ value: undefined, done: true });
  }

  // Socket handler: called synchronously by pg's protocol parser for each CopyData message. It
  // must never throw (that would be an uncaught exception in a socket 'data' handler).
  private readonly onCopyData = (msg: { chunk: Buffer }): void => {
    if (this.state !== 'streaming') return; // after CopyDone, close or failure: drop
    const buf = msg.chunk;
    try {
      const tag = buf[0];
      if (tag === CopyTag.XLogData) {
        if (buf.length < XLOGDATA_HEADER_SIZE + 1) throw new CdpError(ErrorCodes.PROTOCOL, `XLogData of ${buf.length} bytes is too short`);
        // Int64 walStart, Int64 walEnd (55.4), read in place: no envelope object, no subarray.
        const walStart = buf.readUInt32BE(1) * 0x1_0000_0000 + buf.readUInt32BE(5);
        const walEnd = buf.readUInt32BE(9) * 0x1_0000_0000 + buf.readUInt32BE(13);
        const message = decodePgoutput(buf, XLOGDATA_HEADER_SIZE);
        if (walEnd > this.lastReceived) this.lastReceived = walEnd;
        this.push({ kind: 'data', walStart, walEnd, message }, buf.length);
      } else if (tag === CopyTag.Keepalive) {
        const k = parseKeepalive(buf);
        if (k.walEnd > this.lastReceived) this.lastReceived = k.walEnd;
        // Answer at once, whatever the consumer is doing: the server asks because it is about to
        // time us out (wal_sender_timeout / 2) or is shutting down. We report the confirmed LSN only.
        if (k.replyRequested) this.sendStatus(false);
        this.push({ kind: 'keepalive', walEnd: k.walEnd, replyRequested: k.replyRequested }, buf.length);
      } else {
        throw new CdpError(
          ErrorCodes.PROTOCOL,
          `unexpected CopyData message type ${tag === undefined ? '(empty)' : `0x${tag.toString(16)}`} on a replication connection`,
        );
      }
    } catch (err) {
      this.fail(replicationError('decoding the replication stream failed', err));
    }
  };

  private readonly onTimer = (): void => {
    this.sendStatus(false);
  };

  private readonly onClientError = (err: Error): void => {
    // pg emits 'error' for socket errors and unexpected disconnects; active queries are rejected
    // separately (and lead to fail() through the START_REPLICATION promise). Without this
    // listener an 'error' event would crash the process.
    if (this.state === 'closed') return;
    this.fail(replicationError('the replication connection failed', err));
  };

  private connect(): Promise<pg.Client> {
    if (this.state === 'closed' || this.closing) return Promise.reject(this.usage('the replication stream is closed'));
    if (this.failure) return Promise.reject(this.failure);
    this.connecting ??= this.doConnect();
    return this.connecting;
  }

  private async doConnect(): Promise<pg.Client> {
    this.state = 'connecting';
    // `replication: 'database'` makes the server start a walsender that accepts replication
    // commands and simple SQL (55.4). It is a startup parameter, absent from @types/pg.
    const config = {
      connectionString: this.opts.connectionString,
      ...(this.opts.ssl !== undefined ? { ssl: this.opts.ssl } : {}),
      replication: 'database',
      application_name: 'katya-cdp',
    };
    const client = new pg.Client(config as pg.ClientConfig);
    // pg lets a connection string's (or PGOPTIONS') `options` win over the config's: ours are
    // appended to whatever it resolved, so they apply last (a later -c overrides an earlier one).
    const params = (client as unknown as { connectionParameters: { options?: string } }).connectionParameters;
    params.options = replicationOptions(params.options);
    client.on('error', this.onClientError);
    this.client = client;
    try {
      await client.connect();
    } catch (err) {
      const e = replicationError('cannot open a replication connection to the source database', err);
      this.fail(e);
      throw e;
    }
    this.con = (client as unknown as { connection: PgConnection }).connection;
    if (this.state === 'connecting') this.state = 'connected';
    this.log.debug('replication connection open');
    return client;
  }

  private fail(err: CdpError): void {
    if (this.failure || this.state === 'closed') return;
    this.failure = err;
    this.state = 'failed';
    this.stopTimer();
    // A warning says what happened in one line; the stack is for debug level (issue 14).
    this.log.warn({ err: err.message, code: err.code, details: err.details, canRetry: err.canRetry }, 'replication stream failed');
    this.log.debug({ err }, 'replication stream failure (stack)');
    this.wake();
    // The connection is unusable (server error, lost socket, or bytes we cannot decode): drop it.
    // Events already buffered are still delivered before the error.
    this.destroyConnection();
  }

  private destroyConnection(): void {
    const client = this.client;
    if (!client) return;
    try {
      this.con?.stream.destroy();
    } catch {
      // already gone
    }
    client.end().catch(() => undefined);
  }

  private stopTimer(): void {
    if (this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private async doClose(): Promise<void> {
    const wasStreaming = this.state === 'streaming';
    const client = this.client;
    const con = this.con;
    this.stopTimer();
    if (wasStreaming && con) {
      // Last word on acknowledgement, then leave COPY mode (55.4: either side may send CopyDone).
      this.sendStatus(false);
    }
    this.state = 'closed';
    this.queue = [];
    this.sizes = [];
    this.head = 0;
    this.bytes = 0;
    this.wake();
    if (!client || !con) return;
    if (this.paused) {
      this.paused = false;
      con.stream.resume(); // let the server's CopyDone and CommandComplete through
    }
    if (wasStreaming) {
      try {
        con.endCopyFrom();
        await withTimeout(this.replication!, this.closeTimeoutMs);
      } catch {
        // the graceful path is best effort; the socket is destroyed below if needed
      }
    } else if (this.replication) {
      this.replication.catch(() => undefined);
    }
    try {
      await withTimeout(client.end(), this.closeTimeoutMs);
    } catch {
      con.stream.destroy();
    }
    this.log.debug('replication connection closed');
  }

  private usage(message: string): CdpError {
    return new CdpError(ErrorCodes.INTERNAL, message);
  }
}
