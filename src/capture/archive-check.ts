// Capture start-up, archive side: the topic's partition count against archive.json's.

import type { ArchiveManifest } from '../archive/layout.js';
import { readArchiveManifest } from '../archive/catalog.js';
import { archiveRoot, type Config } from '../config/config.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { createStore } from '../s3/client.js';
import type { Logger } from '../util/log.js';

/** How long capture start-up waits for archive.json (the partition count check) before going on without it. */
const ARCHIVE_CHECK_TIMEOUT_MS = 15_000;
/** archive.json's partition count, once read (it does not change), per configuration. */
const archivePartitionsSeen = new WeakMap<Config, number>();

export interface ArchivePartitionsCheck {
  cfg: Config;
  log: Logger;
  signal: AbortSignal;
  topic: string;
  /** The topic's partition count. */
  partitions: number;
  /** Reads archive.json (null or undefined: there is none); by default from the configured S3 store. */
  readManifest?: (root: string) => Promise<Pick<ArchiveManifest, 'partitions'> | null | undefined>;
  /** Default ARCHIVE_CHECK_TIMEOUT_MS. */
  timeoutMs?: number;
}

/**
 * The topic must have the partition count the archive was set up with (archive.json, written
 * by setup). Kafka can add partitions (kafka-topics --alter --partitions) but the archive only
 * knows the ones it was set up for: records in an added partition would never be archived or
 * restored, and the restorable point (the minimum over the archive's partitions) would overstate.
 * Refused before anything is produced, non-retryable (exit 2). archive.json is read once per
 * process; S3 unreachable or no archive.json yet only warns: capture does not depend on S3.
 */
export async function checkArchivePartitions(c: ArchivePartitionsCheck): Promise<void> {
  const { cfg, log, topic, partitions } = c;
  const timeoutMs = c.timeoutMs ?? ARCHIVE_CHECK_TIMEOUT_MS;
  let expected = archivePartitionsSeen.get(cfg);
  if (expected === undefined) {
    const root = archiveRoot(cfg);
    try {
      const readManifest =
        c.readManifest ?? ((r: string) => readArchiveManifest(createStore(cfg, log, { signal: c.signal, maxElapsedMs: ARCHIVE_CHECK_TIMEOUT_MS }), r));
      // Bounded also when a request hangs (a paused S3): the retry budget only counts between attempts.
      const read = readManifest(root);
      read.catch(() => {});
      let timer: NodeJS.Timeout | undefined;
      const m = await Promise.race([
        read,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
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
  if (expected !== partitions) {
    throw new CdpError(
      ErrorCodes.SOURCE_NOT_READY,
      `Kafka topic ${topic} has ${partitions} partitions but the archive at s3://${cfg.s3.bucket}/${archiveRoot(cfg)} was set up for ${expected}: ` +
        `records in partitions the archive does not know would never be archived or restored. Kafka cannot remove partitions: ` +
        `to keep this archive, recreate topic ${topic} with ${expected} partitions; to use ${partitions}, set up a new archive ` +
        `(another kafka.topic and s3.prefix, kafka.partitions = ${partitions}) with \`cdp setup\`. The slot keeps the WAL meanwhile`,
      { details: { topic, topicPartitions: partitions, archivePartitions: expected } },
    );
  }
}
