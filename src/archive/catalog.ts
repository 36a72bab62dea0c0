import { CdpError, ErrorCodes, toError } from '../errors.js';
import { getObjectIfExists, listObjects, putMutable, type Store } from '../s3/client.js';
import {
  archiveManifestKey,
  parseSegmentKey,
  segmentsPrefix,
  segmentsStartAfter,
  statePointerKey,
  type ArchiveManifest,
  type PartitionState,
  type SegmentName,
} from './layout.js';

// The catalog is the object names themselves (layout.ts): a segment key holds its partition, max
// commit LSN, offsets and SHA-256, and keys sort by max LSN, so ListObjectsV2 with StartAfter finds
// the segments a restore needs without listing history before its base (plan for 10^7 segments).
// The per-partition state pointers summarise progress so that status and restore learn the
// restorable point with one small GET per partition.

export type ListedSegment = SegmentName & { key: string; size: number };

function compareOffsets(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Every segment of a partition whose max commit LSN is >= fromLsn, sorted by topic epoch, then
 * firstOffset, then lastOffset (offsets restart at 0 in a recreated topic: a new epoch, chain.ts,
 * whose records all follow the older epoch's in the stream). Key order is by max LSN, which is not offset order once a capture restart has
 * replayed older LSNs after newer ones; consumers that need the partition's order get it here.
 * The listing from fromLsn is materialised (names only: ~200 bytes per segment) to sort it.
 */
export async function* listSegments(store: Store, root: string, partition: number, fromLsn = 0): AsyncGenerator<ListedSegment> {
  const found: ListedSegment[] = [];
  for await (const o of listObjects(store, segmentsPrefix(root, partition), segmentsStartAfter(root, partition, fromLsn))) {
    const name = parseSegmentKey(o.key);
    if (!name) {
      store.log.warn({ key: o.key }, 'ignoring an object under segments/ whose name is not a segment key');
      continue;
    }
    if (name.maxLsn < fromLsn) continue;
    found.push({ ...name, key: o.key, size: o.size });
  }
  found.sort((a, b) => a.epoch - b.epoch || compareOffsets(a.firstOffset, b.firstOffset) || compareOffsets(a.lastOffset, b.lastOffset));
  yield* found;
}

function parseJson<T>(bytes: Buffer, key: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch (err) {
    throw new CdpError(
      ErrorCodes.INTEGRITY,
      `${key} is not valid JSON (${toError(err).message}); it is a small pointer object: delete it and let the archiver rewrite it`,
      { cause: err, details: { key } },
    );
  }
}

export async function readArchiveManifest(store: Store, root: string): Promise<ArchiveManifest | undefined> {
  const key = archiveManifestKey(root);
  const bytes = await getObjectIfExists(store, key);
  return bytes ? parseJson<ArchiveManifest>(bytes, key) : undefined;
}

export async function readPartitionState(store: Store, root: string, partition: number): Promise<PartitionState | undefined> {
  const key = statePointerKey(root, partition);
  const bytes = await getObjectIfExists(store, key);
  return bytes ? parseJson<PartitionState>(bytes, key) : undefined;
}

/** Every state/pNNNN.json pointer present, by partition. */
export async function readPartitionStates(store: Store, root: string): Promise<PartitionState[]> {
  const out: PartitionState[] = [];
  for await (const o of listObjects(store, `${root}/state/`)) {
    if (!/\/state\/p\d{4}\.json$/.test(o.key)) continue;
    const bytes = await getObjectIfExists(store, o.key);
    if (bytes) out.push(parseJson<PartitionState>(bytes, o.key));
  }
  return out.sort((a, b) => a.partition - b.partition);
}

/**
 * The restorable point (G3): the minimum over ALL partitions of the archived watermark. Every
 * transaction with commit LSN <= that minimum has every record stored in every partition
 * (a watermark W in partition p follows, in p, every record of transactions <= W, and a pointer
 * only moves to W once everything before W's offset is stored). Undefined while any partition has
 * no archived watermark yet, or when archive.json (written by setup) does not exist and no
 * partition count is given.
 */
export async function restorablePoint(
  store: Store,
  root: string,
  opts: { partitions?: number } = {},
): Promise<{ lsn: number; time: number; partitions: PartitionState[] } | undefined> {
  const partitions = opts.partitions ?? (await readArchiveManifest(store, root))?.partitions;
  if (!partitions) return undefined;
  const states = await Promise.all(Array.from({ length: partitions }, (_, p) => readPartitionState(store, root, p)));
  if (states.some((s) => !s || !(s.watermarkLsn > 0))) return undefined;
  const present = states as PartitionState[];
  let min = present[0]!;
  for (const s of present) if (s.watermarkLsn < min.watermarkLsn) min = s;
  return { lsn: min.watermarkLsn, time: min.watermarkTime, partitions: present };
}

/**
 * Moves a partition's pointer forward after a segment is stored (the G3 pointer rule). The caller
 * guarantees the segment is stored and every earlier offset of the partition too. Read-max-write:
 * a pointer never moves back here; two owners racing during a rebalance can at worst overwrite a
 * newer value with an older true one (conservative), never write a watermark nobody stored.
 */
export async function advancePartitionState(store: Store, root: string, next: Omit<PartitionState, 'updatedAt'>): Promise<PartitionState> {
  const current = await readPartitionState(store, root, next.partition);
  // Offsets compare only within one topic epoch; a newer epoch's offsets replace an older one's
  // (the watermark, an LSN, keeps growing across epochs).
  const curEpoch = current?.epoch ?? 0;
  const nextEpoch = next.epoch ?? 0;
  const keepOffset =
    current !== undefined && (curEpoch > nextEpoch || (curEpoch === nextEpoch && BigInt(current.lastOffset || '0') >= BigInt(next.lastOffset)));
  if (current && current.watermarkLsn >= next.watermarkLsn && keepOffset) return current;
  const state: PartitionState = {
    partition: next.partition,
    watermarkLsn: Math.max(current?.watermarkLsn ?? 0, next.watermarkLsn),
    watermarkTime: (current?.watermarkLsn ?? 0) > next.watermarkLsn ? current!.watermarkTime : next.watermarkTime,
    lastOffset: keepOffset ? current.lastOffset : next.lastOffset,
    lastKey: keepOffset ? current.lastKey : next.lastKey,
    updatedAt: new Date().toISOString(),
  };
  const epoch = keepOffset ? curEpoch : nextEpoch;
  if (epoch > 0) state.epoch = epoch;
  await putMutable(store, statePointerKey(root, next.partition), Buffer.from(JSON.stringify(state, null, 1)));
  return state;
}
