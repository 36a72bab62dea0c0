import { CdpError, IntegrityError, toError } from '../errors.js';
import { counter, gauge, histogram } from '../util/metrics.js';
import { faultPoint } from '../testing/faults.js';
import { cutReason, watermarkOnly } from './cut-policy.js';
import { segmentKey } from './layout.js';
import type { BatchControl, CutPolicy, LaneArchive, LaneBatch, LaneConsumer, LanesOptions } from './lane-ports.js';
import { SegmentWriter, type FinishedSegment } from './segment.js';
import { recordOffsetGap, startLanePosition, type LaneEdgeContext } from './lane-start.js';

// The archiver's lanes (DESIGN.md sections 1, 2 and 4): one per assigned partition, each turning
// the partition's records into a sequence of segments on S3. A lane appends records to its open
// segment, cuts it when the cut policy says so, and stores cut segments one after the other on its
// upload chain: store the segment, move the partition's state pointer, then commit the offsets.
//
// The order is the whole of G1: a record's offset is committed to Kafka only after the segment
// holding it AND every earlier segment of its partition are stored on S3, and the state pointer is
// moved before the offset commit. A crash anywhere (kill -9 between upload and commit included)
// leaves uncommitted records that the next owner reads again from the committed offset; what it
// writes then may duplicate what was stored, and duplicates are dropped by identity (commitLsn,
// position) at restore.
//
// The lanes know nothing of kafkajs or S3 clients: the consumer group (archiver.ts) and the
// archive's storage come in as two small interfaces (lane-ports.ts), so that the logic is tested with
// plain fakes (test/unit/archive/lanes.test.ts).

// The lanes' interfaces to the outside (the archive, the consumer group, the options): lane-ports.ts.
export type { BatchControl, CutPolicy, LaneArchive, LaneBatch, LaneConsumer, LanesOptions } from './lane-ports.js';

const m = {
  segments: counter('cdp_archive_segments_total', 'Segments stored on S3', ['partition']),
  records: counter('cdp_archive_records_total', 'Change records stored in segments', ['partition']),
  storedBytes: counter('cdp_archive_stored_bytes_total', 'Bytes of segment objects stored (compressed, encrypted when enabled)', ['partition']),
  rawBytes: counter('cdp_archive_raw_bytes_total', 'Uncompressed Avro bytes of the records in stored segments', ['partition']),
  ratio: gauge('cdp_archive_compression_ratio', 'Uncompressed Avro bytes / stored bytes, over this process lifetime'),
  uploadSeconds: histogram(
    'cdp_archive_upload_seconds',
    'Time to store one segment on S3 (retries included)',
    [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
  ),
  sealToCommitSeconds: histogram('cdp_archive_seal_to_commit_seconds', 'From segment cut to Kafka offset commit', [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]),
  lag: gauge('cdp_archive_consumer_lag', 'Records in the partition after the committed (archived) offset', ['partition']),
  pendingBytes: gauge('cdp_archive_pending_bytes', 'Bytes of cut segments waiting for S3'),
  openBytes: gauge('cdp_archive_open_bytes', 'Bytes held by segments being filled'),
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
  /**
   * The lane's own stall clock: when it last stored a segment, and when its upload backlog last
   * went from empty to one segment. Another lane's progress (a stored segment, an idle pointer)
   * says nothing about this lane's uploads.
   */
  storedAt: number;
  queuedAt: number;
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

/** Segments waiting this long with none stored is a stall (health, watchdog). */
const STALL_MS = 120_000;

export class ArchiveLanes {
  private readonly lanes = new Map<number, Lane>();
  private readonly policy: CutPolicy;
  private totalQueuedBytes = 0;
  private stopping = false;
  private fatal: Error | undefined;
  private batchesInFlight = 0;
  private storedSegments = 0;
  private rawTotal = 0;
  private storedTotal = 0;
  /** When a segment was last stored, or an idle pointer moved while no segment waited anywhere. */
  private lastStoredAt = 0;
  /** When a lane's upload backlog last went from empty to one segment (the stall clock's start). */
  private lastQueuedAt = 0;

  constructor(
    private readonly archive: LaneArchive,
    private readonly consumer: LaneConsumer,
    private readonly opts: LanesOptions,
  ) {
    this.policy = opts.cutPolicy ?? ((s, now) => cutReason(s, now, opts.limits));
  }

  /** The first fatal error, if any. */
  get failure(): Error | undefined {
    return this.fatal;
  }

  /**
   * Liveness facts for /healthz (and the watchdog): not ok while a lane has segments waiting for S3
   * and stored none for two minutes (other lanes' stored segments or idle pointer moves do not
   * count for it), or while segments wait anywhere (a dropped lane's too) and none was stored.
   */
  health(now = Date.now()): { ok: boolean; detail: Record<string, unknown> } {
    const stalledPartitions = [...this.lanes.values()].filter((l) => l.queued > 0 && now - Math.max(l.storedAt, l.queuedAt) > STALL_MS).map((l) => l.partition);
    const stalled = stalledPartitions.length > 0 || (this.totalQueuedBytes > 0 && now - Math.max(this.lastStoredAt, this.lastQueuedAt) > STALL_MS);
    return {
      ok: !this.fatal && !stalled,
      detail: {
        assigned: [...this.lanes.keys()],
        storedSegments: this.storedSegments,
        pendingBytes: this.totalQueuedBytes,
        stalledPartitions,
        lastStoredAt: this.lastStoredAt ? new Date(this.lastStoredAt).toISOString() : null,
      },
    };
  }

  get stored(): number {
    return this.storedSegments;
  }

  /** Stops the lanes on a fatal error: no more appends, cuts or uploads; onFatal is told once. */
  fail(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    this.stopping = true;
    this.opts.onFatal(err);
  }

  /**
   * Rebalance: EVERY lane is dropped on every group join, kept partitions included, without storing
   * or committing its in-memory records. After a join the consumer fetches each assigned partition
   * again from the group's committed offset, and between our leaving and rejoining another member
   * may have owned the partition and committed past our open records: a kept lane would then glue
   * its old open records to the fetch from that later offset, a segment with a hole. Every offset
   * below the committed one is stored (G1), and whatever we drop is above it, so the next fetch
   * reads it again. Segments already cut finish their upload (revoked: no commit; an upload not
   * yet started is skipped).
   */
  dropAll(assigned: ReadonlySet<number>): void {
    for (const l of [...this.lanes.values()]) {
      l.revoked = true;
      l.open = undefined;
      if (l.paused) this.consumer.resume(l.partition);
      this.lanes.delete(l.partition);
      this.opts.log.info(
        { partition: l.partition, kept: assigned.has(l.partition) },
        "rebalance: dropped the partition's unstored records (they are read again from the committed offset)",
      );
    }
  }

  /** Appends a fetched batch to its partition's lane, cutting and pausing as the policy and the memory bound say. */
  async handleBatch(batch: LaneBatch, ctl: BatchControl): Promise<void> {
    this.batchesInFlight += 1;
    try {
      const l = this.lane(batch.partition);
      if (l.revoked) return;
      l.highWatermark = BigInt(batch.highWatermark);
      // The log now ends before offsets this lane already received: the topic was deleted and
      // created again (or truncated) under us. The consumer would reset to the new log's start and
      // its records would look like re-deliveries of what we hold: stop instead (cdp setup starts
      // a new topic epoch). Only with records in hand: a new partition leader's high watermark may
      // lag for a moment (an empty fetch), but records below it come only from a reset position.
      if (l.nextOffset !== undefined && batch.messages.length > 0 && l.highWatermark < l.nextOffset) {
        throw new IntegrityError(
          `partition ${l.partition} of topic ${this.opts.topic} now ends at offset ${l.highWatermark}, before offset ${l.nextOffset - 1n} that this archiver already read: ` +
            'the topic was deleted and created again (or truncated). Run cdp setup (it records the break and starts a new topic epoch), then start the archiver again',
          { details: { partition: l.partition, high: String(l.highWatermark), received: String(l.nextOffset - 1n) } },
        );
      }
      if (!l.started && batch.messages.length > 0) {
        await this.startLane(l, batch.messages);
        if (l.revoked || this.stopping) return;
      }
      for (const [i, msg] of batch.messages.entries()) {
        if (this.stopping || !ctl.running()) break;
        if (l.revoked) break; // a rebalance replaced this lane while the batch was running
        const off = BigInt(msg.offset);
        const step = offsetStep(l.nextOffset, off);
        // Records below nextOffset are already in an open, cut or stored segment of this lane.
        if (step === 'held') {
          ctl.resolveOffset(msg.offset);
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
          this.opts.log.error(
            { partition: l.partition, expected: String(l.nextOffset), got: msg.offset },
            'Kafka delivered a later offset than expected: the offsets between were never archived by this member (deleted by retention before archiving, or stored by another member); cutting the open segment before the jump',
          );
          this.cut(l);
          // The hole is recorded before anything after it is stored (chain.ts).
          await this.recordLaneGap(l, l.nextOffset!, off - 1n, batch.messages.slice(i));
        }
        if (msg.value) {
          const g = this.opts.generation;
          l.open ??= new SegmentWriter({
            partition: l.partition,
            codec: this.opts.codec,
            zstdLevel: this.opts.zstdLevel,
            generation: g.generation,
            epoch: g.topicEpoch,
            prevSha256: l.prevSha,
          });
          l.open.append(msg.value, msg.offset);
        }
        l.nextOffset = off + 1n;
        ctl.resolveOffset(msg.offset);
        const why = this.policy(l.open, Date.now());
        if (why === 'size' || why === 'watermark') this.cut(l);
        if (this.overLimit(l)) {
          this.pause(l);
          break;
        }
      }
      this.updateGauges();
      await ctl.heartbeat();
    } catch (err) {
      const e = toError(err);
      if (e instanceof CdpError) this.fail(e);
      throw e;
    } finally {
      this.batchesInFlight -= 1;
    }
  }

  /**
   * The timer's turn: cuts what the policy says is due by age (keeps the RPO at seconds on a quiet
   * partition, DESIGN.md section 1); on an idle lane (watermarks only, cut-policy.ts) the pointer
   * follows the held watermarks instead of new objects.
   */
  tick(now = Date.now()): void {
    if (this.stopping) return;
    for (const l of this.lanes.values()) {
      if (this.policy(l.open, now)) this.cut(l);
      else if (watermarkOnly(l.open) && now - l.idlePointerAt >= this.opts.idlePointerIntervalMs) this.advanceIdle(l, now);
    }
  }

  /** No more appends, cuts by the timer or resumed fetching: the final flush follows. */
  beginStop(): void {
    this.stopping = true;
  }

  /** The final flush, first half: waits for the batch being handled, then cuts every open segment. */
  async cutAll(): Promise<void> {
    this.stopping = true;
    while (this.batchesInFlight > 0) await new Promise((r) => setTimeout(r, 20));
    for (const l of this.lanes.values()) if (!l.revoked) this.cut(l);
  }

  /** The final flush, second half: every upload chain done (stored and committed, or given up). */
  async drain(): Promise<void> {
    await Promise.all([...this.lanes.values()].map((l) => l.chain));
  }

  private lane(partition: number): Lane {
    let l = this.lanes.get(partition);
    if (!l) {
      l = {
        partition,
        open: undefined,
        nextOffset: undefined,
        queued: 0,
        queuedBytes: 0,
        chain: Promise.resolve(),
        revoked: false,
        paused: false,
        highWatermark: 0n,
        committed: -1n,
        started: false,
        prevSha: undefined,
        idlePointerAt: 0,
        idlePointerLsn: 0,
        storedAt: 0,
        queuedAt: 0,
      };
      this.lanes.set(partition, l);
    }
    return l;
  }

  private updateGauges(): void {
    m.pendingBytes.set(this.totalQueuedBytes);
    let open = 0;
    for (const l of this.lanes.values()) {
      open += l.open?.memoryBytes ?? 0;
      if (l.committed >= 0n) m.lag.set({ partition: String(l.partition) }, Number(l.highWatermark > l.committed ? l.highWatermark - l.committed : 0n));
    }
    m.openBytes.set(open);
  }

  /** Memory bound (G4): a partition holds at most two cut segments (one uploading, one waiting). */
  private overLimit(l: Lane): boolean {
    return l.queued >= 2 || this.totalQueuedBytes >= this.opts.maxPendingBytes;
  }

  private pause(l: Lane): void {
    if (l.paused) return;
    l.paused = true;
    this.consumer.pause(l.partition);
    this.opts.log.debug({ partition: l.partition, queued: l.queued, totalQueuedBytes: this.totalQueuedBytes }, 'pausing fetch: segments waiting for S3');
  }

  private resumeWhatCan(): void {
    if (this.stopping) return;
    for (const l of this.lanes.values()) {
      if (l.paused && !this.overLimit(l)) {
        l.paused = false;
        this.consumer.resume(l.partition);
      }
    }
  }

  private cut(l: Lane): void {
    const w = l.open;
    if (!w || w.count === 0) return;
    l.open = undefined;
    const seg = w.finish(this.opts.keyring);
    l.prevSha = seg.name.sha256;
    l.queued += 1;
    l.queuedBytes += seg.bytes.length;
    this.totalQueuedBytes += seg.bytes.length;
    const cutAt = Date.now();
    if (l.queued === 1) this.lastQueuedAt = l.queuedAt = cutAt;
    l.chain = l.chain.then(() => this.persist(l, seg, cutAt));
    this.updateGauges();
  }

  /** Stores one cut segment, moves the pointer, then commits the offsets (in that order: G1, G3). */
  private async persist(l: Lane, seg: FinishedSegment, cutAt: number): Promise<void> {
    try {
      if (l.revoked || this.fatal) return;
      const key = segmentKey(this.opts.root, seg.name);
      const t0 = Date.now();
      const result = await this.archive.storeSegment(key, seg.bytes, seg.name.sha256);
      const p = String(l.partition);
      m.uploadSeconds.observe((Date.now() - t0) / 1000);
      m.segments.inc({ partition: p });
      m.records.inc({ partition: p }, seg.manifest.count);
      m.storedBytes.inc({ partition: p }, seg.bytes.length);
      m.rawBytes.inc({ partition: p }, seg.rawBytes);
      this.storedSegments += 1;
      this.rawTotal += seg.rawBytes;
      this.storedTotal += seg.bytes.length;
      m.ratio.set(this.rawTotal / this.storedTotal);
      this.lastStoredAt = l.storedAt = Date.now();
      this.opts.log.debug({ key, result, count: seg.manifest.count, bytes: seg.bytes.length, watermark: seg.manifest.watermarkLsn }, 'segment stored');
      this.opts.onSegmentStored?.(seg, key, this.lastStoredAt);
      faultPoint('crash-after-upload');
      // Every earlier offset of this partition is stored: earlier segments went through this chain
      // before us, and offsets before where this owner started were committed, hence stored.
      await this.archive.advancePartitionState({
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
        await this.consumer.commit(l.partition, next);
        if (next > l.committed) l.committed = next;
        m.sealToCommitSeconds.observe((Date.now() - cutAt) / 1000);
        faultPoint('crash-after-commit');
      } catch (err) {
        // Harmless for G1: the records are stored; a later commit covers them, or the next owner
        // reads them again and writes duplicates that restore drops by identity.
        this.opts.log.warn(
          { err: toError(err).message, partition: l.partition, offset: String(next) },
          'offset commit failed; records are stored, will be re-read if no later commit succeeds',
        );
      }
    } catch (err) {
      if (this.opts.storeSignal.aborted) return;
      this.fail(toError(err));
    } finally {
      l.queued -= 1;
      l.queuedBytes -= seg.bytes.length;
      this.totalQueuedBytes -= seg.bytes.length;
      this.updateGauges();
      this.resumeWhatCan();
    }
  }

  private edge(): LaneEdgeContext {
    return { archive: this.archive, consumer: this.consumer, topic: this.opts.topic, generation: this.opts.generation, log: this.opts.log };
  }

  /** A hole in the lane's offsets: recorded as a gap marker (lane-start.ts), and the hash chain breaks there. */
  private async recordLaneGap(l: Lane, from: bigint, to: bigint, after: ReadonlyArray<{ value: Buffer | null }>): Promise<void> {
    await recordOffsetGap(this.edge(), l.partition, from, to, after);
    l.prevSha = undefined;
  }

  /** Where the lane continues, checked against the archive and Kafka (lane-start.ts). */
  private async startLane(l: Lane, messages: ReadonlyArray<{ offset: string; value: Buffer | null }>): Promise<void> {
    const r = await startLanePosition(this.edge(), l.partition, messages, { revoked: () => l.revoked, started: () => (l.started = true) });
    if (r?.kind === 'gap') l.prevSha = undefined;
    else if (r?.kind === 'continues') l.prevSha = r.prevSha;
  }

  /**
   * An idle lane's open segment holds only watermarks: move the partition pointer to its newest
   * watermark without storing it. Sound only when the held records follow the last stored offset
   * directly (pointer lastOffset + 1 = the held segment's first offset): then every record before
   * the watermark is stored, which is what the pointer promises (catalog.ts, G3). The held segment
   * is stored later (idle cut) or with the next changes; its offsets are committed only then.
   */
  private advanceIdle(l: Lane, now: number): void {
    const w = l.open!;
    if (w.watermarkLsn <= l.idlePointerLsn) return;
    l.idlePointerAt = now;
    const held = { lsn: w.watermarkLsn, time: w.watermarkTime, first: BigInt(w.firstOffset) };
    l.chain = l.chain.then(async () => {
      try {
        if (l.revoked || this.fatal) return;
        const st = await this.archive.readPartitionState(l.partition);
        if (!st || (st.epoch ?? 0) !== this.opts.generation.topicEpoch || !/^\d+$/.test(st.lastOffset ?? '') || BigInt(st.lastOffset) + 1n !== held.first) {
          // Not provable from the pointer (no segment stored yet in this epoch, or records between
          // that were not appended): store the held segment as before; the pointer then exists.
          if (l.open === w && !this.stopping) this.cut(l);
          return;
        }
        await this.archive.advancePartitionState({
          partition: l.partition,
          watermarkLsn: held.lsn,
          watermarkTime: held.time,
          lastOffset: st.lastOffset,
          lastKey: st.lastKey,
          epoch: st.epoch,
        });
        l.idlePointerLsn = held.lsn;
        // Progress of this lane only: while segments wait for S3 elsewhere it must not hide them.
        if (this.totalQueuedBytes === 0) this.lastStoredAt = Date.now();
      } catch (err) {
        // Only the pointer lagged: the next cut moves it.
        this.opts.log.debug({ err: toError(err).message, partition: l.partition }, 'idle pointer update failed');
      }
    });
  }
}
