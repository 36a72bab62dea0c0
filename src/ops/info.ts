import type { CommandContext } from '../context.js';
import { archiveRoot, sourceDatabase } from '../config/config.js';
import { listSegments, readArchiveManifest, restorablePoint } from '../archive/catalog.js';
import { describeGap, gapCoveredBy, listGaps, type StoredGap } from '../archive/chain.js';
import type { BaseManifest } from '../archive/layout.js';
import { listBases } from './status.js';
import { createStore } from '../s3/client.js';
import { formatLsn, microsToIso, parseLsn, type Lsn } from '../util/lsn.js';

// `cdp info` (issue 14): where do I stand. Read from the archive alone (S3), like a pgBackRest
// `info` or `wal-g backup-list`: every base with its kind, size, LSN and time and the range of
// points it can restore; the overall earliest and latest restorable points; segments and bytes per
// partition; the breaks in the chain of custody. The source and Kafka are not needed (status is
// the command that looks at them).
//
// Base manifests are read generically: a manifest with a `synthetic` field (cdp compact) is a
// synthetic base; anything else is a base taken from the source. A base can restore the points from
// its own LSN up to the restorable point, unless a recorded break it does not cover lies between
// (archive/chain.ts gapCoveredBy, the rule restore applies): then up to the break's afterLsn.

export interface InfoPoint {
  lsn: string;
  time: string | null;
}

export interface InfoBase {
  kind: 'source' | 'synthetic';
  lsn: string;
  time: string;
  size: number;
  key: string;
  serverVersion: string;
  encrypted: boolean;
  /** For a synthetic base: the base it was made from. */
  fromBase?: string;
  /** The points this base can restore: [from, to], or null when a break it does not cover blocks it. */
  restorable: { from: InfoPoint; to: InfoPoint; blockedBy?: string } | null;
  /** Why `restorable` is null. */
  notRestorable?: string;
  /** Segments (and their stored bytes) a restore from this base to the restorable point reads at most. */
  segmentsAfter: { count: number; bytes: number };
}

export interface InfoReport {
  database: string;
  archive: string;
  partitions: number | null;
  encryption: { configured: boolean; encryptedBases: number; plainBases: number };
  restorable: { earliest: InfoPoint | null; latest: InfoPoint | null; rpoSeconds: number | null };
  bases: InfoBase[];
  segments: {
    count: number;
    bytes: number;
    perPartition: Array<{ partition: number; count: number; bytes: number; firstLsn: string | null; lastLsn: string | null }>;
  };
  gaps: Array<{ kind: string; afterLsn: string; untilLsn: string; detectedAt: string; coveredBy: string[]; description: string }>;
}

type Base = BaseManifest;

function point(lsn: Lsn, timeMicros: number | undefined): InfoPoint {
  return { lsn: formatLsn(lsn), time: timeMicros ? microsToIso(timeMicros) : null };
}

/** The points `base` can restore, given the restorable point and the recorded breaks. */
export function baseRange(base: Base, restorable: { lsn: Lsn; time: number } | undefined, gaps: StoredGap[]): InfoBase['restorable'] {
  if (!restorable || restorable.lsn < base.lsn - 1) return null;
  // A replay from this base stops before any break it does not cover (restore exits 3 past it).
  const blocking = gaps.filter((g) => !gapCoveredBy(g, base)).sort((a, b) => a.afterLsn - b.afterLsn)[0];
  const from = point(base.lsn, base.timeMicros);
  if (!blocking || blocking.afterLsn >= restorable.lsn) return { from, to: point(restorable.lsn, restorable.time) };
  if (blocking.afterLsn < base.lsn - 1) return null;
  return { from, to: point(blocking.afterLsn, blocking.afterTime || undefined), blockedBy: describeGap(blocking) };
}

function whyNot(base: Base, restorable: { lsn: Lsn } | undefined): string {
  if (!restorable) return 'no restorable point yet (no archived watermark in every partition)';
  if (restorable.lsn < base.lsn - 1) return `the archive has not reached it yet (restorable point ${formatLsn(restorable.lsn)})`;
  return 'a recorded break it does not cover lies at or before it';
}

export async function gatherInfo(ctx: CommandContext): Promise<InfoReport> {
  const { cfg, log } = ctx;
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 30_000 });
  const root = archiveRoot(cfg);
  const manifest = await readArchiveManifest(store, root);
  const [bases, gaps, rp] = await Promise.all([listBases(store, root), listGaps(store, root), restorablePoint(store, root)]);
  const partitions = manifest?.partitions ?? null;

  // Every segment, by partition: name and size only (the listing; nothing is downloaded).
  const perPartition: InfoReport['segments']['perPartition'] = [];
  const segs: Array<{ maxLsn: number; size: number }> = [];
  for (let p = 0; p < (partitions ?? 0); p++) {
    let count = 0;
    let bytes = 0;
    let first: number | undefined;
    let last: number | undefined;
    for await (const s of listSegments(store, root, p)) {
      count += 1;
      bytes += s.size;
      first = first === undefined ? s.maxLsn : Math.min(first, s.maxLsn);
      last = last === undefined ? s.maxLsn : Math.max(last, s.maxLsn);
      segs.push({ maxLsn: s.maxLsn, size: s.size });
    }
    perPartition.push({
      partition: p,
      count,
      bytes,
      firstLsn: first === undefined ? null : formatLsn(first),
      lastLsn: last === undefined ? null : formatLsn(last),
    });
  }
  const restorable = rp ? { lsn: rp.lsn, time: rp.time } : undefined;

  const infoBases: InfoBase[] = bases.map((b) => {
    const after = segs.filter((s) => s.maxLsn >= b.lsn);
    return {
      kind: b.synthetic ? 'synthetic' : 'source',
      lsn: b.lsnText,
      time: b.time,
      size: b.size,
      key: b.key,
      serverVersion: b.serverVersion,
      encrypted: b.encryption !== null && b.encryption !== undefined,
      ...(b.synthetic ? { fromBase: b.synthetic.fromBase.lsnText } : {}),
      restorable: baseRange(b, restorable, gaps),
      ...(baseRange(b, restorable, gaps) ? {} : { notRestorable: whyNot(b, restorable) }),
      segmentsAfter: { count: after.length, bytes: after.reduce((n, s) => n + s.size, 0) },
    };
  });

  // Earliest: the oldest base that can restore anything; latest: the furthest any base reaches.
  const usable = infoBases.filter((b) => b.restorable);
  const earliest = usable[0]?.restorable?.from ?? null;
  let latest: InfoPoint | null = null;
  for (const b of usable) if (!latest || parseLsn(b.restorable!.to.lsn) > parseLsn(latest.lsn)) latest = b.restorable!.to;

  return {
    database: sourceDatabase(cfg),
    archive: `s3://${cfg.s3.bucket}/${root}/`,
    partitions,
    encryption: {
      configured: Boolean(cfg.archive.encryptionKeyFile || cfg.archive.encryptionKeyEnv),
      encryptedBases: infoBases.filter((b) => b.encrypted).length,
      plainBases: infoBases.filter((b) => !b.encrypted).length,
    },
    restorable: { earliest, latest, rpoSeconds: restorable ? Math.round(Math.max(0, (Date.now() * 1000 - restorable.time) / 1e6) * 10) / 10 : null },
    bases: infoBases,
    segments: { count: segs.length, bytes: segs.reduce((n, s) => n + s.size, 0), perPartition },
    gaps: gaps.map((g) => ({
      kind: g.kind,
      afterLsn: formatLsn(g.afterLsn),
      untilLsn: formatLsn(g.untilLsn),
      detectedAt: g.detectedAt,
      coveredBy: bases.filter((b) => gapCoveredBy(g, b)).map((b) => b.lsnText),
      description: describeGap(g),
    })),
  };
}
