import { setMaxListeners } from 'node:events';
import type { Consumer, EachBatchPayload } from 'kafkajs';
import type { CommandContext } from '../context.js';
import { archiveRoot, topicName } from '../config/config.js';
import { CdpError, ErrorCodes, IntegrityError, toError } from '../errors.js';
import { createKafka } from '../kafka/client.js';
import { counter, gauge, histogram, registerHealth } from '../util/metrics.js';
import { faultPoint } from '../testing/faults.js';
import { createStore, type Store } from '../s3/client.js';
import { advancePartitionState, readArchiveManifest, readPartitionState, restorablePoint } from './catalog.js';
import { archiveGroupId, currentGeneration, describeGap, recordGap, type CurrentGeneration } from './chain.js';
import { loadKeyring, type Keyring } from './crypto.js';
import { cutReason, watermarkOnly } from './cut-policy.js';
import { parseSegmentKey, segmentKey } from './layout.js';
import { readValuePrefix, SegmentWriter, type FinishedSegment } from './segment.js';
import { storeSegment } from './upload.js';

// `cdp archive` (DESIGN.md sections 1, 2 and 4): a member of a Kafka consumer group that turns each
// assigned partition into a sequence of segment files on S3.
//
// The order of operations is the whole of G1: a record's offset is committed to Kafka only after
// the segment holding it AND every earlier segment of its partition are stored on S3 (one upload
// chain per partition, in offset order), and the partition's state pointer is moved before the
// offset commit. A crash anywhere (kill -9 between upload and commit included) leaves uncommitted
// records that the next owner reads again from the committed offset; what it writes then may
// duplicate what was stored, and duplicates are dropped by identity (commitLsn, position) at
// restore.
//
// kafkajs notes (kafkajs 2.2.4 source, src/consumer/runner.js): with autoCommit false nothing ever
// commits behind our back; eachBatchAutoResolve is off because the resolved offset is also the
// next FETCH position: we resolve exactly what we appended, so a batch cut short by back-pressure
// (pause) is fetched again from the first record we did not take.

const m = {
  segments: counter('cdp_archive_segments_total', 'Segments stored on S3', ['partition']),
  records: counter('cdp_archive_records_total', 'Change records stored in segments', ['partition']),
  storedBytes: counter('cdp_archive_stored_bytes_total', 'Bytes of segment objects stored (compressed, encrypted when enabled)', ['partition']),
  rawBytes: counter('cdp_archive_raw_bytes_total', 'Uncompressed Avro bytes of the records in stored segments', ['partition']),
  ratio: gauge('cdp_archive_compression_ratio', 'Uncompressed Avro bytes / stored bytes, over this process lifetime'),
  uploadSeconds: histogram('cdp_archive_upload_seconds', 'Time to store one segment on S3 (retries included)', [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]),
  sealToCommitSeconds: histogram('cdp_archive_seal_to_commit_seconds', 'From segment cut to Kafka offset commit', [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]),
  lag: gauge('cdp_archive_consumer_lag', 'Records in the partition after the committed (archived) offset', ['partition']),
  pendingBytes: gauge('cdp_archive_pending_bytes', 'Bytes of cut segments waiting for S3'),
  openBytes: gauge('cdp_archive_open_bytes', 'Bytes held by segments being filled'),
  pointAge: gauge('cdp_archive_restorable_point_age_seconds', 'Now minus the commit time of the restorable point (the RPO)'),
  pointLsn: gauge('cdp_archive_restorable_point_lsn', 'Restorable point LSN (as a number)'),
};

interface Lane {
  partition: number;
  open: SegmentWriter | undefined;
  /** Next offset expected; records below it are already held (open, queued or stored). */
  nextOffset: bigint | undefined;
  /** Segments cut and not yet stored (the upload chain's backlog). */
  queued: number;
  queuedBytes: number;
  chain: Promise<void>;
  revoked: boolean;
  paused: boolean;
  highWatermark: bigint;
  committed: bigint;
  /** The lane's start was checked against the archive and Kafka (chain of custody). */
  started: boolean;
  /** SHA-256 of the previous segment this lane cut (the next one's manifest names it). */
  prevSha: string | undefined;
  /** Idle lanes (cut-policy.ts): when and to what watermark the pointer was last moved without a segment. */
  idlePointerAt: number;
  idlePointerLsn: number;
}

export interface ArchiverHandle {
  /** Resolves after a clean stop (signal: flush, store, commit); rejects on a fatal error. */
  done: Promise<void>;
}

export interface ArchiverOptions {
  /** Kafka client id suffix (tests run several archivers in one process). */
  clientSuffix?: string;
  /** Called after each segment is stored, before its offsets are committed (benchmarks, tests). */
  onSegmentStored?: (seg: FinishedSegment, key: string, storedAt: number) => void;
}

export async function startArchiver(ctx: CommandContext, opts: ArchiverOptions = {}): Promise<ArchiverHandle> {
  const { cfg } = ctx;
  const log = ctx.log.child({ component: 'archive' });
  const topic = topicName(cfg);
  const root = archiveRoot(cfg);
  const keyring: Keyring | undefined = loadKeyring(cfg);
  const maxBytes = cfg.archive.segmentMaxBytes;
  const maxAge = cfg.archive.segmentMaxAgeMs;
  // Memory bound (G4): cut segments waiting for S3 may hold at most this many bytes in total, and
  // a partition at most two (one uploading, one waiting); beyond that its fetching is paused.
  const maxPendingBytes = 2 * maxBytes;
  const limits = { maxBytes, maxAgeMs: maxAge, minAgeMs: cfg.archive.segmentMinAgeMs, idleMaxAgeMs: cfg.archive.idleSegmentMaxAgeMs };

  // The store keeps retrying through S3 outages until this controller aborts: NOT ctx.signal, since
  // on SIGTERM we still want the final flush to reach S3. It is aborted when the flush gives up.
  const storeAbort = new AbortController();
  // Every in-flight S3 call and retry sleep listens on it: one per partition upload chain, each
  // with a few concurrent calls; Node warns past 10 listeners by default.
  setMaxListeners(1000, storeAbort.signal);
  const store: Store = createStore(cfg, log, { signal: storeAbort.signal });

  const kafka = createKafka(cfg, log, opts.clientSuffix ?? 'archive');
  const admin = kafka.admin();
  let partitionCount: number;
  try {
    await admin.connect();
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    partitionCount = meta.topics[0]?.partitions.length ?? 0;
  } catch (err) {
    throw new CdpError(ErrorCodes.KAFKA, `cannot read metadata of topic ${topic} (${toError(err).message}): check kafka.brokers / CDP_KAFKA_BROKERS, and run cdp setup to create the topic`, { cause: err, canRetry: true });
  } finally {
    await admin.disconnect().catch(() => {});
  }
  if (partitionCount === 0) throw new CdpError(ErrorCodes.SOURCE_NOT_READY, `topic ${topic} has no partitions: run cdp setup`);

  // The stream generation (chain.ts): segments are stamped with it, and the group id carries the
  // topic epoch, so that a recreated topic is read from its own offset 0, never from the committed
  // offsets of the deleted one.
  const gen: CurrentGeneration = await currentGeneration(store, root);
  const groupId = archiveGroupId(cfg, gen.topicEpoch);
  // Kept connected for the lane-start checks (committed offset, low/high watermarks).
  const chainAdmin = kafka.admin();
  let chainAdminConnected: Promise<void> | undefined;

  // Session timeout: how long the group waits for a member that stopped heartbeating before its
  // partitions move. After a broker crash the old membership lingers that long, so it is the pause
  // in archiving (and in the restorable point) before the group settles: 30 s (kafkajs's default)
  // measured as a ~25 s catch-up in the restarts test. eachBatch never waits on S3 (uploads run
  // beside it), so heartbeats keep flowing every fetch (maxWaitTimeInMs) and 10 s is safe; the
  // broker's floor is group.min.session.timeout.ms (6 s by default).
  const consumer: Consumer = kafka.consumer({
    groupId,
    sessionTimeout: cfg.archive.sessionTimeoutMs,
    rebalanceTimeout: 60_000,
    heartbeatInterval: Math.max(500, Math.floor(cfg.archive.sessionTimeoutMs / 10)),
    allowAutoTopicCreation: false,
    maxBytesPerPartition: 1024 * 1024,
    maxBytes: 8 * 1024 * 1024,
    maxWaitTimeInMs: 500,
    retry: { retries: 10, initialRetryTime: 300, maxRetryTime: 30_000 },
  });

  const lanes = new Map<number, Lane>();
  let totalQueuedBytes = 0;
  let stopping = false;
  let fatal: Error | undefined;
  let batchesInFlight = 0;
  let storedSegments = 0;
  let rawTotal = 0;
  let storedTotal = 0;
  let lastStoredAt = 0;
  /** When a lane's upload backlog last went from empty to one segment (the stall clock's start). */
  let lastQueuedAt = 0;
  let resolveDone!: () => void;
  let rejectDone!: (err: Error) => void;
  const done = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });

  const lane = (partition: number): Lane => {
    let l = lanes.get(partition);
    if (!l) {
      l = { partition, open: undefined, nextOffset: undefined, queued: 0, queuedBytes: 0, chain: Promise.resolve(), revoked: false, paused: false, highWatermark: 0n, committed: -1n, started: false, prevSha: undefined, idlePointerAt: 0, idlePointerLsn: 0 };
      lanes.set(partition, l);
    }
    return l;
  };

  const updateGauges = () => {
    m.pendingBytes.set(totalQueuedBytes);
    let open = 0;
    for (const l of lanes.values()) {
      open += l.open?.memoryBytes ?? 0;
      if (l.committed >= 0n) m.lag.set({ partition: String(l.partition) }, Number(l.highWatermark > l.committed ? l.highWatermark - l.committed : 0n));
    }
    m.openBytes.set(open);
  };

  const overLimit = (l: Lane) => l.queued >= 2 || totalQueuedBytes >= maxPendingBytes;

  const pause = (l: Lane) => {
    if (l.paused) return;
    l.paused = true;
    consumer.pause([{ topic, partitions: [l.partition] }]);
    log.debug({ partition: l.partition, queued: l.queued, totalQueuedBytes }, 'pausing fetch: segments waiting for S3');
  };

  const resumeWhatCan = () => {
    if (stopping) return;
    for (const l of lanes.values()) {
      if (l.paused && !overLimit(l)) {
        l.paused = false;
        consumer.resume([{ topic, partitions: [l.partition] }]);
      }
    }
  };

  const fail = (err: Error) => {
    if (fatal) return;
    fatal = err;
    log.error({ err }, 'archiver failed');
    stopping = true;
    storeAbort.abort(err);
    clearInterval(genTimer);
    void chainAdmin.disconnect().catch(() => {});
    void consumer.disconnect().catch(() => {}).finally(() => rejectDone(err));
  };

  /** Stores one cut segment, moves the pointer, then commits the offsets (in that order: G1, G3). */
  const persist = async (l: Lane, seg: FinishedSegment, cutAt: number) => {
    try {
      if (l.revoked || fatal) return;
      const key = segmentKey(root, seg.name);
      const t0 = Date.now();
      const result = await storeSegment(store, key, seg.bytes, seg.name.sha256);
      const p = String(l.partition);
      m.uploadSeconds.observe((Date.now() - t0) / 1000);
      m.segments.inc({ partition: p });
      m.records.inc({ partition: p }, seg.manifest.count);
      m.storedBytes.inc({ partition: p }, seg.bytes.length);
      m.rawBytes.inc({ partition: p }, seg.rawBytes);
      storedSegments += 1;
      rawTotal += seg.rawBytes;
      storedTotal += seg.bytes.length;
      m.ratio.set(rawTotal / storedTotal);
      lastStoredAt = Date.now();
      log.debug({ key, result, count: seg.manifest.count, bytes: seg.bytes.length, watermark: seg.manifest.watermarkLsn }, 'segment stored');
      opts.onSegmentStored?.(seg, key, lastStoredAt);
      faultPoint('crash-after-upload');
      // Every earlier offset of this partition is stored: earlier segments went through this chain
      // before us, and offsets before where this owner started were committed, hence stored.
      await advancePartitionState(store, root, {
        partition: l.partition,
        watermarkLsn: seg.manifest.watermarkLsn,
        watermarkTime: seg.manifest.watermarkTime,
        lastOffset: seg.name.lastOffset,
        lastKey: key,
        epoch: seg.name.epoch,
      });
      if (l.revoked) return; // the new owner commits its own progress; ours could only move it back
      const next = BigInt(seg.name.lastOffset) + 1n;
      try {
        await consumer.commitOffsets([{ topic, partition: l.partition, offset: String(next) }]);
        if (next > l.committed) l.committed = next;
        m.sealToCommitSeconds.observe((Date.now() - cutAt) / 1000);
        faultPoint('crash-after-commit');
      } catch (err) {
        // Harmless for G1: the records are stored; a later commit covers them, or the next owner
        // reads them again and writes duplicates that restore drops by identity.
        log.warn({ err: toError(err).message, partition: l.partition, offset: String(next) }, 'offset commit failed; records are stored, will be re-read if no later commit succeeds');
      }
    } catch (err) {
      if (storeAbort.signal.aborted) return;
      fail(toError(err));
    } finally {
      l.queued -= 1;
      l.queuedBytes -= seg.bytes.length;
      totalQueuedBytes -= seg.bytes.length;
      updateGauges();
      resumeWhatCan();
    }
  };

  const cut = (l: Lane) => {
    const w = l.open;
    if (!w || w.count === 0) return;
    l.open = undefined;
    const seg = w.finish(keyring);
    l.prevSha = seg.name.sha256;
    l.queued += 1;
    l.queuedBytes += seg.bytes.length;
    totalQueuedBytes += seg.bytes.length;
    const cutAt = Date.now();
    if (l.queued === 1) lastQueuedAt = cutAt;
    l.chain = l.chain.then(() => persist(l, seg, cutAt));
    updateGauges();
  };

  /**
   * Records a hole in a partition's offsets (offsets from..to of this topic epoch never reached the
   * archive) as a gap marker, and breaks the lane's hash chain there. untilLsn: the highest commit
   * LSN among the records read from the hole on (capture produces a partition in commit order, so
   * a lost record committed no later than what followed it).
   */
  const recordLaneGap = async (l: Lane, from: bigint, to: bigint, after: ReadonlyArray<{ value: Buffer | null }>) => {
    let untilLsn = 0;
    for (const m of after) {
      if (!m.value) continue;
      try {
        untilLsn = Math.max(untilLsn, readValuePrefix(m.value).commitLsn);
      } catch {
        // not a change event: SegmentWriter.append reports it
      }
    }
    const st = await readPartitionState(store, root, l.partition);
    const gap = await recordGap(store, root, {
      kind: 'retention',
      generation: gen.generation,
      topicEpoch: gen.topicEpoch,
      partition: l.partition,
      fromOffset: String(from),
      toOffset: String(to),
      afterLsn: st?.watermarkLsn ?? 0,
      afterTime: st?.watermarkTime ?? 0,
      untilLsn,
      detail: `Kafka no longer holds offsets ${from}..${to} of partition ${l.partition} (deleted by retention or deleteRecords before they were archived); the archive continues at offset ${to + 1n}`,
    });
    l.prevSha = undefined;
    log.error({ partition: l.partition, gap: gap.key }, `chain of custody broken, gap recorded: ${describeGap(gap)}`);
  };

  /**
   * A lane's first batch after a group join: where must the partition continue? At the higher of
   * the group's committed offset and the offset after the last archived one (the state pointer, in
   * this topic epoch), or at 0 when neither is known (a new topic epoch starts at 0). Kafka handing
   * us a later first offset means the records between are gone (kafkajs resets an out-of-range
   * position to the log start without telling): a gap, recorded before anything is stored. A
   * partition whose high watermark is below what the archive already holds was recreated behind
   * the archive's back: the archiver stops (cdp setup starts a new topic epoch).
   */
  const startLane = async (l: Lane, messages: ReadonlyArray<{ offset: string; value: Buffer | null }>) => {
    chainAdminConnected ??= chainAdmin.connect();
    await chainAdminConnected;
    const [committedList, offsets, st] = await Promise.all([
      chainAdmin.fetchOffsets({ groupId, topics: [topic] }),
      chainAdmin.fetchTopicOffsets(topic),
      readPartitionState(store, root, l.partition),
    ]);
    if (l.revoked) return;
    const committed = BigInt(committedList[0]?.partitions.find((x) => x.partition === l.partition)?.offset ?? '-1');
    const po = offsets.find((x) => x.partition === l.partition);
    const sameEpoch = st !== undefined && (st.epoch ?? 0) === gen.topicEpoch && /^\d+$/.test(st.lastOffset ?? '');
    const archivedNext = sameEpoch ? BigInt(st.lastOffset) + 1n : undefined;
    if (archivedNext !== undefined && po && BigInt(po.high) < archivedNext) {
      throw new IntegrityError(
        `partition ${l.partition} of topic ${topic} ends at offset ${po.high}, but the archive already holds offsets up to ${archivedNext - 1n} of this topic epoch: ` +
          'the topic was deleted and created again behind the archive. Run cdp setup (it records the break and starts a new topic epoch), then start the archiver again',
        { details: { partition: l.partition, high: po.high, archived: String(archivedNext - 1n) } },
      );
    }
    let expected = archivedNext ?? 0n;
    if (committed > expected) expected = committed;
    const first = BigInt(messages[0]!.offset);
    l.started = true;
    if (first > expected) {
      await recordLaneGap(l, expected, first - 1n, messages);
    } else if (sameEpoch && first === archivedNext) {
      l.prevSha = parseSegmentKey(st.lastKey)?.sha256;
    }
    log.info({ partition: l.partition, first: String(first), expected: String(expected), low: po?.low, high: po?.high, generation: gen.generation, epoch: gen.topicEpoch }, 'archive lane started');
  };

  // eslint-disable-next-line @typescript-eslint/unbound-method -- kafkajs's payload functions are closures, typed as methods
  const eachBatch = async ({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload) => {
    batchesInFlight += 1;
    try {
      const l = lane(batch.partition);
      if (l.revoked) return;
      l.highWatermark = BigInt(batch.highWatermark);
      // The log now ends before offsets this lane already received: the topic was deleted and
      // created again (or truncated) under us. kafkajs would reset to the new log's start and its
      // records would look like re-deliveries of what we hold: stop instead (cdp setup starts a
      // new topic epoch). Only with records in hand: a new partition leader's high watermark may lag
      // for a moment (an empty fetch), but records below it come only from a reset position.
      if (l.nextOffset !== undefined && batch.messages.length > 0 && l.highWatermark < l.nextOffset) {
        throw new IntegrityError(
          `partition ${l.partition} of topic ${topic} now ends at offset ${l.highWatermark}, before offset ${l.nextOffset - 1n} that this archiver already read: ` +
            'the topic was deleted and created again (or truncated). Run cdp setup (it records the break and starts a new topic epoch), then start the archiver again',
          { details: { partition: l.partition, high: String(l.highWatermark), received: String(l.nextOffset - 1n) } },
        );
      }
      if (!l.started && batch.messages.length > 0) {
        await startLane(l, batch.messages);
        if (l.revoked || stopping) return;
      }
      for (const [i, msg] of batch.messages.entries()) {
        if (stopping || !isRunning() || isStale()) break;
        if (l.revoked) break; // a rebalance replaced this lane while the batch was running
        const off = BigInt(msg.offset);
        const step = offsetStep(l.nextOffset, off);
        // Records below nextOffset are already in an open, cut or stored segment of this lane.
        if (step === 'held') {
          resolveOffset(msg.offset);
          continue;
        }
        if (step === 'jump') {
          // Never let one segment span a hole: restore reads a partition's segments in offset
          // order and drops what it has seen by identity, so a segment [C..N, X..] read before the
          // segment holding N+1..X-1 would hide those records. The open records are contiguous
          // and really consumed: store them as their own segment (its commit says "all below N+1
          // is stored", which is true; at worst it moves the group's offset back, which costs a
          // re-read, never a record); the next segment starts at this record. Lanes are dropped on
          // every group join, so within one membership a jump means Kafka no longer has the
          // skipped offsets (retention, offset reset): restore reports that hole (exit 3).
          log.error(
            { partition: l.partition, expected: String(l.nextOffset), got: msg.offset },
            'Kafka delivered a later offset than expected: the offsets between were never archived by this member (deleted by retention before archiving, or stored by another member); cutting the open segment before the jump',
          );
          cut(l);
          // The hole is recorded before anything after it is stored (chain.ts).
          await recordLaneGap(l, l.nextOffset!, off - 1n, batch.messages.slice(i));
        }
        if (msg.value) {
          l.open ??= new SegmentWriter({ partition: l.partition, codec: cfg.archive.codec, zstdLevel: cfg.archive.zstdLevel, generation: gen.generation, epoch: gen.topicEpoch, prevSha256: l.prevSha });
          l.open.append(msg.value, msg.offset);
        }
        l.nextOffset = off + 1n;
        resolveOffset(msg.offset);
        const why = cutReason(l.open, Date.now(), limits);
        if (why === 'size' || why === 'watermark') cut(l);
        if (overLimit(l)) {
          pause(l);
          break;
        }
      }
      updateGauges();
      await heartbeat();
    } catch (err) {
      const e = toError(err);
      if (e instanceof CdpError) fail(e);
      throw e;
    } finally {
      batchesInFlight -= 1;
    }
  };

  // Age cut: keeps the RPO at seconds on a quiet partition (DESIGN.md section 1); on an idle one
  // (watermarks only, cut-policy.ts) the pointer follows the held watermarks instead of new objects.
  const ageTimer = setInterval(() => {
    if (stopping) return;
    const now = Date.now();
    for (const l of lanes.values()) {
      if (cutReason(l.open, now, limits)) cut(l);
      else if (watermarkOnly(l.open) && now - l.idlePointerAt >= cfg.archive.idlePointerIntervalMs) advanceIdle(l, now);
    }
  }, Math.max(50, Math.min(1_000, Math.floor(Math.min(maxAge, cfg.archive.segmentMinAgeMs * 2) / 4))));

  /**
   * An idle lane's open segment holds only watermarks: move the partition pointer to its newest
   * watermark without storing it. Sound only when the held records follow the last stored offset
   * directly (pointer lastOffset + 1 = the held segment's first offset): then every record before
   * the watermark is stored, which is what the pointer promises (catalog.ts, G3). The held segment
   * is stored later (idle cut) or with the next changes; its offsets are committed only then.
   */
  const advanceIdle = (l: Lane, now: number) => {
    const w = l.open!;
    if (w.watermarkLsn <= l.idlePointerLsn) return;
    l.idlePointerAt = now;
    const held = { lsn: w.watermarkLsn, time: w.watermarkTime, first: BigInt(w.firstOffset) };
    l.chain = l.chain.then(async () => {
      try {
        if (l.revoked || fatal) return;
        const st = await readPartitionState(store, root, l.partition);
        if (!st || (st.epoch ?? 0) !== gen.topicEpoch || !/^\d+$/.test(st.lastOffset ?? '') || BigInt(st.lastOffset) + 1n !== held.first) {
          // Not provable from the pointer (no segment stored yet in this epoch, or records between
          // that were not appended): store the held segment as before; the pointer then exists.
          if (l.open === w && !stopping) cut(l);
          return;
        }
        await advancePartitionState(store, root, { partition: l.partition, watermarkLsn: held.lsn, watermarkTime: held.time, lastOffset: st.lastOffset, lastKey: st.lastKey, epoch: st.epoch });
        l.idlePointerLsn = held.lsn;
        lastStoredAt = Date.now();
      } catch (err) {
        // Only the pointer lagged: the next cut moves it.
        log.debug({ err: toError(err).message, partition: l.partition }, 'idle pointer update failed');
      }
    });
  };

  // The restorable point for /metrics (status computes the same from S3).
  let pointPartitions = partitionCount;
  const pointTimer = setInterval(() => {
    void (async () => {
      try {
        const manifest = await readArchiveManifest(store, root);
        if (manifest?.partitions) pointPartitions = manifest.partitions;
        const point = await restorablePoint(store, root, { partitions: pointPartitions });
        if (point) {
          m.pointAge.set(Math.max(0, (Date.now() * 1000 - point.time) / 1e6));
          m.pointLsn.set(point.lsn);
        }
      } catch (err) {
        log.debug({ err: toError(err).message }, 'cannot compute the restorable point');
      }
    })();
  }, 10_000);
  pointTimer.unref();

  // A new generation started by cdp setup while we run: a slot-only break keeps the topic (the
  // offsets continue), and what we store next is stamped with the new generation; a new topic
  // epoch means our group and offsets belong to a deleted topic: stop (exit 1) and let the
  // supervisor start us again in the new epoch.
  const genTimer = setInterval(() => {
    void currentGeneration(store, root).then(
      (g) => {
        if (g.topicEpoch !== gen.topicEpoch) {
          fail(new CdpError(ErrorCodes.KAFKA, `cdp setup started topic epoch ${g.topicEpoch} (the archiver runs epoch ${gen.topicEpoch}): restart the archiver`));
        } else if (g.generation !== gen.generation) {
          log.info({ from: gen.generation, to: g.generation }, 'archive: new stream generation');
          gen.generation = g.generation;
        }
      },
      (err: unknown) => log.debug({ err: toError(err).message }, 'cannot read the stream generation'),
    );
  }, 5_000);
  genTimer.unref();

  registerHealth('archive', () => ({
    // Not ok while segments wait for S3 and nothing was stored for two minutes (an S3 outage): the
    // watchdog (ops/watchdog.ts) ends the daemon if that lasts watchdog.stallSeconds.
    ok: !fatal && !(totalQueuedBytes > 0 && Date.now() - Math.max(lastStoredAt, lastQueuedAt) > 120_000),
    detail: { assigned: [...lanes.keys()], storedSegments, pendingBytes: totalQueuedBytes, lastStoredAt: lastStoredAt ? new Date(lastStoredAt).toISOString() : null },
  }));

  // Rebalance (kafkajs has no revocation callback; GROUP_JOIN carries the new assignment): EVERY
  // lane is dropped on every join, kept partitions included, without storing or committing its
  // in-memory records. After a join kafkajs fetches each assigned partition again from the group's
  // committed offset (consumerGroup sync builds a new OffsetManager), and between our leaving and
  // rejoining another member may have owned the partition and committed past our open records:
  // a kept lane would then glue its old open records to the fetch from that later offset, a
  // segment with a hole. Every offset below the committed one is stored (G1), and whatever we
  // drop is above it, so the next fetch reads it again. Segments already cut finish their upload
  // (revoked: no commit; an upload not yet started is skipped).
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    const assigned = new Set(payload.memberAssignment[topic] ?? []);
    for (const l of [...lanes.values()]) {
      l.revoked = true;
      l.open = undefined;
      if (l.paused) consumer.resume([{ topic, partitions: [l.partition] }]);
      lanes.delete(l.partition);
      log.info({ partition: l.partition, kept: assigned.has(l.partition) }, 'rebalance: dropped the partition\'s unstored records (they are read again from the committed offset)');
    }
    log.info({ groupId, assigned: [...assigned].sort((a, b) => a - b) }, 'joined the archive group');
  });
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    if (!payload.restart) fail(new CdpError(ErrorCodes.KAFKA, `Kafka consumer stopped: ${payload.error.message}`, { cause: payload.error }));
    else log.warn({ err: payload.error.message }, 'Kafka consumer crashed; kafkajs restarts it');
  });

  const flushAndStop = async () => {
    stopping = true;
    clearInterval(ageTimer);
    clearInterval(pointTimer);
    clearInterval(genTimer);
    try {
      // Stop fetching, let the batch being handled finish, then cut, store and commit everything.
      consumer.pause([{ topic }]);
      while (batchesInFlight > 0) await new Promise((r) => setTimeout(r, 20));
      for (const l of lanes.values()) if (!l.revoked) cut(l);
      const giveUp = setTimeout(() => storeAbort.abort(new CdpError(ErrorCodes.SHUTDOWN, 'final flush timed out')), 45_000);
      await Promise.all([...lanes.values()].map((l) => l.chain));
      clearTimeout(giveUp);
      log.info({ storedSegments }, 'archiver stopped after storing and committing its segments');
    } finally {
      await consumer.disconnect().catch((err: unknown) => log.warn({ err: toError(err).message }, 'Kafka disconnect failed'));
      await chainAdmin.disconnect().catch(() => {});
    }
  };

  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({ autoCommit: false, eachBatchAutoResolve: false, partitionsConsumedConcurrently: 1, eachBatch });
  log.info({ topic, groupId, root, partitions: partitionCount, segmentMaxBytes: maxBytes, segmentMaxAgeMs: maxAge, codec: cfg.archive.codec, encrypted: Boolean(keyring) }, 'archiver running');

  const onAbort = () => {
    if (fatal) return;
    flushAndStop().then(
      () => (fatal ? rejectDone(fatal) : resolveDone()),
      (err: unknown) => rejectDone(toError(err)),
    );
  };
  if (ctx.signal.aborted) onAbort();
  else ctx.signal.addEventListener('abort', onAbort, { once: true });
  return { done };
}

/**
 * Where a fetched record stands relative to a lane's next expected offset: 'held' (below it: a
 * re-delivery of a record the lane already holds), 'next' (the lane is empty or it is exactly the
 * next one), or 'jump' (past it: the offsets between were never received by this lane, and the
 * open segment must not be continued across them).
 */
export function offsetStep(nextOffset: bigint | undefined, off: bigint): 'held' | 'next' | 'jump' {
  if (nextOffset === undefined || off === nextOffset) return 'next';
  return off < nextOffset ? 'held' : 'jump';
}
