import { createHash } from 'node:crypto';
import type { Admin } from 'kafkajs';
import type pg from 'pg';
import type { Config } from '../config/config.js';
import { sourceDatabase } from '../config/config.js';
import { CdpError, ErrorCodes, IntegrityError, toError } from '../errors.js';
import { getObject, listObjects, putOnce, type Store } from '../s3/client.js';
import { formatLsn, microsToIso, type Lsn } from '../util/lsn.js';
import { readPartitionStates, restorablePoint } from './catalog.js';
import { gapKey, gapsPrefix, generationKey, generationsPrefix, type GapRecord, type GenerationRecord } from './layout.js';

// Chain of custody (issue 13): the archive proves its own continuity, and a break in it is never
// silent.
//
// The stream that reaches the archive is (slot -> topic partition offsets). It breaks when
//  - Kafka deletes records before an archiver read them (retention shorter than an archiver outage,
//    an operator's deleteRecords): the archiver sees it, because it knows where each partition must
//    continue (the group's committed offset, and the partition's state pointer, which names the
//    last archived offset) and Kafka hands it a later offset;
//  - the topic is deleted and created again: offsets restart at 0, so the new records must never be
//    ordered among the old ones by offset;
//  - the slot is dropped or lost (failover, major upgrade) and created again: the changes committed
//    between the old slot's last confirmed position and the new slot's start are in no stream.
// The last two are seen by `cdp setup`, which is what recreates the slot or the topic.
//
// What is recorded:
//  - generations/<n>.json: setup starts a new stream generation whenever it finds the stream broken
//    under an existing archive; a recreated topic also starts a new topic epoch. Segments carry
//    (generation, epoch) in their manifest and the epoch in their key, so a partition's segments
//    sort by (epoch, offset). The archive group id carries the epoch too (".e<n>"): committed
//    offsets of a deleted topic must never position the reader in the new one. Archives written
//    before this have no generation object: generation 0, epoch 0, and their segments' keys and
//    manifests are read as such.
//  - gaps/<afterLsn>-<kind>-<id>.json: the break itself, written the moment it is seen and before
//    anything that follows it is stored. Transactions with commit LSN <= afterLsn are whole in the
//    archive; those in (afterLsn, untilLsn] may be missing. untilLsn is an upper bound of the
//    commit LSN of anything lost: for retention, the highest commit LSN in the first batch read
//    after the hole (capture produces a partition in commit order, so what was lost before it was
//    committed no later); for a recreated slot, the new slot's consistent point; for a recreated
//    topic, the source's WAL position at setup (the slot's confirmed position is at or before it).
//
// What is checked: restore refuses (exit 3, naming the gap) a replay from a base taken before the
// gap to a target after it, and restores targets after it from a base that covers it (base LSN >
// untilLsn and taken after detectedAt: both, so that neither a bound nor a clock alone decides).
// `status --check` exits 3 and `verify` reports a problem while a gap is not covered by any base;
// a covered gap stays listed (the points inside it are not restorable) without failing them.

/** The generation the archive is in now: the highest generation object, or 0 / epoch 0. */
export interface CurrentGeneration {
  generation: number;
  topicEpoch: number;
}

export async function readGenerations(store: Store, root: string): Promise<GenerationRecord[]> {
  const out: GenerationRecord[] = [];
  for await (const o of listObjects(store, generationsPrefix(root))) {
    if (!/\/generations\/\d{6}\.json$/.test(o.key)) continue;
    try {
      out.push(JSON.parse((await getObject(store, o.key)).toString('utf8')) as GenerationRecord);
    } catch (err) {
      throw new IntegrityError(`${o.key} is not a readable generation record (${toError(err).message})`, { cause: err, details: { key: o.key } });
    }
  }
  return out.sort((a, b) => a.generation - b.generation);
}

export async function currentGeneration(store: Store, root: string): Promise<CurrentGeneration> {
  const g = (await readGenerations(store, root)).at(-1);
  return g ? { generation: g.generation, topicEpoch: g.topicEpoch } : { generation: 0, topicEpoch: 0 };
}

/** Writes the next generation object (write-once; a concurrent setup gets the next number). */
export async function startGeneration(
  store: Store,
  root: string,
  rec: Omit<GenerationRecord, 'version' | 'generation' | 'createdAt'>,
): Promise<GenerationRecord> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const cur = await currentGeneration(store, root);
    const g: GenerationRecord = { version: 1, generation: cur.generation + 1, ...rec, createdAt: new Date().toISOString() };
    try {
      await putOnce(store, generationKey(root, g.generation), Buffer.from(JSON.stringify(g, null, 1) + '\n'), { contentType: 'application/json' });
      return g;
    } catch (err) {
      if (!(err instanceof CdpError && err.code === ErrorCodes.INTEGRITY)) throw err; // exists with other content: someone else took the number
    }
  }
  throw new IntegrityError(`cannot write the next generation object under ${generationsPrefix(root)}: another setup keeps writing one`);
}

/** The archive consumer group of a topic epoch: epoch 0 keeps the original id. */
export function archiveGroupId(cfg: Config, topicEpoch: number): string {
  const base = cfg.archive.groupId ?? `cdp-archive.${sourceDatabase(cfg)}`;
  return topicEpoch > 0 ? `${base}.e${topicEpoch}` : base;
}

export type StoredGap = GapRecord & { key: string };

export async function listGaps(store: Store, root: string): Promise<StoredGap[]> {
  const out: StoredGap[] = [];
  for await (const o of listObjects(store, gapsPrefix(root))) {
    if (!o.key.endsWith('.json')) continue;
    try {
      out.push({ ...(JSON.parse((await getObject(store, o.key)).toString('utf8')) as GapRecord), key: o.key });
    } catch (err) {
      // An unreadable gap marker is itself a break we cannot bound: treat it as covering everything.
      out.push({
        version: 1,
        kind: 'retention',
        generation: -1,
        topicEpoch: -1,
        afterLsn: 0,
        afterTime: 0,
        untilLsn: Number.MAX_SAFE_INTEGER,
        detectedAt: '',
        detectedAtMicros: Number.MAX_SAFE_INTEGER,
        detail: `unreadable gap marker (${toError(err).message})`,
        key: o.key,
      });
    }
  }
  return out.sort((a, b) => a.afterLsn - b.afterLsn);
}

/** Records a gap (write-once, before anything after it is stored). Returns its key. */
export async function recordGap(store: Store, root: string, gap: Omit<GapRecord, 'version' | 'detectedAt' | 'detectedAtMicros'>): Promise<StoredGap> {
  const now = Date.now();
  const rec: GapRecord = { version: 1, ...gap, detectedAt: new Date(now).toISOString(), detectedAtMicros: now * 1000 };
  const body = Buffer.from(JSON.stringify(rec, null, 1) + '\n');
  const where = gap.partition !== undefined ? `g${gap.generation}-e${gap.topicEpoch}-p${gap.partition}-${gap.fromOffset ?? ''}` : `g${gap.generation}`;
  const id = `${where}-${createHash('sha256').update(body).digest('hex').slice(0, 12)}`;
  const key = gapKey(root, gap.afterLsn, gap.kind, id);
  await putOnce(store, key, body, { contentType: 'application/json', metadata: { 'cdp-kind': 'gap' } });
  return { ...rec, key };
}

export interface BaseLike {
  lsn: Lsn;
  timeMicros: number;
}

/** A base covers a gap when it was taken after it: everything lost committed before the base. */
export function gapCoveredBy(gap: GapRecord, base: BaseLike & { synthetic?: { rootBase: { lsn: Lsn; timeMicros: number } } }): boolean {
  // A synthetic base (cdp compact) was made by replaying from its root source base: it covers
  // exactly what that base covers, so it never hides a gap recorded after it.
  const b = base.synthetic?.rootBase ?? base;
  return b.lsn > gap.untilLsn && b.timeMicros > gap.detectedAtMicros;
}

/** Gaps that no base covers: points after them are restorable from no base yet. */
export function uncoveredGaps<G extends GapRecord>(gaps: G[], bases: BaseLike[]): G[] {
  return gaps.filter((g) => !bases.some((b) => gapCoveredBy(g, b)));
}

/**
 * The gaps a replay from `base` up to `limit` would cross: not covered by the base, and the replay
 * reaches past afterLsn (or, for a time target, past afterTime; the replay guard below also checks
 * each transaction's LSN, since commit times are not strictly ordered with LSNs).
 */
export function gapsCrossed<G extends GapRecord>(gaps: G[], base: BaseLike, limit: { lsn: Lsn } | { time: number }): G[] {
  return gaps.filter((g) => !gapCoveredBy(g, base) && ('lsn' in limit ? limit.lsn > g.afterLsn : limit.time > g.afterTime));
}

export function describeGap(g: StoredGap | GapRecord): string {
  const where = g.partition !== undefined ? `partition ${g.partition} offsets ${g.fromOffset}..${g.toOffset} (topic epoch ${g.topicEpoch}) ` : '';
  const key = 'key' in g ? ` [${g.key}]` : '';
  return `${g.kind} gap ${where}after ${formatLsn(g.afterLsn)}${g.afterTime ? ` (${microsToIso(g.afterTime)})` : ''}, up to ${formatLsn(g.untilLsn)}, detected ${g.detectedAt}: ${g.detail}${key}`;
}

/** The exit-3 error for a replay that would cross a gap. */
export function gapCrossedError(gaps: StoredGap[], base: { lsnText: string }): IntegrityError {
  const g = gaps[0]!;
  return new IntegrityError(
    `the replay from base ${base.lsnText} to this target crosses a break in the archive: ${describeGap(g)}` +
      `${gaps.length > 1 ? ` (and ${gaps.length - 1} more)` : ''}. Transactions after ${formatLsn(g.afterLsn)} may be missing from the archive, so the restore would be silently incomplete. ` +
      `Restore to a point at or before ${formatLsn(g.afterLsn)}, or to a point after a base taken after the break (take one now with cdp basebackup). Nothing was written.`,
    { details: { gaps: gaps.map((x) => x.key) } },
  );
}

/**
 * `cdp setup` on an existing archive (archive.json present): when it had to create the slot or the
 * topic again, or finds the topic's offsets below what the archive holds (the topic was recreated
 * by hand), the stream is broken. Records the gap, then starts a new generation (a new topic epoch
 * when the topic is new). Called after the slot and topic exist, so that the gap's upper bound is
 * known: the new slot's consistent point, or the WAL position now (capture resumes a kept slot at
 * its confirmed position, which is before it). Returns the new generation, or undefined when the
 * stream continues.
 */
export async function recordSetupBreak(opts: {
  store: Store;
  root: string;
  cfg: Config;
  admin: Admin;
  client: pg.Client;
  topic: string;
  topicCreated: boolean;
  slotCreated: boolean;
  slotLsn?: Lsn;
}): Promise<{ generation: GenerationRecord; gap: StoredGap | undefined } | undefined> {
  const { store, root, cfg, admin, client, topic } = opts;
  const cur = await currentGeneration(store, root);
  const states = await readPartitionStates(store, root);
  let backwards: string | undefined;
  if (!opts.topicCreated) {
    const offsets = await admin.fetchTopicOffsets(topic);
    for (const st of states) {
      if ((st.epoch ?? 0) !== cur.topicEpoch || !/^\d+$/.test(st.lastOffset ?? '')) continue;
      const high = offsets.find((o) => o.partition === st.partition)?.high;
      if (high !== undefined && BigInt(high) <= BigInt(st.lastOffset)) {
        backwards = `partition ${st.partition} ends at offset ${high} but the archive holds offsets up to ${st.lastOffset}`;
        break;
      }
    }
  }
  if (!opts.topicCreated && !opts.slotCreated && !backwards) return undefined;
  const wal = Number(BigInt((await client.query<{ l: string }>(`SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::text AS l`)).rows[0]!.l));
  const untilLsn = Math.max(wal, opts.slotLsn ?? 0);
  const point = await restorablePoint(store, root);
  const newEpoch = opts.topicCreated || backwards !== undefined;
  const kind: GapRecord['kind'] = opts.slotCreated ? 'slot-recreated' : opts.topicCreated ? 'topic-recreated' : 'offsets-backwards';
  const what = [
    opts.slotCreated
      ? `replication slot ${cfg.source.slot} was missing and created again at ${formatLsn(opts.slotLsn ?? wal)} (changes committed while no slot existed are in no stream)`
      : '',
    opts.topicCreated ? `Kafka topic ${topic} was missing and created again (records it held that were not archived are gone; offsets restart at 0)` : '',
    backwards ? `Kafka topic ${topic} was recreated behind the archive (${backwards})` : '',
  ]
    .filter(Boolean)
    .join('; ');
  let gap: StoredGap | undefined;
  const afterLsn = point?.lsn ?? 0;
  if (afterLsn < untilLsn) {
    gap = await recordGap(store, root, {
      kind,
      generation: cur.generation + 1,
      topicEpoch: cur.topicEpoch + (newEpoch ? 1 : 0),
      afterLsn,
      afterTime: point?.time ?? 0,
      untilLsn,
      detail: `cdp setup found the stream broken: ${what}; the archive is whole up to its restorable point ${formatLsn(afterLsn)}`,
    });
  }
  const generation = await startGeneration(store, root, {
    topicEpoch: cur.topicEpoch + (newEpoch ? 1 : 0),
    reason: what,
    slot: cfg.source.slot,
    topic,
    startLsn: untilLsn,
  });
  return { generation, gap };
}
