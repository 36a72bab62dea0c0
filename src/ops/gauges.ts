import type { CommandContext } from '../context.js';
import { archiveRoot } from '../config/config.js';
import { gapCoveredBy, listGaps } from '../archive/chain.js';
import { connectCatalog } from '../capture/source.js';
import { createStore } from '../s3/client.js';
import { toError } from '../errors.js';
import client from 'prom-client';
import { counter, gauge, registry } from '../util/metrics.js';
import { listBases } from './status.js';

// Deployment metrics that no single pipeline step owns (issue 14): how old the newest base is,
// how the last scheduled base went, the breaks in the chain of custody, and the WAL the slot holds
// back on the source. Alert rules (deploy/prometheus/alerts.yml) and the dashboard
// (deploy/grafana/katya-cdp.json) use them; every metric carries the process's database and slot
// labels (ops/metrics.ts sets them as the registry's default labels).

const baseGauges = {
  newestTime: gauge('cdp_basebackup_newest_timestamp_seconds', 'Snapshot time of the newest base in the archive (source or synthetic), Unix seconds'),
  lastResult: gauge('cdp_basebackup_last_result', 'Result of the last base attempt of this process: 1 stored, 0 failed'),
  failures: counter('cdp_basebackup_failures_total', 'Base backups of this process that failed'),
};

// The age is computed when Prometheus scrapes, so it keeps growing between re-reads of S3.
if (!registry.getSingleMetric('cdp_basebackup_newest_age_seconds')) {
  new client.Gauge({
    name: 'cdp_basebackup_newest_age_seconds',
    help: 'Now minus the snapshot time of the newest base in the archive (computed at scrape; absent until known)',
    registers: [registry],
    async collect() {
      const newest = (await baseGauges.newestTime.get()).values[0]?.value ?? 0;
      if (newest > 0) this.set(Math.max(0, Date.now() / 1000 - newest));
    },
  });
}

const gapGauge = gauge('cdp_archive_gaps', 'Recorded breaks in the chain of custody, by whether a base covers them', ['state']);
const slotRetained = gauge('cdp_source_slot_retained_wal_bytes', 'WAL the source keeps for the replication slot: pg_current_wal_lsn() - restart_lsn');
const slotActive = gauge('cdp_source_slot_active', '1 when the replication slot has an active consumer');

/** A scheduled base failed (ops/run.ts). */
export function baseFailed(): void {
  baseGauges.failures.inc();
  baseGauges.lastResult.set(0);
}

async function noteNewestBase(timeMicros: number): Promise<void> {
  const current = (await baseGauges.newestTime.get()).values[0]?.value ?? 0;
  if (timeMicros / 1e6 > current) baseGauges.newestTime.set(timeMicros / 1e6);
}

/** The archive's bases and gaps, re-read every intervalMs (archive and run daemons). Returns a stop function. */
export function startArchiveGauges(ctx: CommandContext, intervalMs = 60_000): () => void {
  const store = createStore(ctx.cfg, ctx.log, { signal: ctx.signal, maxElapsedMs: 20_000 });
  const root = archiveRoot(ctx.cfg);
  const tick = async () => {
    try {
      const [bases, gaps] = await Promise.all([listBases(store, root), listGaps(store, root)]);
      const newest = bases.reduce((t, b) => Math.max(t, b.timeMicros), 0);
      if (newest > 0) await noteNewestBase(newest);
      const covered = gaps.filter((g) => bases.some((b) => gapCoveredBy(g, b))).length;
      gapGauge.set({ state: 'covered' }, covered);
      gapGauge.set({ state: 'uncovered' }, gaps.length - covered);
    } catch (err) {
      ctx.log.debug({ err: toError(err).message }, 'archive gauges: cannot read bases or gaps');
    }
  };
  void tick();
  const t = setInterval(() => void tick(), intervalMs);
  t.unref();
  return () => clearInterval(t);
}

/** WAL retained by the slot, every intervalMs (capture and run daemons). Returns a stop function. */
export function startSourceGauges(ctx: CommandContext, intervalMs = 30_000): () => void {
  let stopped = false;
  const tick = async () => {
    let client: Awaited<ReturnType<typeof connectCatalog>> | undefined;
    try {
      client = await connectCatalog(ctx.cfg, 'katya-cdp-metrics');
      const r = await client.query<{ retained: string | null; active: boolean }>(
        `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained, active FROM pg_replication_slots WHERE slot_name = $1`,
        [ctx.cfg.source.slot],
      );
      const row = r.rows[0];
      if (row?.retained != null) slotRetained.set(Number(row.retained));
      if (row) slotActive.set(row.active ? 1 : 0);
    } catch (err) {
      ctx.log.debug({ err: toError(err).message }, 'source gauges: cannot read the slot');
    } finally {
      await client?.end().catch(() => {});
    }
  };
  void tick();
  const t = setInterval(() => {
    if (!stopped) void tick();
  }, intervalMs);
  t.unref();
  return () => {
    stopped = true;
    clearInterval(t);
  };
}
