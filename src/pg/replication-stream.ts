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
//   - back-pressure (G4, event-buffer.ts): when `highWaterMark` events, or `highWaterBytes` bytes
//     of CopyData payload, wait for the consumer, the socket is paused, TCP flow control stops the
//     walsender, and the slot keeps the WAL. Reading resumes once both are below half. The byte bound is what
//     makes memory independent of row size: a count alone lets 4,000 rows of 50 MB hold 200 GB.
//     What may still arrive after the pause is the rest of the socket chunk being parsed, and a
//     single message is held whole however large (pg's parser needs all of it), so the buffer stays
//     within highWaterBytes + one socket read + one message.
//
// The pieces: the connection (replication-connection.ts), the START_REPLICATION command
// (replication-command.ts), CopyData decoding (replication-events.ts), the buffer with its
// back-pressure (event-buffer.ts) and the errors (replication-errors.ts). This module is the state
// machine that joins them, with the standby status updates (feedback) and close.

import pg from 'pg';
import { CdpError, ErrorCodes } from '../errors.js';
import type { Logger } from '../util/log.js';
import { formatLsn, parseLsn, type Lsn } from '../util/lsn.js';
import { withTimeout } from '../util/timeout.js';
import { EventBuffer } from './event-buffer.js';
import { encodeStandbyStatus } from './pgoutput.js';
import { startReplicationCommand } from './replication-command.js';
import { connectionOf, replicationClient, type PgConnection } from './replication-connection.js';
import { replicationError } from './replication-errors.js';
import { decodeCopyData, type StreamEvent } from './replication-events.js';

export { pluginOptions } from './replication-command.js';
export { REPLICATION_SESSION_OPTIONS, replicationOptions } from './replication-connection.js';
export { replicationError } from './replication-errors.js';
export type { StreamEvent } from './replication-events.js';

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

type State = 'idle' | 'connecting' | 'connected' | 'starting' | 'streaming' | 'ended' | 'failed' | 'closed';

const DEFAULT_STATUS_INTERVAL_MS = 10_000;
const DEFAULT_HIGH_WATER_MARK = 10_000;
const DEFAULT_HIGH_WATER_BYTES = 64 * 1024 * 1024;
const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;

export class ReplicationStream implements AsyncIterable<StreamEvent> {
  private readonly opts: ReplicationStreamOptions;
  private readonly log: Logger;
  private readonly statusIntervalMs: number;
  private readonly closeTimeoutMs: number;

  private state: State = 'idle';
  private client: pg.Client | null = null;
  private con: PgConnection | null = null;
  private connecting: Promise<pg.Client> | null = null;
  private replication: Promise<unknown> | null = null;
  private closing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private failure: CdpError | null = null;

  /** Events for the consumer; pauses and resumes the socket (back-pressure). */
  private readonly buffer: EventBuffer<StreamEvent>;

  private confirmed: Lsn = 0;
  private lastReceived: Lsn = 0;

  constructor(opts: ReplicationStreamOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.statusIntervalMs = opts.statusIntervalMs ?? DEFAULT_STATUS_INTERVAL_MS;
    const highWaterMark = opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    this.closeTimeoutMs = opts.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    if (!(this.statusIntervalMs > 0)) throw new CdpError(ErrorCodes.INTERNAL, `statusIntervalMs must be > 0, got ${this.statusIntervalMs}`);
    if (!(highWaterMark >= 1)) throw new CdpError(ErrorCodes.INTERNAL, `highWaterMark must be >= 1, got ${highWaterMark}`);
    const highWaterBytes = opts.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
    if (!(highWaterBytes >= 1)) throw new CdpError(ErrorCodes.INTERNAL, `highWaterBytes must be >= 1, got ${highWaterBytes}`);
    this.buffer = new EventBuffer<StreamEvent>(highWaterMark, highWaterBytes, {
      pause: () => this.con?.stream.pause(),
      resume: () => this.con?.stream.resume(),
    });
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
    return this.buffer.paused;
  }

  /** Events waiting for the consumer. */
  get buffered(): number {
    return this.buffer.length;
  }

  /** CopyData payload bytes of the events waiting for the consumer. */
  get bufferedBytes(): number {
    return this.buffer.bytes;
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
    const sql = startReplicationCommand(slot, startLsn, pluginOptions);
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
    const b = this.buffer;
    if (b.length > 0) return Promise.resolve({ value: b.take(), done: false });
    if (this.failure) return Promise.reject(this.failure);
    if (this.state === 'closed' || this.state === 'ended') return Promise.resolve({ value: undefined, done: true });
    if (b.waiting) return Promise.reject(this.usage('concurrent next() calls on a ReplicationStream'));
    return b.wait();
  }

  /** Settles a waiting next() after the stream ended, failed or closed. */
  private wake(): void {
    this.buffer.wake(this.failure);
  }

  // Socket handler: called synchronously by pg's protocol parser for each CopyData message. It
  // must never throw (that would be an uncaught exception in a socket 'data' handler).
  private readonly onCopyData = (msg: { chunk: Buffer }): void => {
    if (this.state !== 'streaming') return; // after CopyDone, close or failure: drop
    const buf = msg.chunk;
    try {
      const ev = decodeCopyData(buf);
      if (ev.walEnd > this.lastReceived) this.lastReceived = ev.walEnd;
      // Answer a keepalive at once, whatever the consumer is doing: the server asks because it is
      // about to time us out (wal_sender_timeout / 2) or is shutting down. We report the confirmed LSN only.
      if (ev.kind === 'keepalive' && ev.replyRequested) this.sendStatus(false);
      this.buffer.push(ev, buf.length);
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
    const client = replicationClient(this.opts.connectionString, this.opts.ssl);
    client.on('error', this.onClientError);
    this.client = client;
    try {
      await client.connect();
    } catch (err) {
      const e = replicationError('cannot open a replication connection to the source database', err);
      this.fail(e);
      throw e;
    }
    this.con = connectionOf(client);
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
    this.buffer.clear();
    this.wake();
    if (!client || !con) return;
    this.buffer.unpause(); // let the server's CopyDone and CommandComplete through
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
