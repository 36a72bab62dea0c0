import { setMaxListeners } from 'node:events';
import type { Admin, Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import type { CommandContext } from '../context.js';
import { archiveRoot, topicName, type Config } from '../config/config.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { createKafka } from '../kafka/client.js';
import type { Logger } from '../util/log.js';
import { gauge, registerHealth } from '../util/metrics.js';
import { withRetry } from '../util/retry.js';
import { createStore, type Store } from '../s3/client.js';
import { advancePartitionState, readArchiveManifest, readPartitionState, restorablePoint } from './catalog.js';
import { archiveGroupId, currentGeneration, recordGap, type CurrentGeneration } from './chain.js';
import { loadKeyring, type Keyring } from './crypto.js';
import { ArchiveLanes, type CutPolicy, type LaneArchive, type LaneConsumer, type LanesOptions } from './lanes.js';
import type { FinishedSegment } from './segment.js';
import { storeSegment } from './upload.js';

// `cdp archive` (DESIGN.md sections 1, 2 and 4): a member of a Kafka consumer group that turns each
// assigned partition into a sequence of segment files on S3. The per-partition work (segments,
// cuts, the upload chain and its order: G1) is src/archive/lanes.ts; this file is the consumer
// adapter around it: the kafkajs group, the timers, the health check and the clean stop.
//
// kafkajs notes (kafkajs 2.2.4 source, src/consumer/runner.js): with autoCommit false nothing ever
// commits behind our back; eachBatchAutoResolve is off because the resolved offset is also the
// next FETCH position: we resolve exactly what we appended, so a batch cut short by back-pressure
// (pause) is fetched again from the first record we did not take.

const m = {
  pointAge: gauge('cdp_archive_restorable_point_age_seconds', 'Now minus the commit time of the restorable point (the RPO)'),
  pointLsn: gauge('cdp_archive_restorable_point_lsn', 'Restorable point LSN (as a number)'),
};

export interface ArchiverHandle {
  /** Resolves after a clean stop (signal: flush, store, commit); rejects on a fatal error. */
  done: Promise<void>;
}

export interface ArchiverOptions {
  /** Kafka client id suffix (tests run several archivers in one process). */
  clientSuffix?: string;
  /** Called after each segment is stored, before its offsets are committed (benchmarks, tests). */
  onSegmentStored?: (seg: FinishedSegment, key: string, storedAt: number) => void;
  /** When a segment is cut; default cut-policy.ts with the archive.* limits. */
  cutPolicy?: CutPolicy;
}

/** The lanes' archive: segments, state pointers and gap markers of `root` in `store`. */
export function s3LaneArchive(store: Store, root: string): LaneArchive {
  return {
    storeSegment: (key, bytes, sha256) => storeSegment(store, key, bytes, sha256),
    readPartitionState: (partition) => readPartitionState(store, root, partition),
    advancePartitionState: (next) => advancePartitionState(store, root, next),
    recordGap: (gap) => recordGap(store, root, gap),
  };
}

/**
 * The lanes' consumer: commits, pause and resume through the kafkajs consumer; the lane-start
 * positions through an admin client, connected on first use and kept connected.
 */
export function kafkaLaneConsumer(
  consumer: Pick<Consumer, 'commitOffsets' | 'pause' | 'resume'>,
  admin: Pick<Admin, 'connect' | 'fetchOffsets' | 'fetchTopicOffsets'>,
  topic: string,
  groupId: string,
): LaneConsumer {
  let connected: Promise<void> | undefined;
  return {
    commit: async (partition, offset) => {
      await consumer.commitOffsets([{ topic, partition, offset: String(offset) }]);
    },
    pause: (partition) => consumer.pause([{ topic, partitions: [partition] }]),
    resume: (partition) => consumer.resume([{ topic, partitions: [partition] }]),
    position: async (partition) => {
      try {
        connected ??= admin.connect();
        await connected;
        const [committedList, offsets] = await Promise.all([admin.fetchOffsets({ groupId, topics: [topic] }), admin.fetchTopicOffsets(topic)]);
        const committed = BigInt(committedList[0]?.partitions.find((x) => x.partition === partition)?.offset ?? '-1');
        const po = offsets.find((x) => x.partition === partition);
        return { committed, low: po?.low, high: po?.high };
      } catch (err) {
        connected = undefined;
        throw restartableError(err);
      }
    },
  };
}

/**
 * A lane-start read that failed while a broker restarts: the admin client's own retries can run out
 * first (no group coordinator yet), and kafkajs takes its KafkaJSNonRetriableError, thrown from
 * eachBatch, for a reason to stop the consumer for good, and `cdp run` with it. Marked retriable,
 * with no cause kafkajs would follow, it makes kafkajs restart the consumer, which rejoins the
 * group; no offset was committed or resolved for the batch, so it is fetched again.
 */
export function restartableError(err: unknown): Error {
  const e = new Error(`reading the archive group's committed offsets failed (kafkajs restarts the consumer): ${toError(err).message}`);
  return Object.assign(e, { retriable: true });
}

/**
 * Wires the lanes to a kafkajs consumer's events: each fetched batch goes to its lane; a group join
 * drops every lane (lanes.ts, dropAll: kafkajs has no revocation callback, GROUP_JOIN carries the
 * new assignment); a crash kafkajs does not restart is fatal. Returns the eachBatch handler.
 */
export function attachConsumerGroup(
  consumer: Pick<Consumer, 'on' | 'events'>,
  lanes: ArchiveLanes,
  opts: { topic: string; groupId: string; log: CommandContext['log'] },
): (payload: EachBatchPayload) => Promise<void> {
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    const assigned = new Set(payload.memberAssignment[opts.topic] ?? []);
    lanes.dropAll(assigned);
    opts.log.info({ groupId: opts.groupId, assigned: [...assigned].sort((a, b) => a - b) }, 'joined the archive group');
  });
  consumer.on(consumer.events.CRASH, ({ payload }) => {
    if (!payload.restart) lanes.fail(new CdpError(ErrorCodes.KAFKA, `Kafka consumer stopped: ${payload.error.message}`, { cause: payload.error }));
    else opts.log.warn({ err: payload.error.message }, 'Kafka consumer crashed; kafkajs restarts it');
  });
  // eslint-disable-next-line @typescript-eslint/unbound-method -- kafkajs's payload functions are closures, typed as methods
  return ({ batch, resolveOffset, heartbeat, isRunning, isStale }) =>
    lanes.handleBatch(batch, { resolveOffset, heartbeat, running: () => isRunning() && !isStale() });
}

/** A Kafka client error of a broker going away or coming back (connection refused, reset, closed). */
function brokerRestarting(e: Error): boolean {
  return /ECONNREFUSED|ECONNRESET|ETIMEDOUT|Connection error|closed/i.test(e.message);
}

/** The number of partitions of `topic` (KAFKA when its metadata cannot be read, SOURCE_NOT_READY when it has none). */
async function topicPartitionCount(kafka: Kafka, topic: string, log: Logger, signal?: AbortSignal): Promise<number> {
  const admin = kafka.admin();
  let partitionCount: number;
  try {
    // The CLI's start-up check has already reached the brokers (a wrong address fails there, in
    // seconds); a broker that goes away now is restarting: wait for it (up to 3 minutes) rather
    // than stop `cdp run`. Other errors (no such topic) stop at once.
    partitionCount = await withRetry(
      async () => {
        await admin.connect();
        const meta = await admin.fetchTopicMetadata({ topics: [topic] });
        return meta.topics[0]?.partitions.length ?? 0;
      },
      {
        what: `reading the metadata of topic ${topic}`,
        log,
        signal,
        maxElapsedMs: 180_000,
        retryable: brokerRestarting,
      },
    );
  } catch (err) {
    throw new CdpError(
      ErrorCodes.KAFKA,
      `cannot read metadata of topic ${topic} (${toError(err).message}): check kafka.brokers / CDP_KAFKA_BROKERS, and run cdp setup to create the topic`,
      { cause: err, canRetry: true },
    );
  } finally {
    await admin.disconnect().catch(() => {});
  }
  if (partitionCount === 0) throw new CdpError(ErrorCodes.SOURCE_NOT_READY, `topic ${topic} has no partitions: run cdp setup`);
  return partitionCount;
}

/** The archive group's member, manual commits only (the lanes commit after S3: G1). */
function archiveConsumer(kafka: Kafka, cfg: Config, groupId: string): Consumer {
  // Session timeout: how long the group waits for a member that stopped heartbeating before its
  // partitions move. After a broker crash the old membership lingers that long, so it is the pause
  // in archiving (and in the restorable point) before the group settles: 30 s (kafkajs's default)
  // measured as a ~25 s catch-up in the restarts test. eachBatch never waits on S3 (uploads run
  // beside it), so heartbeats keep flowing every fetch (maxWaitTimeInMs) and 10 s is safe; the
  // broker's floor is group.min.session.timeout.ms (6 s by default).
  return kafka.consumer({
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
}

/** The lanes' options from the archive.* configuration (all but onFatal, which the archiver owns). */
function lanesOptions(
  cfg: Config,
  base: Pick<LanesOptions, 'root' | 'topic' | 'log' | 'keyring' | 'generation' | 'storeSignal'>,
  opts: ArchiverOptions,
): Omit<LanesOptions, 'onFatal'> {
  const maxBytes = cfg.archive.segmentMaxBytes;
  return {
    ...base,
    codec: cfg.archive.codec,
    zstdLevel: cfg.archive.zstdLevel,
    limits: { maxBytes, maxAgeMs: cfg.archive.segmentMaxAgeMs, minAgeMs: cfg.archive.segmentMinAgeMs, idleMaxAgeMs: cfg.archive.idleSegmentMaxAgeMs },
    cutPolicy: opts.cutPolicy,
    idlePointerIntervalMs: cfg.archive.idlePointerIntervalMs,
    // Memory bound (G4): cut segments waiting for S3 may hold at most this many bytes in total, and
    // a partition at most two (one uploading, one waiting); beyond that its fetching is paused.
    maxPendingBytes: 2 * maxBytes,
    onSegmentStored: opts.onSegmentStored,
  };
}

/** The restorable point for /metrics (status computes the same from S3), every 10 s. */
function startPointTimer(store: Store, root: string, partitionCount: number, log: Logger): NodeJS.Timeout {
  let pointPartitions = partitionCount;
  const timer = setInterval(() => {
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
  timer.unref();
  return timer;
}

/**
 * A new generation started by cdp setup while we run, checked every 5 s: a slot-only break keeps
 * the topic (the offsets continue), and what we store next is stamped with the new generation
 * (`gen` is updated in place); a new topic epoch means our group and offsets belong to a deleted
 * topic: stop (exit 1) and let the supervisor start us again in the new epoch.
 */
function startGenerationTimer(store: Store, root: string, gen: CurrentGeneration, lanes: ArchiveLanes, log: Logger): NodeJS.Timeout {
  const timer = setInterval(() => {
    void currentGeneration(store, root).then(
      (g) => {
        if (g.topicEpoch !== gen.topicEpoch) {
          lanes.fail(
            new CdpError(ErrorCodes.KAFKA, `cdp setup started topic epoch ${g.topicEpoch} (the archiver runs epoch ${gen.topicEpoch}): restart the archiver`),
          );
        } else if (g.generation !== gen.generation) {
          log.info({ from: gen.generation, to: g.generation }, 'archive: new stream generation');
          gen.generation = g.generation;
        }
      },
      (err: unknown) => log.debug({ err: toError(err).message }, 'cannot read the stream generation'),
    );
  }, 5_000);
  timer.unref();
  return timer;
}

/** What the clean stop works on. */
interface RunningArchiver {
  lanes: ArchiveLanes;
  consumer: Consumer;
  chainAdmin: Admin;
  storeAbort: AbortController;
  topic: string;
  log: Logger;
  timers: NodeJS.Timeout[];
}

/** The clean stop: stop fetching, let the batch being handled finish, then cut, store and commit everything. */
async function flushAndStop(a: RunningArchiver): Promise<void> {
  a.lanes.beginStop();
  for (const t of a.timers) clearInterval(t);
  try {
    a.consumer.pause([{ topic: a.topic }]);
    await a.lanes.cutAll();
    const giveUp = setTimeout(() => a.storeAbort.abort(new CdpError(ErrorCodes.SHUTDOWN, 'final flush timed out')), 45_000);
    await a.lanes.drain();
    clearTimeout(giveUp);
    a.log.info({ storedSegments: a.lanes.stored }, 'archiver stopped after storing and committing its segments');
  } finally {
    await a.consumer.disconnect().catch((err: unknown) => a.log.warn({ err: toError(err).message }, 'Kafka disconnect failed'));
    await a.chainAdmin.disconnect().catch(() => {});
  }
}

/** Joins the group and starts fetching: manual commits, resolved offsets only (see the top of this file). */
async function runConsumer(
  consumer: Consumer,
  eachBatch: (payload: EachBatchPayload) => Promise<void>,
  facts: { topic: string } & Record<string, unknown>,
  log: Logger,
  signal?: AbortSignal,
): Promise<void> {
  // A broker killed while the group member connects (ECONNRESET from connect or subscribe: the
  // restarts test, in CI) is waited out like the metadata read above, up to 3 minutes; run() is
  // called once (kafkajs ignores a second call), and from then on kafkajs restarts the member itself.
  try {
    await withRetry(
      async () => {
        await consumer.connect();
        await consumer.subscribe({ topics: [facts.topic], fromBeginning: true });
      },
      { what: `joining the archive group on topic ${facts.topic}`, log, signal, maxElapsedMs: 180_000, retryable: brokerRestarting },
    );
  } catch (err) {
    if (err instanceof CdpError) throw err;
    throw new CdpError(ErrorCodes.KAFKA, `cannot join the archive group on topic ${facts.topic}: ${toError(err).message}`, { cause: err, canRetry: true });
  }
  await consumer.run({ autoCommit: false, eachBatchAutoResolve: false, partitionsConsumedConcurrently: 1, eachBatch });
  log.info(facts, 'archiver running');
}

/**
 * The archive's store. It keeps retrying through S3 outages until its controller aborts: NOT
 * ctx.signal, since on SIGTERM we still want the final flush to reach S3. It is aborted when the
 * flush gives up, or on a fatal error.
 */
function flushableStore(cfg: Config, log: Logger): { store: Store; storeAbort: AbortController } {
  const storeAbort = new AbortController();
  // Every in-flight S3 call and retry sleep listens on it: one per partition upload chain, each
  // with a few concurrent calls; Node warns past 10 listeners by default.
  setMaxListeners(1000, storeAbort.signal);
  return { store: createStore(cfg, log, { signal: storeAbort.signal }), storeAbort };
}

/** The archiver's `done`, with the functions that settle it. */
function settleable(): { done: Promise<void>; resolveDone: () => void; rejectDone: (err: Error) => void } {
  let resolveDone!: () => void;
  let rejectDone!: (err: Error) => void;
  const done = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  return { done, resolveDone, rejectDone };
}

export async function startArchiver(ctx: CommandContext, opts: ArchiverOptions = {}): Promise<ArchiverHandle> {
  const { cfg } = ctx;
  const log = ctx.log.child({ component: 'archive' });
  const topic = topicName(cfg);
  const root = archiveRoot(cfg);
  const keyring: Keyring | undefined = loadKeyring(cfg);

  const { store, storeAbort } = flushableStore(cfg, log);

  const kafka = createKafka(cfg, log, opts.clientSuffix ?? 'archive');
  const partitionCount = await topicPartitionCount(kafka, topic, log, ctx.signal);

  // The stream generation (chain.ts): segments are stamped with it, and the group id carries the
  // topic epoch, so that a recreated topic is read from its own offset 0, never from the committed
  // offsets of the deleted one.
  const gen: CurrentGeneration = await currentGeneration(store, root);
  const groupId = archiveGroupId(cfg, gen.topicEpoch);
  // Kept connected for the lane-start checks (committed offset, low/high watermarks).
  const chainAdmin = kafka.admin();
  const consumer = archiveConsumer(kafka, cfg, groupId);

  const { done, resolveDone, rejectDone } = settleable();

  const lanes = new ArchiveLanes(s3LaneArchive(store, root), kafkaLaneConsumer(consumer, chainAdmin, topic, groupId), {
    ...lanesOptions(cfg, { root, topic, log, keyring, generation: gen, storeSignal: storeAbort.signal }, opts),
    onFatal: (err) => {
      log.error({ err }, 'archiver failed');
      storeAbort.abort(err);
      clearInterval(genTimer);
      void chainAdmin.disconnect().catch(() => {});
      void consumer
        .disconnect()
        .catch(() => {})
        .finally(() => rejectDone(err));
    },
  });
  const eachBatch = attachConsumerGroup(consumer, lanes, { topic, groupId, log });

  // The cut timer: age cuts and idle pointers (lanes.ts, tick).
  const maxAge = cfg.archive.segmentMaxAgeMs;
  const ageTimer = setInterval(() => lanes.tick(), Math.max(50, Math.min(1_000, Math.floor(Math.min(maxAge, cfg.archive.segmentMinAgeMs * 2) / 4))));
  const pointTimer = startPointTimer(store, root, partitionCount, log);
  const genTimer = startGenerationTimer(store, root, gen, lanes, log);

  // Not ok while segments wait for S3 and nothing was stored for two minutes (an S3 outage): the
  // watchdog (ops/watchdog.ts) ends the daemon if that lasts watchdog.stallSeconds.
  registerHealth('archive', () => lanes.health());

  await runConsumer(
    consumer,
    eachBatch,
    {
      topic,
      groupId,
      root,
      partitions: partitionCount,
      segmentMaxBytes: cfg.archive.segmentMaxBytes,
      segmentMaxAgeMs: maxAge,
      codec: cfg.archive.codec,
      encrypted: Boolean(keyring),
    },
    log,
    ctx.signal,
  );

  const running: RunningArchiver = { lanes, consumer, chainAdmin, storeAbort, topic, log, timers: [ageTimer, pointTimer, genTimer] };
  const onAbort = () => {
    if (lanes.failure) return;
    flushAndStop(running).then(
      () => (lanes.failure ? rejectDone(lanes.failure) : resolveDone()),
      (err: unknown) => rejectDone(toError(err)),
    );
  };
  if (ctx.signal.aborted) onAbort();
  else ctx.signal.addEventListener('abort', onAbort, { once: true });
  return { done };
}
