// Setup, archive: the archive manifest (archive.json) checked against the configuration, written
// when missing, and the chain-of-custody record of a slot or topic created again under it.

import { recordSetupBreak } from '../archive/chain.js';
import { archiveManifestKey, type ArchiveManifest } from '../archive/layout.js';
import { archiveRoot, type Config } from '../config/config.js';
import { toError } from '../errors.js';
import { checkBucket, getObjectIfExists, putOnce, type Store } from '../s3/client.js';
import type { Logger } from '../util/log.js';
import type { Findings } from './setup-findings.js';

export interface ArchiveState {
  manifestExists: boolean;
}

export async function checkArchive(store: Store, cfg: Config, topic: string, database: string, f: Findings): Promise<ArchiveState> {
  await checkBucket(store);
  const key = archiveManifestKey(archiveRoot(cfg));
  const body = await getObjectIfExists(store, key);
  if (!body) return { manifestExists: false };
  let m: ArchiveManifest;
  try {
    m = JSON.parse(body.toString('utf8')) as ArchiveManifest;
  } catch (err) {
    f.problems.push(`s3://${cfg.s3.bucket}/${key} is not valid JSON (${toError(err).message}): inspect it; the archive root may belong to something else`);
    return { manifestExists: true };
  }
  if (m.topic !== topic || m.partitions !== cfg.kafka.partitions || m.database !== database) {
    f.problems.push(
      `the archive at s3://${cfg.s3.bucket}/${archiveRoot(cfg)} was set up for topic ${m.topic} with ${m.partitions} partitions (database ${m.database}), not topic ${topic} with ${cfg.kafka.partitions}: use the same kafka.topic / kafka.partitions, or another s3.prefix`,
    );
  }
  return { manifestExists: true };
}

/** archive.json for a new archive: the database, the source system, the topic and its partitions. */
export async function writeArchiveManifest(store: Store, cfg: Config, database: string, systemId: string, topic: string, log: Logger): Promise<void> {
  const manifest: ArchiveManifest = {
    version: 1,
    database,
    systemId,
    topic,
    partitions: cfg.kafka.partitions,
    createdAt: new Date().toISOString(),
  };
  await putOnce(store, archiveManifestKey(archiveRoot(cfg)), Buffer.from(JSON.stringify(manifest, null, 2) + '\n'), { contentType: 'application/json' });
  log.info({ key: archiveManifestKey(archiveRoot(cfg)) }, 'setup: archive manifest written');
}

/** What recordSetupBreak needs (the archive root comes from cfg): what setup created, with which connections. */
export type CreatedUnderArchive = Omit<Parameters<typeof recordSetupBreak>[0], 'root'>;

/**
 * Chain of custody (archive/chain.ts): a slot or topic created again under an existing archive
 * is a break in the stream, recorded before capture can write into it; if recording fails, the
 * new slot goes again, so that the next setup sees (and records) the same break.
 */
export async function recordBreak(c: CreatedUnderArchive, log: Logger): Promise<void> {
  const { cfg, client } = c;
  try {
    const brk = await recordSetupBreak({ ...c, root: archiveRoot(cfg) });
    if (brk)
      log.warn(
        { generation: brk.generation.generation, topicEpoch: brk.generation.topicEpoch, gap: brk.gap?.key },
        `setup: the stream was broken (${brk.generation.reason}): gap recorded, new stream generation started; restores across the break are refused, take a base after it`,
      );
  } catch (err) {
    if (c.slotCreated) await client.query('SELECT pg_catalog.pg_drop_replication_slot($1)', [cfg.source.slot]).catch(() => {});
    throw err;
  }
}
