import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pgConnection } from '../pg/tls.js';
import type { CommandContext } from '../context.js';
import { archiveRoot } from '../config/config.js';
import { toError } from '../errors.js';
import { listSegments, readArchiveManifest, readPartitionState, type ListedSegment } from '../archive/catalog.js';
import { describeGap, gapCoveredBy, listGaps, type StoredGap } from '../archive/chain.js';
import { loadKeyring, type Keyring } from '../archive/crypto.js';
import { fetchSegment } from '../archive/segment.js';
import { createStore, missingBucketError, type Store } from '../s3/client.js';
import { scanBaseManifests } from '../base/manifest.js';
import { checkBase } from '../restore/base-restore.js';

// `cdp verify`: reads every stored object back and checks it against its recorded SHA-256 (G5),
// decodes every segment, and checks that each partition's segments cover a contiguous run of
// offsets (a hole would mean changes that were committed in Kafka but never stored). --deep also
// restores the latest point into a scratch database. The CLI exits 3 when anything is wrong.

export interface VerifyProblem {
  what: string;
  problem: string;
}

export interface VerifyBreak {
  key: string;
  kind: string;
  covered: boolean;
  description: string;
}

/** A synthetic base folder without manifest (a compaction that died): never used, reported apart from problems. */
export interface IncompleteBase {
  folder: string;
  objects: number;
  note: string;
}

/** What one pass over the archive found (runVerify adds the --deep test restore). */
export interface VerifyResult {
  segments: number;
  bases: number;
  syntheticBases: number;
  problems: VerifyProblem[];
  breaks: VerifyBreak[];
  incompleteBases: IncompleteBase[];
}

export async function verifyArchive(ctx: CommandContext): Promise<VerifyResult> {
  const { cfg, log } = ctx;
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 60_000 });
  const root = archiveRoot(cfg);
  const keyring = loadKeyring(cfg);
  const problems: VerifyProblem[] = [];
  const manifest = await readArchiveManifest(store, root);
  if (!manifest) {
    const problem = (await missingBucketError(store))?.message ?? 'no archive.json: run cdp setup';
    return { segments: 0, bases: 0, syntheticBases: 0, problems: [{ what: root, problem }], breaks: [], incompleteBases: [] };
  }
  const archive: Archive = { store, root, keyring, gaps: await listGaps(store, root), problems };
  let segments = 0;
  for (let p = 0; p < manifest.partitions; p++) segments += await verifyPartition(archive, p);
  const bases = await verifyBases(archive);
  const incompleteBases = await listIncompleteBases(store, root);
  // A synthetic base covers a break only when its root source base does (gapCoveredBy): it never
  // hides one, and the segment checks above do not consult bases at all.
  const breaks: VerifyBreak[] = archive.gaps.map((g) => ({
    key: g.key,
    kind: g.kind,
    covered: bases.some((b) => gapCoveredBy(g, b)),
    description: describeGap(g),
  }));
  for (const b of breaks) {
    if (!b.covered)
      problems.push({
        what: b.key,
        problem: `break in the chain of custody that no base covers (points after it are not restorable until a base is taken): ${b.description}`,
      });
  }
  return { segments, bases: bases.length, syntheticBases: bases.filter((b) => b.synthetic).length, problems, breaks, incompleteBases };
}

/** The archive under check, and the list its problems are added to. */
interface Archive {
  store: Store;
  root: string;
  keyring: Keyring | undefined;
  gaps: StoredGap[];
  problems: VerifyProblem[];
}

/**
 * Chain of custody of one partition (archive/chain.ts): offsets are continuous within each topic
 * epoch, except where a recorded gap says Kafka lost them (reported as a break, not as a missing
 * segment); each segment's predecessor (prevSha256) is stored; the segment the partition's state
 * pointer names as its newest is stored (a segment lost at the very end). Returns the segments read.
 */
async function verifyPartition(archive: Archive, p: number): Promise<number> {
  const { store, root, problems } = archive;
  // The pointer first: it moves only after its segment is stored, so what it names now is in the
  // listing below even while an archiver keeps writing.
  const st = await readPartitionState(store, root, p);
  const all: ListedSegment[] = [];
  for await (const seg of listSegments(store, root, p, 0)) all.push(seg);
  const shas = new Set(all.map((x) => x.sha256));
  // The first stored segment of an epoch may name a predecessor that prune removed.
  const firstOfEpoch = new Map<number, bigint>();
  for (const x of all) if (!firstOfEpoch.has(x.epoch)) firstOfEpoch.set(x.epoch, BigInt(x.firstOffset));
  const unchained: Array<{ key: string; prev: string }> = [];
  let covered: bigint | undefined;
  let epoch: number | undefined;
  for (const seg of all) {
    if (seg.epoch !== epoch) {
      epoch = seg.epoch;
      covered = undefined;
    }
    const first = BigInt(seg.firstOffset);
    if (covered !== undefined && first > covered + 1n) checkHole(archive, p, seg, covered + 1n);
    const last = BigInt(seg.lastOffset);
    covered = covered === undefined || last > covered ? last : covered;
    const prev = await checkSegment(archive, seg);
    if (prev && !shas.has(prev) && first > firstOfEpoch.get(seg.epoch)!) unchained.push({ key: seg.key, prev });
  }
  if (unchained.length > 0) {
    // A listing taken while an archiver writes may miss a predecessor stored during it: list again.
    const again = new Set<string>();
    for await (const x of listSegments(store, root, p, 0)) again.add(x.sha256);
    for (const u of unchained) {
      if (!again.has(u.prev))
        problems.push({ what: u.key, problem: `the segment before it in the chain (SHA-256 ${u.prev}) is not stored: it was deleted or lost` });
    }
  }
  if (st?.lastKey && !all.some((x) => x.key === st.lastKey))
    problems.push({ what: `partition ${p}`, problem: `the newest archived segment ${st.lastKey} (state pointer) is not stored: it was deleted or lost` });
  return all.length;
}

/** Offsets `from` up to the segment `seg` are in no segment: a problem unless a recorded gap says Kafka lost them. */
function checkHole(archive: Archive, p: number, seg: ListedSegment, from: bigint): void {
  const first = BigInt(seg.firstOffset);
  const known = archive.gaps.find(
    (g) =>
      g.partition === p && g.topicEpoch === seg.epoch && g.fromOffset !== undefined && BigInt(g.fromOffset) <= from && BigInt(g.toOffset ?? '-1') >= first - 1n,
  );
  if (!known) archive.problems.push({ what: `partition ${p}`, problem: `offsets ${from}..${first - 1n} are in no segment (gap before ${seg.key})` });
}

/** Reads one segment back (SHA-256, decryption, decoding, record count); returns the SHA-256 of its predecessor, if it names one. */
async function checkSegment(archive: Archive, seg: ListedSegment): Promise<string | undefined> {
  try {
    const opened = await fetchSegment(archive.store, seg.key, seg.sha256, archive.keyring);
    let n = 0;
    for (const block of opened.blocks()) n += block.length;
    if (n !== opened.manifest.count) archive.problems.push({ what: seg.key, problem: `holds ${n} records, its manifest says ${opened.manifest.count}` });
    return opened.manifest.prevSha256 || undefined;
  } catch (err) {
    archive.problems.push({ what: seg.key, problem: toError(err).message });
    return undefined;
  }
}

/** Every base with a valid manifest, each read back as restore reads it; the bases, for the breaks they cover. */
async function verifyBases(archive: Archive) {
  const { store, root, keyring, problems } = archive;
  // Manifests not bound to their folder or failing their MAC (src/base/manifest.ts) are problems.
  const scanned = await scanBaseManifests(store, root, keyring);
  for (const r of scanned.refused) problems.push({ what: String(r.details?.key ?? 'base manifest'), problem: r.message });
  for (const b of scanned.bases) {
    try {
      // Size, SHA-256 and, with a key, the envelope bound to this base (crypto.ts), as restore reads it.
      await checkBase(store, b, keyring);
    } catch (err) {
      problems.push({ what: b.key, problem: toError(err).message });
    }
  }
  if (scanned.bases.length === 0) problems.push({ what: root, problem: 'no base backup: run cdp basebackup' });
  return scanned.bases;
}

/**
 * Debris of compactions that did not finish: harmless (restore reads only bases with a manifest),
 * listed so that it is seen; the next cdp compact removes it.
 */
async function listIncompleteBases(store: Store, root: string): Promise<IncompleteBase[]> {
  const { listSyntheticDebris } = await import('../compact/compact.js');
  return (await listSyntheticDebris(store, root)).map((d) => ({
    folder: d.dir,
    objects: d.keys.length,
    note: 'synthetic base without manifest (a compaction that did not finish): never used by restore; cdp compact removes it once compact.debrisGraceMinutes old',
  }));
}

export interface VerifyReport {
  ok: boolean;
  segments: number;
  bases: number;
  /** With --deep: what the test restore did. */
  deep: string | undefined;
  deepRestore: Record<string, unknown> | undefined;
  problems: VerifyProblem[];
  breaks: VerifyBreak[];
  syntheticBases: number;
  incompleteBases: IncompleteBase[];
}

/** `cdp verify`: the archive check and, with `deep`, a test restore of the latest point. */
export async function runVerify(ctx: CommandContext, opts: { deep: boolean }): Promise<VerifyReport> {
  const result = await verifyArchive(ctx);
  let deep: string | undefined;
  let deepReport: Record<string, unknown> | undefined;
  if (opts.deep && result.problems.length === 0) {
    const scratch = `cdp_verify_${randomBytes(4).toString('hex')}`;
    const admin = new pg.Client(pgConnection(ctx.cfg.source.url, ctx.cfg.source.tls));
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${scratch}`);
      const into = new URL(ctx.cfg.source.url);
      into.pathname = `/${scratch}`;
      const { runRestore } = await import('../restore/restore.js');
      // runRestore returns its report or throws: a failed test restore fails verify with its error.
      // The scratch database is on the source's server: its TLS settings unless restore.tls says otherwise.
      const restoreCtx = { ...ctx, cfg: { ...ctx.cfg, restore: { ...ctx.cfg.restore, tls: ctx.cfg.restore.tls ?? ctx.cfg.source.tls } } };
      deepReport = await runRestore(restoreCtx, { into: into.toString(), latest: true, dryRun: false, force: false });
      deep = `test restore of the latest point into ${scratch} succeeded`;
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${scratch} WITH (FORCE)`).catch(() => {});
      await admin.end();
    }
  }
  return {
    ok: result.problems.length === 0,
    segments: result.segments,
    bases: result.bases,
    syntheticBases: result.syntheticBases,
    deep,
    deepRestore: deepReport,
    problems: result.problems,
    breaks: result.breaks,
    incompleteBases: result.incompleteBases,
  };
}
