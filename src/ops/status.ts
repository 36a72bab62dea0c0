import pg from 'pg';
import { pgConnection } from '../pg/tls.js';
import type { CommandContext } from '../context.js';
import { archiveGroupId, currentGeneration, describeGap, gapCoveredBy, listGaps } from '../archive/chain.js';
import { listSegments, readArchiveManifest } from '../archive/catalog.js';
import { archiveRoot, sourceDatabase, topicName, type Config } from '../config/config.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { ddlRisksPrefix, type BaseManifest } from '../archive/layout.js';
import { createKafka } from '../kafka/client.js';
import { createStore, getObject, listObjects, type Store } from '../s3/client.js';
import { probe, type Component } from './preflight.js';
import { formatLsn, microsToIso } from '../util/lsn.js';
import type { Logger } from '../util/log.js';
import type { Keyring } from '../archive/crypto.js';
import { listBaseManifests } from '../base/manifest.js';

// `cdp status`: what an operator needs to know about the protection of one database. Each part is
// gathered independently; a part that cannot be read is reported as an error, not a crash, so the
// command still answers when (say) the source is down and the archive is the only thing left.

export interface StatusReport {
  database: string;
  restorablePoint: { lsn: string; time: string } | null;
  rpoSeconds: number | null;
  rpoObjectiveSeconds: number;
  rpoBreached: boolean;
  /**
   * Estimated time to restore the restorable point: the newest base's size and the segments after
   * it, at status.restoreBaseBytesPerSecond / replaySegmentBytesPerSecond. Null when unknown.
   */
  rto: { estimateSeconds: number; objectiveSeconds: number; breached: boolean; baseBytes: number; segments: number; segmentBytes: number } | null;
  partitions: Array<{ partition: number; watermarkLsn: string; watermarkTime: string; lastOffset: string }>;
  slot: { name: string; active: boolean; confirmedFlushLsn: string | null; lagBytes: number | null } | { error: string };
  consumer:
    | {
        groupId: string;
        lag: number;
        /**
         * Records Kafka deleted before the archive group read them (committed offset below the log
         * start): a gap the archiver records when it resumes (archive/chain.ts); --check exits 3.
         */
        lost: number;
        partitions: Array<{ partition: number; committed: string; low: string; high: string; lag: number; lost: number }>;
      }
    | { error: string };
  bases: Array<{ lsn: string; time: string; size: number; serverVersion: string }> | { error: string };
  /** Stream generation and topic epoch (archive/chain.ts). */
  generation: { generation: number; topicEpoch: number } | null;
  /** Recorded breaks in the chain of custody; `covered` once a base was taken after one. */
  gaps: Array<{ key: string; kind: string; afterLsn: string; untilLsn: string; detectedAt: string; covered: boolean; description: string }>;
  /**
   * DDL events restore will probably not replay exactly (capture/ddl-check.ts): a restore to a
   * point after one stops there (exit 1) unless given --ddl-override. Shown, not an exit code.
   */
  ddlReplayRisks: Array<{ commitLsn: string; commitTime: string; xid: number; position: number; tag: string | null; risk: string }>;
  errors: string[];
  /**
   * Components that did not answer the start-up probe (src/ops/preflight.ts): `config` (auth,
   * unknown host, missing bucket: exit 2) or not reachable (refused, timeout, server error: exit 1).
   */
  unreachable: Array<{ component: Component; kind: 'config' | 'refused' | 'unknown'; message: string }>;
}

/**
 * The archive's base manifests, oldest first, each checked against its folder and, with a keyring,
 * its MAC (src/base/manifest.ts): a forged or moved manifest throws IntegrityError.
 */
export async function listBases(store: Store, root: string, keyring?: Keyring): Promise<BaseManifest[]> {
  return (await listBaseManifests(store, root, keyring)) as unknown as BaseManifest[];
}

async function slotStatus(cfg: Config): Promise<StatusReport['slot']> {
  const client = new pg.Client({ ...pgConnection(cfg.source.url, cfg.source.tls), connectionTimeoutMillis: 5_000 });
  try {
    await client.connect();
    const r = await client.query(
      `SELECT active, confirmed_flush_lsn::text AS confirmed,
              pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag
         FROM pg_replication_slots WHERE slot_name = $1`,
      [cfg.source.slot],
    );
    if (r.rowCount === 0) return { error: `slot ${cfg.source.slot} does not exist: run cdp setup` };
    const row = r.rows[0];
    return { name: cfg.source.slot, active: row.active, confirmedFlushLsn: row.confirmed, lagBytes: row.lag === null ? null : Number(row.lag) };
  } catch (err) {
    return { error: `source: ${toError(err).message}` };
  } finally {
    await client.end().catch(() => {});
  }
}

async function consumerStatus(cfg: Config, log: Logger, groupId: string): Promise<StatusReport['consumer']> {
  // Few retries: status answers within seconds; an unreachable broker is reported, not waited for.
  const admin = createKafka(cfg, log, 'status').admin({ retry: { retries: 1, initialRetryTime: 200, maxRetryTime: 1_000 } });
  try {
    await admin.connect();
    const topic = topicName(cfg);
    const [high, committed] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
    const committedBy = new Map<number, string>();
    for (const t of committed) for (const p of t.partitions) committedBy.set(p.partition, p.offset);
    const partitions = high.map((h) => {
      const c = committedBy.get(h.partition) ?? '-1';
      // -1 means nothing committed yet: everything from the low watermark is lag.
      const from = BigInt(c) < 0n ? BigInt(h.low) : BigInt(c);
      const lost = BigInt(c) >= 0n && BigInt(c) < BigInt(h.low) ? Number(BigInt(h.low) - BigInt(c)) : 0;
      return { partition: h.partition, committed: c, low: h.low, high: h.high, lag: Number(BigInt(h.high) - from), lost };
    });
    return {
      groupId,
      lag: partitions.reduce((s, p) => s + p.lag, 0),
      lost: partitions.reduce((s, p) => s + p.lost, 0),
      partitions: partitions.sort((a, b) => a.partition - b.partition),
    };
  } catch (err) {
    return { error: `kafka: ${toError(err).message}` };
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

export async function gatherStatus(ctx: CommandContext): Promise<StatusReport> {
  const { cfg, log } = ctx;
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 8_000 });
  const root = archiveRoot(cfg);
  const errors: string[] = [];
  const { restorablePoint } = await import('../archive/catalog.js');
  // Each component is probed first (a few seconds at most); one that does not answer is reported as
  // such and not read, so that status answers quickly whatever is down.
  const probes = await probe(cfg, ['source', 'kafka', 's3']);
  const unreachable: StatusReport['unreachable'] = [];
  for (const [component, r] of probes) if (!r.ok) unreachable.push({ component, kind: r.kind, message: r.message });
  const down = (c: Component) => unreachable.find((u) => u.component === c);
  const s3Down = down('s3');
  const skip = <T>(c: Component): Promise<T> => Promise.reject(new CdpError(ErrorCodes.USAGE, down(c)!.message));
  const [generation, gaps, ddlReplayRisks] = await Promise.all([
    (s3Down ? skip<Awaited<ReturnType<typeof currentGeneration>>>('s3') : currentGeneration(store, root)).catch((err: unknown) => {
      errors.push(`generation: ${toError(err).message}`);
      return null;
    }),
    (s3Down ? Promise.resolve([]) : listGaps(store, root)).catch((err: unknown) => {
      errors.push(`gaps: ${toError(err).message}`);
      return [];
    }),
    (s3Down ? Promise.resolve([]) : listDdlRisks(store, root)).catch((err: unknown) => {
      errors.push(`ddl-risks: ${toError(err).message}`);
      return [];
    }),
  ]);
  const [point, slot, consumer, bases] = await Promise.all([
    (s3Down ? Promise.resolve(undefined) : restorablePoint(store, root)).catch((err: unknown) => {
      errors.push(`archive: ${toError(err).message}`);
      return undefined;
    }),
    down('source') ? Promise.resolve({ error: `source: ${down('source')!.message}` }) : slotStatus(cfg),
    down('kafka') ? Promise.resolve({ error: `kafka: ${down('kafka')!.message}` }) : consumerStatus(cfg, log, archiveGroupId(cfg, generation?.topicEpoch ?? 0)),
    (s3Down ? skip<BaseManifest[]>('s3') : listBases(store, root)).catch((err: unknown) => ({ error: `bases: ${toError(err).message}` })),
  ]);
  const rto = await estimateRto(cfg, store, root, point, Array.isArray(bases) ? bases : undefined).catch((err: unknown) => {
    errors.push(`rto: ${toError(err).message}`);
    return null;
  });
  const rpoSeconds = point ? Math.max(0, (Date.now() * 1000 - point.time) / 1e6) : null;
  const objective = cfg.status.rpoSeconds;
  return {
    database: sourceDatabase(cfg),
    restorablePoint: point ? { lsn: formatLsn(point.lsn), time: microsToIso(point.time) } : null,
    rpoSeconds: rpoSeconds === null ? null : Math.round(rpoSeconds * 10) / 10,
    rpoObjectiveSeconds: objective,
    rpoBreached: rpoSeconds === null || rpoSeconds > objective,
    rto,
    partitions: (point?.partitions ?? []).map((p) => ({
      partition: p.partition,
      watermarkLsn: formatLsn(p.watermarkLsn),
      watermarkTime: microsToIso(p.watermarkTime),
      lastOffset: p.lastOffset,
    })),
    slot,
    consumer,
    bases: Array.isArray(bases) ? bases.map((b) => ({ lsn: b.lsnText, time: b.time, size: b.size, serverVersion: b.serverVersion })) : bases,
    generation,
    gaps: gaps.map((g) => ({
      key: g.key,
      kind: g.kind,
      afterLsn: formatLsn(g.afterLsn),
      untilLsn: formatLsn(g.untilLsn),
      detectedAt: g.detectedAt,
      covered: Array.isArray(bases) && bases.some((b) => gapCoveredBy(g, b)),
      description: describeGap(g),
    })),
    ddlReplayRisks,
    errors,
    unreachable,
  };
}

/** The newest base at or before the point, and every segment after it: what a restore of the point reads. */
async function estimateRto(
  cfg: Config,
  store: Store,
  root: string,
  point: { lsn: number } | undefined,
  bases: BaseManifest[] | undefined,
): Promise<StatusReport['rto']> {
  if (!point || !bases) return null;
  const base = bases.filter((b) => b.lsn - 1 <= point.lsn).at(-1);
  if (!base) return null;
  const manifest = await readArchiveManifest(store, root);
  let segments = 0;
  let segmentBytes = 0;
  for (let p = 0; p < (manifest?.partitions ?? 0); p++) {
    for await (const s of listSegments(store, root, p, base.lsn)) {
      segments++;
      segmentBytes += s.size;
    }
  }
  const estimateSeconds = base.size / cfg.status.restoreBaseBytesPerSecond + segmentBytes / cfg.status.replaySegmentBytesPerSecond;
  return {
    estimateSeconds: Math.round(estimateSeconds * 10) / 10,
    objectiveSeconds: cfg.status.rtoSeconds,
    breached: estimateSeconds > cfg.status.rtoSeconds,
    baseBytes: base.size,
    segments,
    segmentBytes,
  };
}

async function listDdlRisks(store: Store, root: string): Promise<StatusReport['ddlReplayRisks']> {
  const out: StatusReport['ddlReplayRisks'] = [];
  for await (const o of listObjects(store, ddlRisksPrefix(root))) {
    out.push(JSON.parse((await getObject(store, o.key)).toString('utf8')) as StatusReport['ddlReplayRisks'][number]);
  }
  return out;
}
