// ConfigResourceTypes is not among the names Node finds in kafkajs's CommonJS exports: reach it
// through the default export.
import kafkajs, { type Admin } from 'kafkajs';
import type pg from 'pg';
import type { CommandContext } from '../context.js';
import { archiveRoot, sourceDatabase, topicName, type Config } from '../config/config.js';
import { readArchiveManifest } from '../archive/catalog.js';
import { createStore, putOnce } from '../s3/client.js';
import { ddlRiskKey } from '../archive/layout.js';
import { CdpError, ErrorCodes, pgError, toError } from '../errors.js';
import { emptyEvent, kafkaKey, SCHEMA_HEADER, type ChangeEvent } from '../format/change-event.js';
import { createKafka } from '../kafka/client.js';
import { counter, gauge, histogram, registerHealth } from '../util/metrics.js';
import { pluginOptions, ReplicationStream, type StreamEvent } from '../pg/replication-stream.js';
import type { Logger } from '../util/log.js';
import { formatLsn, microsToIso, parseLsn, type Lsn } from '../util/lsn.js';
import { sleep } from '../util/retry.js';
import { AckTracker } from './ack-tracker.js';
import { singleRecordBatchSize } from '../kafka/producer.js';
import { encodeEvent } from '../format/event-codec.js';
import { signMessage, type MessageKey } from './ddl-auth.js';
import { ddlReplayRisk } from './ddl-check.js';
import { ChangeMapper, PREFIX } from './mapper.js';
import { ProducePipeline } from './pipeline.js';
import { openSender, type CaptureSender } from './sender.js';
import { connectCatalog } from './source.js';
import { redactUrl } from '../util/redact.js';
import { pgConnection } from '../pg/tls.js';
import { TypeNames } from './type-names.js';

// `cdp capture` (DESIGN.md sections 1 and 2): stream the slot with pgoutput, turn every change into
// an Avro change event, produce it to Kafka with an idempotent producer, and confirm to the slot
// only what Kafka has acknowledged (G1). Memory is bounded (G4): the replication stream buffers a
// bounded number of events and bytes, the pipeline one batch plus one request in flight.
//
// A session = one replication connection + one producer + one catalog connection. Any failure
// (Kafka error, Postgres restart, cut connection) ends the session without confirming anything
// more; the next session starts from the slot's confirmed_flush_lsn after a backoff. Duplicates
// this produces are identified by (commitLsn, position); gaps cannot happen because a session
// never produces past a failed send.

/** Replication stream events buffered before its socket pauses (each holds one row). */
const STREAM_HIGH_WATER_MARK = 4_000;
/** ... and bytes of them: rows can be up to 1 GB each, so a count alone bounds nothing (G4). */
const STREAM_HIGH_WATER_BYTES = 64 * 1024 * 1024;
/** Standby status updates at least this often (confirmed LSN reaches the slot within it). */
const STATUS_INTERVAL_MS = 1_000;
/** How long capture start-up waits for archive.json (the partition count check) before going on without it. */
const ARCHIVE_CHECK_TIMEOUT_MS = 15_000;
/** archive.json's partition count, once read (it does not change), per configuration. */
const archivePartitionsSeen = new WeakMap<Config, number>();

/** Graceful stop: how long the last flush to Kafka may take before leaving without it. */
const STOP_FLUSH_TIMEOUT_MS = 30_000;

const metrics = {
  changes: counter('cdp_capture_changes_total', 'Row changes and other data records acknowledged by Kafka'),
  records: counter('cdp_capture_records_total', 'Kafka records acknowledged (data, COMMIT markers, watermarks)'),
  bytes: counter('cdp_capture_bytes_total', 'Bytes of encoded change events acknowledged by Kafka'),
  transactions: counter('cdp_capture_transactions_total', 'Transactions decoded (including heartbeats)'),
  ddlReplayRisks: counter(
    'cdp_capture_ddl_replay_risks_total',
    'DDL events restore will probably not replay exactly (per-row rewrite values, DDL in a SQL function): a restore past one needs --ddl-override',
  ),
  forgedMessages: counter(
    'cdp_capture_forged_messages_total',
    'cdp.ddl / cdp.sequences logical messages that were not signed by the engine (forged or from an old trigger) and were dropped',
  ),
  nonTransactionalMessages: counter(
    'cdp_capture_nontransactional_messages_total',
    'Non-transactional logical messages seen and not archived (they belong to no transaction)',
  ),
  restarts: counter('cdp_capture_restarts_total', 'Capture sessions restarted after an error'),
  lag: gauge('cdp_capture_slot_lag_bytes', 'WAL bytes between the server WAL end last seen and the confirmed LSN'),
  ackLsn: gauge('cdp_capture_acknowledged_lsn', 'Last LSN confirmed to the replication slot (bytes)'),
  produceLatency: histogram(
    'cdp_capture_produce_latency_seconds',
    'Kafka produce request latency per batch',
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  ),
  batchRecords: histogram('cdp_capture_batch_records', 'Records per Kafka produce request', [1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000]),
};

export interface CaptureHandle {
  /** Resolves after a graceful stop (ctx.signal aborted); rejects on a fatal error. */
  done: Promise<void>;
  /** A snapshot for status displays and tests. */
  state(): CaptureState;
}

export interface CaptureState {
  phase: 'starting' | 'streaming' | 'retrying' | 'stopped' | 'failed';
  confirmedLsn: Lsn;
  sessions: number;
  lastError: string | null;
}

/**
 * Starts capturing in the background; `cdp capture` and `cdp run` (src/ops/run.ts) own the metrics
 * server around it. Stops when ctx.signal aborts.
 */
export async function startCapture(ctx: CommandContext): Promise<CaptureHandle> {
  const state: CaptureState = { phase: 'starting', confirmedLsn: 0, sessions: 0, lastError: null };
  registerHealth('capture', () => ({
    ok: state.phase === 'starting' || state.phase === 'streaming' || state.phase === 'stopped',
    detail: { phase: state.phase, confirmedLsn: formatLsn(state.confirmedLsn), sessions: state.sessions, lastError: state.lastError },
  }));
  const done = loop(ctx, state).then(
    () => {
      state.phase = 'stopped';
    },
    (err: unknown) => {
      state.phase = 'failed';
      state.lastError = toError(err).message;
      throw err;
    },
  );
  return { done, state: () => ({ ...state }) };
}

async function loop(ctx: CommandContext, state: CaptureState): Promise<void> {
  const { log, signal } = ctx;
  let failures = 0;
  while (!signal.aborted) {
    state.sessions++;
    const session = new CaptureSession(ctx, state);
    try {
      await session.run();
      return;
    } catch (raw) {
      const err = toError(raw);
      if (signal.aborted) return;
      if (isFatal(err)) throw err;
      // The slot is streamed by another process before this capture ever streamed (issue 14): a
      // second capture or run on the same slot. One line and exit 2 instead of warning forever;
      // later in a capture's life the same error is the previous connection's walsender not yet
      // gone, which retrying outlives.
      if (err instanceof CdpError && err.details.sqlstate === '55006' && state.sessions === 1 && !session.progressed) {
        const pid = /PID (\d+)/.exec(err.message)?.[1];
        throw new CdpError(
          ErrorCodes.USAGE,
          `replication slot ${ctx.cfg.source.slot} is in use${pid ? ` by PID ${pid}` : ''}: another cdp capture or cdp run streams from it. Stop it, or give this one its own slot (source.slot / CDP_SLOT, created by cdp setup); a process that died frees the slot within wal_sender_timeout`,
          { cause: err, details: { sqlstate: '55006' } },
        );
      }
      failures = session.progressed ? 1 : failures + 1;
      state.phase = 'retrying';
      state.lastError = err.message;
      metrics.restarts.inc();
      // Exponential backoff with full jitter, capped at 30 s; a session that made progress resets it.
      const delay = Math.floor(Math.random() * Math.min(30_000, 500 * 2 ** Math.min(failures, 10))) + 100;
      log.warn(
        { err: err.message, code: (err as CdpError).code, delayMs: delay, confirmedLsn: formatLsn(state.confirmedLsn) },
        'capture session ended with an error; restarting from the slot',
      );
      try {
        await sleep(delay, signal);
      } catch {
        return;
      }
    }
  }
}

/** Errors that retrying cannot fix: the operator must act (run setup, fix configuration, raise a limit). */
function isFatal(err: Error): boolean {
  if (!(err instanceof CdpError)) return false;
  if (err.code === ErrorCodes.SOURCE_NOT_READY || err.code === ErrorCodes.CONFIG_INVALID) return true;
  if (err.code === ErrorCodes.KAFKA && !err.canRetry && err.details.kafkaError === 'MESSAGE_TOO_LARGE') return true;
  const sqlstate = err.details.sqlstate;
  // 42704 undefined_object: slot or publication missing; 28P01/28000 authentication; 3D000 no database;
  // 42501 insufficient privilege.
  return sqlstate === '42704' || sqlstate === '28P01' || sqlstate === '28000' || sqlstate === '3D000' || sqlstate === '42501';
}

class CaptureSession {
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
    this.catalog = await connectCatalog(cfg, 'katya-cdp-capture');
    this.catalog.on('error', (err) => this.fail(pgError('the catalog connection to the source failed', err, true)));
    const q = async <R extends pg.QueryResultRow>(text: string, values: unknown[] = []) => {
      try {
        return (await this.catalog!.query<R>(text, values)).rows;
      } catch (err) {
        throw pgError('capture start-up query failed', err, true);
      }
    };
    const [info] = await q<{ version: number; confirmed: string | null; active_pid: number | null; plugin: string | null }>(
      `SELECT current_setting('server_version_num')::int AS version,
              (SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1) AS confirmed,
              (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1) AS active_pid,
              (SELECT plugin FROM pg_replication_slots WHERE slot_name = $1) AS plugin`,
      [cfg.source.slot],
    );
    if (!info || info.plugin === null) {
      throw new CdpError(
        ErrorCodes.SOURCE_NOT_READY,
        `replication slot ${cfg.source.slot} does not exist in ${redactUrl(cfg.source.url)}: run \`cdp setup\` first`,
      );
    }
    if (info.plugin !== 'pgoutput') {
      throw new CdpError(
        ErrorCodes.SOURCE_NOT_READY,
        `replication slot ${cfg.source.slot} uses plugin ${info.plugin}, not pgoutput: choose another source.slot`,
      );
    }
    this.messageKey = await readMessageKey(this.catalog, log);
    const confirmed = info.confirmed ? parseLsn(info.confirmed) : 0;
    this.tracker = new AckTracker(confirmed);
    this.state.confirmedLsn = confirmed;

    // Kafka: the topic must exist (setup creates it with the right partitions and limits).
    const kafka = createKafka(cfg, log, 'capture');
    const admin = kafka.admin();
    try {
      await admin.connect();
      const meta = await admin.fetchTopicMetadata({ topics: [this.topic] }).catch((err: unknown) => {
        const e = toError(err);
        if (/does not host this topic-partition|UNKNOWN_TOPIC/i.test(e.message) || (e as { type?: string }).type === 'UNKNOWN_TOPIC_OR_PARTITION') {
          throw new CdpError(ErrorCodes.SOURCE_NOT_READY, `Kafka topic ${this.topic} does not exist: run \`cdp setup\` first`, { cause: e });
        }
        throw e;
      });
      this.partitions = meta.topics[0]?.partitions.length ?? 0;
      if (this.partitions < 1) throw new CdpError(ErrorCodes.KAFKA, `Kafka topic ${this.topic} has no partitions`, { canRetry: true });
      this.maxMessageBytes = await topicMaxMessageBytes(admin, this.topic, log);
    } catch (err) {
      throw err instanceof CdpError ? err : new CdpError(ErrorCodes.KAFKA, `Kafka is not reachable: ${toError(err).message}`, { cause: err, canRetry: true });
    } finally {
      await admin.disconnect().catch(() => {});
    }
    await this.checkArchivePartitions();
    // capture.producer (CDP_CAPTURE_PRODUCER): the engine's own Produce requests or kafkajs's producer.
    const sender = await openSender(kafka, cfg, this.topic, this.partitions);
    this.sender = sender;

    this.pipeline = new ProducePipeline({
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

    this.stream = new ReplicationStream({
      ...pgConnection(cfg.source.url, cfg.source.tls),
      log: this.log,
      statusIntervalMs: STATUS_INTERVAL_MS,
      highWaterMark: STREAM_HIGH_WATER_MARK,
      highWaterBytes: STREAM_HIGH_WATER_BYTES,
    });
    this.stream.confirm(confirmed);
    await this.stream.start(cfg.source.slot, 0, pluginOptions(cfg.source.publication, info.version));
    this.state.phase = 'streaming';
    log.info({ slot: cfg.source.slot, topic: this.topic, partitions: this.partitions, from: formatLsn(confirmed) }, 'capture streaming');

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
    // Sequences once at the start too, so that a short capture run still records them.
    void this.sequences();
  }

  /** The main loop: one replication event at a time, in WAL order. */
  /**
   * The topic must have the partition count the archive was set up with (archive.json, written
   * by setup). Kafka can add partitions (kafka-topics --alter --partitions) but the archive only
   * knows the ones it was set up for: records in an added partition would never be archived or
   * restored, and the restorable point (the minimum over the archive's partitions) would overstate.
   * Refused before anything is produced, non-retryable (exit 2). archive.json is read once per
   * process; S3 unreachable or no archive.json yet only warns: capture does not depend on S3.
   */
  private async checkArchivePartitions(): Promise<void> {
    const { cfg, log } = this;
    let expected = archivePartitionsSeen.get(cfg);
    if (expected === undefined) {
      const root = archiveRoot(cfg);
      try {
        const store = createStore(cfg, log, { signal: this.ctx.signal, maxElapsedMs: ARCHIVE_CHECK_TIMEOUT_MS });
        // Bounded also when a request hangs (a paused S3): the retry budget only counts between attempts.
        const read = readArchiveManifest(store, root);
        read.catch(() => {});
        let timer: NodeJS.Timeout | undefined;
        const m = await Promise.race([
          read,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no answer within ${ARCHIVE_CHECK_TIMEOUT_MS} ms`)), ARCHIVE_CHECK_TIMEOUT_MS);
          }),
        ]).finally(() => clearTimeout(timer));
        if (!m) {
          log.warn({ bucket: cfg.s3.bucket, root }, 'no archive.json: cannot check the topic partitions against the archive (run `cdp setup`)');
          return;
        }
        expected = m.partitions;
        archivePartitionsSeen.set(cfg, expected);
      } catch (err) {
        log.warn({ err: toError(err).message }, 'cannot read archive.json: the topic partition count is checked against it on a later start');
        return;
      }
    }
    if (expected !== this.partitions) {
      throw new CdpError(
        ErrorCodes.SOURCE_NOT_READY,
        `Kafka topic ${this.topic} has ${this.partitions} partitions but the archive at s3://${cfg.s3.bucket}/${archiveRoot(cfg)} was set up for ${expected}: ` +
          `records in partitions the archive does not know would never be archived or restored. Kafka cannot remove partitions: ` +
          `to keep this archive, recreate topic ${this.topic} with ${expected} partitions; to use ${this.partitions}, set up a new archive ` +
          `(another kafka.topic and s3.prefix, kafka.partitions = ${this.partitions}) with \`cdp setup\`. The slot keeps the WAL meanwhile`,
        { details: { topic: this.topic, topicPartitions: this.partitions, archivePartitions: expected } },
      );
    }
  }

  private async stream_(): Promise<void> {
    const stream = this.stream!;
    const it = stream[Symbol.asyncIterator]();
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
    const types = new TypeNames(this.catalog!, (w) =>
      this.log.warn(
        w,
        'a column type was renamed again by a transaction not decoded yet: the name recorded for the changes after this DDL may be newer than they are (restore may stop on it)',
      ),
    );
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
          mapper.relation(m, await types.relation(m));
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
          if (out?.op === 'DDL' && out.content) {
            const risk = ddlReplayRisk(out.content);
            if (risk) {
              metrics.ddlReplayRisks.inc();
              this.log.warn(
                { xid: out.xid, commitLsn: formatLsn(out.commitLsn), position: out.position, risk },
                'a schema change restore may not replay exactly: a restore past it will stop at it (exit 1) unless given --ddl-override',
              );
              this.recordDdlRisk(out, risk);
            }
          }
          // A type, domain or schema renamed: pgoutput does not resend the Relation messages, the mapper learns the names here.
          if (out?.op === 'DDL') for (const [rel, names] of await types.afterDdl(out.xid)) mapper.relation(rel, names);
          if (!m.transactional) {
            // Outside any transaction: nothing for restore to apply, and no COMMIT to group it by (mapper.ts).
            metrics.nonTransactionalMessages.inc();
            this.log.debug({ prefix: m.prefix, lsn: formatLsn(m.lsn), bytes: m.content.length }, 'non-transactional logical message not archived');
          }
          break;
      }
      if (out && out.op !== 'COMMIT') {
        const key = Buffer.from(kafkaKey(out));
        const value = encodeEvent(out);
        this.checkRecordSize(out, key, value);
        // A large row does not join a batch it would take past batchMaxBytes: the batch goes first.
        // Interrupted means failed or stopping: the loop's check ends the session, and this change's
        // transaction is not confirmed (its COMMIT was not reached).
        if (!pipeline.fits(key.length + value.length) && (await this.interruptible(pipeline.room(key.length + value.length))) === 'interrupted') continue;
        pipeline.add(key, value, true);
      }
      if (pipeline.full) await this.interruptible(pipeline.room());
    }
  }

  private produce(ev: ChangeEvent, data: boolean, partition?: number): void {
    // A Buffer key: kafkajs would otherwise convert the string twice (partitioner and encoder).
    // encodeEvent = encodeChange (avsc) byte for byte, with the relation's encoding cached.
    this.pipeline.add(Buffer.from(kafkaKey(ev)), encodeEvent(ev), data, partition);
  }

  /**
   * A change Kafka would refuse (its record batch larger than the topic's max.message.bytes) would
   * fail every session at the same place: a restart loop that never ends. Stop with an error that
   * says which table, how large, and what the operator must change. Nothing is skipped.
   */
  private checkRecordSize(ev: ChangeEvent, key: Buffer, value: Buffer): void {
    const max = this.maxMessageBytes;
    if (max === null || key.length + value.length + 256 < max) return;
    const size = singleRecordBatchSize(key, value, SCHEMA_HEADER);
    if (size <= max) return;
    throw recordTooLarge(ev, size, max, this.topic);
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

  /**
   * Leaves a note in the archive for `cdp status` (layout.ts ddlRiskKey). Best effort, in the
   * background: capture does not depend on S3. The content is deterministic (from the event), so a
   * capture that decodes the same event again after a restart writes the same bytes.
   */
  private recordDdlRisk(ev: ChangeEvent, risk: string): void {
    const { cfg, log } = this;
    const body = {
      commitLsn: formatLsn(ev.commitLsn),
      commitTime: microsToIso(ev.commitTime),
      xid: ev.xid,
      position: ev.position,
      tag: (JSON.parse(ev.content!) as { tag?: string }).tag ?? null,
      risk,
    };
    const store = createStore(cfg, log, { signal: this.ctx.signal, maxElapsedMs: 60_000 });
    void putOnce(store, ddlRiskKey(archiveRoot(cfg), ev.commitLsn, ev.position), Buffer.from(JSON.stringify(body) + '\n'), { contentType: 'application/json' })
      .catch((err: unknown) =>
        log.warn(
          { err: toError(err).message },
          'could not record the DDL replay risk in the archive (cdp status will not show it; the capture log and metric do)',
        ),
      )
      .finally(() => store.client.destroy());
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

export function recordTooLarge(ev: ChangeEvent, size: number, maxMessageBytes: number, topic: string): CdpError {
  const what = ev.table ? `a ${ev.op} on table ${ev.schema}.${ev.table}` : `a ${ev.op} record`;
  return new CdpError(
    ErrorCodes.KAFKA,
    `${what} (commit LSN ${formatLsn(ev.commitLsn)}, xid ${ev.xid}) is ${size} bytes as a Kafka record, more than max.message.bytes = ${maxMessageBytes} of topic ${topic}: ` +
      `Kafka would refuse it on every attempt and capture does not skip changes. Raise the topic's limit above ${size} ` +
      `(kafka-configs.sh --alter --entity-type topics --entity-name ${topic} --add-config max.message.bytes=N; N at most the broker's socket.request.max.bytes), then start capture again; the slot keeps the WAL meanwhile`,
    {
      canRetry: false,
      details: { kafkaError: 'MESSAGE_TOO_LARGE', schema: ev.schema, table: ev.table, bytes: size, maxMessageBytes, commitLsn: formatLsn(ev.commitLsn) },
    },
  );
}

/** The topic's max.message.bytes (Kafka topic configs), or null if it cannot be read (e.g. no DescribeConfigs ACL). */
async function topicMaxMessageBytes(admin: Admin, topic: string, log: Logger): Promise<number | null> {
  try {
    const r = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] }],
    });
    const v = Number(r.resources[0]?.configEntries.find((e) => e.configName === 'max.message.bytes')?.configValue);
    return Number.isSafeInteger(v) && v > 0 ? v : null;
  } catch (err) {
    log.warn({ err: toError(err).message, topic }, 'cannot read the topic max.message.bytes; a row larger than it will be reported by Kafka instead');
    return null;
  }
}

/**
 * The key of the signed messages, from katya_cdp.secret (written by setup). Absent (setup did not
 * install DDL capture): undefined, and every cdp.ddl / cdp.sequences message is dropped as
 * unsigned. Present but unreadable by this role: capture refuses to start (it would drop every DDL).
 */
async function readMessageKey(catalog: pg.Client, log: Logger): Promise<MessageKey | undefined> {
  const r = await catalog.query<{ present: boolean; readable: boolean }>(
    `SELECT to_regclass('katya_cdp.secret') IS NOT NULL AS present,
            COALESCE(has_table_privilege(to_regclass('katya_cdp.secret'), 'SELECT'), false) AS readable`,
  );
  const { present, readable } = r.rows[0]!;
  if (!present) {
    log.warn(
      'katya_cdp.secret is missing (DDL capture not installed, or installed by an older version): schema changes are not captured; run `cdp setup` as a superuser',
    );
    return undefined;
  }
  if (!readable) {
    throw new CdpError(
      ErrorCodes.SOURCE_NOT_READY,
      'capture cannot read katya_cdp.secret, the key that authenticates DDL messages: run capture as the role that ran `cdp setup` (or a superuser)',
    );
  }
  const k = await catalog.query<{ ikey: Buffer; okey: Buffer }>('SELECT ikey, okey FROM katya_cdp.secret WHERE id = 1');
  const row = k.rows[0];
  if (!row) {
    log.warn('katya_cdp.secret holds no key: DDL messages cannot be verified and are dropped; run `cdp setup`');
    return undefined;
  }
  return { ikey: row.ikey, okey: row.okey };
}
