// One capture session (capture.ts runs them one after another): one replication connection + one
// producer + one catalog connection. Any failure (Kafka error, Postgres restart, cut connection)
// ends the session without confirming anything more; the next session starts from the slot's
// confirmed_flush_lsn after a backoff. Duplicates this produces are identified by (commitLsn,
// position); gaps cannot happen because a session never produces past a failed send.
//
// The start-up checks it runs are in session-start.ts (slot, message key), topic-check.ts and
// archive-check.ts; the record size check in record-size.ts.

import type pg from 'pg';
import type { CommandContext } from '../context.js';
import { sourceDatabase, topicName, type Config } from '../config/config.js';
import { CdpError, ErrorCodes, pgError, toError } from '../errors.js';
import { emptyEvent, kafkaKey, type ChangeEvent } from '../format/change-event.js';
import { encodeEvent } from '../format/event-codec.js';
import { createKafka } from '../kafka/client.js';
import type { Message } from '../pg/pgoutput.js';
import { pluginOptions, ReplicationStream, type StreamEvent } from '../pg/replication-stream.js';
import { pgConnection } from '../pg/tls.js';
import type { Logger } from '../util/log.js';
import { formatLsn, type Lsn } from '../util/lsn.js';
import { AckTracker } from './ack-tracker.js';
import { checkArchivePartitions } from './archive-check.js';
import type { CaptureState } from './capture.js';
import { metrics } from './capture-metrics.js';
import { signMessage, type MessageKey } from './ddl-auth.js';
import { ddlReplayRisk } from './ddl-check.js';
import { recordDdlRisk } from './ddl-risk-note.js';
import { ChangeMapper, PREFIX } from './mapper.js';
import { ProducePipeline } from './pipeline.js';
import { checkRecordSize } from './record-size.js';
import { openSender, type CaptureSender } from './sender.js';
import { readMessageKey, readSlot } from './session-start.js';
import { connectCatalog } from './source.js';
import { readTopic } from './topic-check.js';
import { isSyncStandby } from './catalog-read.js';
import { TypeNames } from './type-names.js';

/** Replication stream events buffered before its socket pauses (each holds one row). */
const STREAM_HIGH_WATER_MARK = 4_000;
/** ... and bytes of them: rows can be up to 1 GB each, so a count alone bounds nothing (G4). */
const STREAM_HIGH_WATER_BYTES = 64 * 1024 * 1024;
/** Standby status updates at least this often (confirmed LSN reaches the slot within it). */
const STATUS_INTERVAL_MS = 1_000;

/** Graceful stop: how long the last flush to Kafka may take before leaving without it. */
const STOP_FLUSH_TIMEOUT_MS = 30_000;

export class CaptureSession {
  progressed = false;
  private readonly cfg: Config;
  private readonly log: Logger;
  private readonly database: string;
  private readonly topic: string;
  private readonly timers: NodeJS.Timeout[] = [];
  private failed: Error | null = null;
  private wake: (() => void) | null = null;
  private stream: ReplicationStream | null = null;
  private sender: CaptureSender | null = null;
  private catalog: pg.Client | null = null;
  /** Key of the signed DDL / sequence messages (ddl-auth.ts); undefined when DDL capture is not installed. */
  private messageKey: MessageKey | undefined;
  private tracker!: AckTracker;
  private pipeline!: ProducePipeline;
  private lastWatermark: Lsn = 0;
  private partitions = 0;
  /** The topic's max.message.bytes; null when it could not be read (the broker still checks). */
  private maxMessageBytes: number | null = null;

  constructor(
    private readonly ctx: CommandContext,
    private readonly state: CaptureState,
  ) {
    this.cfg = ctx.cfg;
    this.log = ctx.log.child({ component: 'capture' });
    this.database = sourceDatabase(ctx.cfg);
    this.topic = topicName(ctx.cfg);
  }

  async run(): Promise<void> {
    const onAbort = () => this.interrupt();
    this.ctx.signal.addEventListener('abort', onAbort, { once: true });
    try {
      await this.open();
      await this.stream_();
      await this.stop();
    } finally {
      this.ctx.signal.removeEventListener('abort', onAbort);
      await this.teardown();
    }
  }

  /** A background failure (a send, the catalog connection): ends the session at once. */
  private fail(err: Error): void {
    this.failed ??= err;
    this.interrupt();
  }

  private interrupt(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /**
   * Awaits `p` unless the session is stopped or fails first. (Not Promise.race against one
   * long-lived promise: every race would leave a reaction on it, holding its event, for as long
   * as the session lives.)
   */
  private interruptible<T>(p: Promise<T>): Promise<T | 'interrupted'> {
    if (this.failed || this.ctx.signal.aborted) return Promise.resolve('interrupted');
    return new Promise<T | 'interrupted'>((resolve, reject) => {
      this.wake = () => resolve('interrupted');
      p.then(resolve, reject);
    }).finally(() => {
      this.wake = null;
    });
  }

  private check(): void {
    if (this.failed) throw this.failed;
  }

  private async open(): Promise<void> {
    const { cfg, log } = this;
    const { version, confirmed } = await this.openCatalog();
    this.tracker = new AckTracker(confirmed);
    this.state.confirmedLsn = confirmed;

    // Kafka: the topic must exist (setup creates it with the right partitions and limits).
    const kafka = createKafka(cfg, log, 'capture');
    const topic = await readTopic(kafka.admin(), this.topic, log);
    this.partitions = topic.partitions;
    this.maxMessageBytes = topic.maxMessageBytes;
    await checkArchivePartitions({ cfg, log, signal: this.ctx.signal, topic: this.topic, partitions: this.partitions });
    // capture.producer (CDP_CAPTURE_PRODUCER): the engine's own Produce requests or kafkajs's producer.
    const sender = await openSender(kafka, cfg, this.topic, this.partitions);
    this.sender = sender;
    this.pipeline = this.createPipeline(sender);

    this.stream = new ReplicationStream({
      ...pgConnection(cfg.source.url, cfg.source.tls),
      log: this.log,
      statusIntervalMs: STATUS_INTERVAL_MS,
      highWaterMark: STREAM_HIGH_WATER_MARK,
      highWaterBytes: STREAM_HIGH_WATER_BYTES,
    });
    this.stream.confirm(confirmed);
    await this.stream.start(cfg.source.slot, 0, pluginOptions(cfg.source.publication, version));
    this.state.phase = 'streaming';
    log.info({ slot: cfg.source.slot, topic: this.topic, partitions: this.partitions, from: formatLsn(confirmed) }, 'capture streaming');

    this.startTimers();
    // Sequences once at the start too, so that a short capture run still records them.
    void this.sequences();
  }

  /** The catalog connection (kept for the session: type names, heartbeats, sequences), the slot, the message key. */
  private async openCatalog(): Promise<{ version: number; confirmed: Lsn }> {
    const { cfg, log } = this;
    this.catalog = await connectCatalog(cfg, 'katya-cdp-capture');
    this.catalog.on('error', (err) => this.fail(pgError('the catalog connection to the source failed', err, true)));
    const slot = await readSlot(this.catalog, cfg);
    this.messageKey = await readMessageKey(this.catalog, log);
    return slot;
  }

  private createPipeline(sender: CaptureSender): ProducePipeline {
    const { cfg } = this;
    return new ProducePipeline({
      send: (records) => sender.send(records),
      topic: this.topic,
      tracker: this.tracker,
      maxRecords: cfg.capture.batchMaxRecords,
      maxBytes: cfg.capture.batchMaxBytes,
      maxAgeMs: cfg.capture.batchMaxAgeMs,
      onAcked: (a) => {
        metrics.changes.inc(a.dataRecords);
        metrics.records.inc(a.records);
        metrics.bytes.inc(a.bytes);
        metrics.produceLatency.observe(a.seconds);
        metrics.batchRecords.observe(a.records);
        this.confirm();
      },
      onError: (err) => this.fail(err),
    });
  }

  /** Heartbeats, watermarks, sequence positions, and the lag metric (with the memory log of capture.debugMemory). */
  private startTimers(): void {
    const { cfg } = this;
    this.every(cfg.capture.heartbeatIntervalMs, () => this.heartbeat());
    this.every(cfg.capture.watermarkIntervalMs, () => this.watermark());
    this.every(cfg.capture.sequenceIntervalMs, () => this.sequences());
    this.every(1_000, () => {
      const s = this.stream;
      if (s) metrics.lag.set(Math.max(0, s.receivedLsn - s.confirmedLsn));
      if (this.cfg.capture.debugMemory) {
        const mu = process.memoryUsage();
        this.log.warn(
          {
            heapMB: Math.round(mu.heapUsed / 1e6),
            rssMB: Math.round(mu.rss / 1e6),
            extMB: Math.round(mu.external / 1e6),
            abMB: Math.round(mu.arrayBuffers / 1e6),
            buffered: s?.buffered,
            batch: this.pipeline.pendingRecords,
            produced: this.tracker.producedSeq,
            acked: this.tracker.ackedSeq,
          },
          'memory',
        );
      }
    });
  }

  /** The main loop: one replication event at a time, in WAL order. */
  private async stream_(): Promise<void> {
    const stream = this.stream!;
    const it = stream[Symbol.asyncIterator]();
    const { mapper, types } = this.decoders();
    const tracker = this.tracker;
    const pipeline = this.pipeline;

    for (;;) {
      this.check();
      if (this.ctx.signal.aborted) return;
      // Buffered events resolve at once; only a wait for the network needs to be interruptible.
      const r = stream.buffered > 0 ? await it.next() : await this.interruptible(it.next());
      if (r === 'interrupted') continue;
      if (r.done) throw this.failed ?? new CdpError(ErrorCodes.SOURCE_UNREACHABLE, 'the replication stream ended', { canRetry: true });
      const ev: StreamEvent = r.value;
      if (ev.kind === 'keepalive') {
        // Idle and between transactions: everything before walEnd was sent to us already and
        // nothing of it waits for Kafka, so confirming walEnd loses nothing and frees WAL on a
        // database whose activity is all unpublished (replication-stream.ts, confirm()).
        if (!mapper.inTransaction && !pipeline.busy && tracker.idle() && tracker.confirmIdle(ev.walEnd)) this.confirm();
        continue;
      }
      const m = ev.message;
      let out: ChangeEvent | null = null;
      switch (m.tag) {
        case 'begin':
          mapper.begin(m);
          continue;
        case 'commit': {
          out = mapper.commit(m);
          if (out) this.produce(out, false);
          metrics.transactions.inc();
          if (tracker.commit({ commitLsn: m.commitLsn, endLsn: m.endLsn, commitTime: m.commitTime })) this.confirm();
          this.progressed = true;
          break;
        }
        case 'relation':
          mapper.relation(m, await types.relation(m, mapper.currentXid));
          continue;
        case 'type':
          types.noteType(m);
          continue;
        case 'origin':
          continue;
        case 'insert':
          out = mapper.insert(m, ev.walStart);
          break;
        case 'update':
          out = mapper.update(m, ev.walStart);
          break;
        case 'delete':
          out = mapper.delete(m, ev.walStart);
          break;
        case 'truncate':
          out = mapper.truncate(m, ev.walStart);
          break;
        case 'message':
          out = mapper.message(m, ev.walStart);
          if (out?.op === 'DDL' && out.content) this.noteDdlRisk(out);
          // A type, domain or schema renamed: pgoutput does not resend the Relation messages, the mapper learns the names here.
          if (out?.op === 'DDL') for (const [rel, names] of await types.afterDdl(out.xid)) mapper.relation(rel, names);
          if (!m.transactional) this.noteNonTransactional(m);
          break;
      }
      if (out && out.op !== 'COMMIT') {
        const key = Buffer.from(kafkaKey(out));
        const value = encodeEvent(out);
        checkRecordSize(out, key, value, this.maxMessageBytes, this.topic);
        // A large row does not join a batch it would take past batchMaxBytes: the batch goes first.
        // Interrupted means failed or stopping: the loop's check ends the session, and this change's
        // transaction is not confirmed (its COMMIT was not reached).
        if (!pipeline.fits(key.length + value.length) && (await this.interruptible(pipeline.room(key.length + value.length))) === 'interrupted') continue;
        pipeline.add(key, value, true);
      }
      if (pipeline.full) await this.interruptible(pipeline.room());
    }
  }

  /** The stream's decoders: the mapper (pgoutput messages to change events) and the type names at each change's point. */
  private decoders(): { mapper: ChangeMapper; types: TypeNames } {
    const mapper = new ChangeMapper(this.database);
    mapper.messageKey = this.messageKey;
    mapper.onForged = (prefix, why, lsn) => {
      metrics.forgedMessages.inc();
      this.log.warn(
        { prefix, why, lsn: formatLsn(lsn) },
        "dropped a logical message with the engine's prefix that the engine did not sign: it is not archived and restore will never act on it",
      );
    };
    // Type names at each change's point (type-names.ts): refreshed after every DDL event.
    const types = new TypeNames(
      this.catalog!,
      (w) =>
        this.log.warn(
          w,
          'a column type was renamed again by a transaction not decoded yet: the name recorded for the changes after this DDL may be newer than they are (restore may stop on it)',
        ),
      {
        signal: this.ctx.signal,
        syncStandby: () => isSyncStandby(this.catalog!, this.cfg.source.slot),
        invisible: (w) =>
          this.log.warn(
            w,
            w.gaveUp
              ? 'this capture is a synchronous standby (synchronous_standby_names) that a decoded transaction waits for: column type names were read without that transaction and may predate it (restore may stop on them); take capture out of synchronous_standby_names'
              : 'waiting for a decoded transaction to become visible to other sessions before reading column type names (it waits for waitEvent: a synchronous standby?)',
          ),
      },
    );
    return { mapper, types };
  }

  /** A DDL event restore will probably not replay exactly: metric, warning, and a note in the archive. */
  private noteDdlRisk(out: ChangeEvent): void {
    const risk = ddlReplayRisk(out.content!);
    if (!risk) return;
    metrics.ddlReplayRisks.inc();
    this.log.warn(
      { xid: out.xid, commitLsn: formatLsn(out.commitLsn), position: out.position, risk },
      'a schema change restore may not replay exactly: a restore past it will stop at it (exit 1) unless given --ddl-override',
    );
    recordDdlRisk(this.cfg, this.log, this.ctx.signal, out, risk);
  }

  /** Outside any transaction: nothing for restore to apply, and no COMMIT to group it by (mapper.ts). */
  private noteNonTransactional(m: Message): void {
    metrics.nonTransactionalMessages.inc();
    this.log.debug({ prefix: m.prefix, lsn: formatLsn(m.lsn), bytes: m.content.length }, 'non-transactional logical message not archived');
  }

  private produce(ev: ChangeEvent, data: boolean, partition?: number): void {
    // A Buffer key: kafkajs would otherwise convert the string twice (partitioner and encoder).
    // encodeEvent = encodeChange (avsc) byte for byte, with the relation's encoding cached.
    this.pipeline.add(Buffer.from(kafkaKey(ev)), encodeEvent(ev), data, partition);
  }

  /** Passes the tracker's confirmable LSN to the stream (sent with the next status update). */
  private confirm(): void {
    const lsn = this.tracker.confirmed;
    this.stream?.confirm(lsn);
    this.state.confirmedLsn = lsn;
    metrics.ackLsn.set(lsn);
  }

  /**
   * WATERMARK to every partition: every transaction with commit LSN <= C is acknowledged by Kafka
   * in every partition already, and this record lands after them in each partition (batches are
   * sent in order, one at a time).
   */
  private watermark(): void {
    const last = this.tracker.lastAcked;
    if (!last || last.commitLsn <= this.lastWatermark || this.pipeline.error) return;
    this.lastWatermark = last.commitLsn;
    for (let p = 0; p < this.partitions; p++) {
      const ev = emptyEvent({
        op: 'WATERMARK',
        database: this.database,
        commitLsn: last.commitLsn,
        commitTime: last.commitTime,
        content: `{"partition":${p}}`,
      });
      this.produce(ev, false, p);
    }
  }

  /** A transaction of its own on an idle database keeps the slot and the watermarks moving. */
  private async heartbeat(): Promise<void> {
    try {
      await this.catalog?.query(`SELECT pg_catalog.pg_logical_emit_message(true, '${PREFIX.heartbeat}', pg_catalog.now()::text)`);
    } catch (err) {
      this.log.warn({ err: toError(err).message }, 'heartbeat failed');
    }
  }

  /**
   * Sequence positions into the stream, so that restore can set sequences (not decoded by
   * Postgres). Read, then written signed (ddl-auth.ts): values read just before the message are
   * at or before its commit, and sequences only move forward, so restore's max() stays safe.
   */
  private async sequences(): Promise<void> {
    try {
      const key = this.messageKey;
      if (!key || !this.catalog) return;
      const r = await this.catalog.query<{ j: string | null }>(
        `SELECT pg_catalog.json_object_agg(schemaname || '.' || sequencename, last_value)::text AS j
           FROM pg_catalog.pg_sequences
          WHERE last_value IS NOT NULL AND schemaname NOT IN ('pg_catalog', 'information_schema')`,
      );
      const j = r.rows[0]?.j;
      if (!j) return;
      await this.catalog.query(`SELECT pg_catalog.pg_logical_emit_message(true, '${PREFIX.sequences}', $1)`, [signMessage(key, j)]);
    } catch (err) {
      this.log.warn({ err: toError(err).message }, 'recording sequence positions failed');
    }
  }

  private every(ms: number, fn: () => unknown): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.push(t);
  }

  /** Graceful stop: a last watermark, flush to Kafka, confirm, close (the stream sends a final status). */
  private async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers.length = 0;
    const flush = async () => {
      await this.pipeline.flush();
      this.watermark();
      await this.pipeline.flush();
    };
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        flush(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new CdpError(ErrorCodes.KAFKA, `Kafka did not acknowledge within ${STOP_FLUSH_TIMEOUT_MS / 1000} s`)),
            STOP_FLUSH_TIMEOUT_MS,
          );
        }),
      ]);
    } catch (err) {
      this.log.warn({ err: toError(err).message }, 'stopping without the last flush; the unacknowledged changes will be produced again on the next start');
    } finally {
      clearTimeout(timer);
    }
    this.confirm();
    this.log.info({ confirmedLsn: formatLsn(this.tracker.confirmed) }, 'capture stopped');
  }

  private async teardown(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers.length = 0;
    this.pipeline?.close();
    // close() sends a last status update with the confirmed LSN (only what Kafka acknowledged).
    await this.stream?.close();
    await this.sender?.close();
    await this.catalog?.end().catch(() => {});
  }
}
