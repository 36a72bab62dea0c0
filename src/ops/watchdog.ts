import { CdpError, ErrorCodes } from '../errors.js';
import type { Logger } from '../util/log.js';
import { healthChecks } from '../util/metrics.js';

// A daemon that cannot make progress exits (issue 14), so that its supervisor (systemd, Kubernetes,
// docker's restart policy) sees it and restarts it or pages someone, instead of a process that
// looks alive and protects nothing. Progress is what each component reports in its health check
// (util/metrics.ts registerHealth):
//  - not ok: capture retrying its session (source or Kafka unreachable, slot busy), an archiver
//    with segments waiting for S3 and nothing stored, a failed component;
//  - a component still starting (its first connection to the source or Kafka hangs);
//  - capture streaming but its confirmed LSN not moving: heartbeats commit a transaction every
//    capture.heartbeatIntervalMs, so a healthy capture always moves it (the acknowledgements of
//    Kafka are what move it: a Kafka that takes no records stops it).
// Transient trouble (a broker restart, an S3 503, a Postgres restart) is retried as before; only
// trouble that lasts watchdog.stallSeconds ends the process, with exit 1 and one line saying why.

export interface Watchdog {
  /** Rejects with a STALLED error when a component made no progress for stallMs. */
  stalled: Promise<never>;
  stop(): void;
}

export function startWatchdog(components: string[], stallMs: number, log: Logger, now: () => number = Date.now): Watchdog {
  let reject!: (err: Error) => void;
  const stalled = new Promise<never>((_, rej) => (reject = rej));
  stalled.catch(() => {});
  if (stallMs <= 0) return { stalled, stop: () => {} };
  const since = new Map<string, number>();
  const lastLsn = new Map<string, { lsn: unknown; at: number }>();
  const check = () => {
    const t = now();
    for (const name of components) {
      const c = healthChecks().get(name);
      if (!c) continue;
      const r = c();
      let why: string | undefined;
      if (!r.ok) why = `${name} not healthy${r.detail?.lastError ? ` (${String(r.detail.lastError)})` : ''}`;
      else if (r.detail?.phase === 'starting') why = `${name} still starting (its first connections do not succeed)`;
      else if (r.detail && 'confirmedLsn' in r.detail && r.detail.phase === 'streaming') {
        const prev = lastLsn.get(name);
        if (!prev || prev.lsn !== r.detail.confirmedLsn) lastLsn.set(name, { lsn: r.detail.confirmedLsn, at: t });
        else if (t - prev.at >= stallMs) why = `${name} confirmed nothing (LSN ${String(r.detail.confirmedLsn)}): no acknowledgement from Kafka`;
      }
      if (!why) {
        since.delete(name);
        continue;
      }
      // The LSN case counts from the last move of the LSN; the others from the first check that saw them.
      const from = since.get(name) ?? lastLsn.get(name)?.at ?? t;
      since.set(name, from);
      if (t - from >= stallMs) {
        clearInterval(timer);
        const err = new CdpError(
          ErrorCodes.STALLED,
          `no progress for ${Math.round((t - from) / 1000)} s: ${why}; exiting so that the supervisor restarts this daemon (watchdog.stallSeconds / CDP_STALL_SECONDS)`,
        );
        log.error({ component: name }, err.message);
        reject(err);
        return;
      }
    }
  };
  const timer = setInterval(check, Math.max(50, Math.min(5_000, Math.floor(stallMs / 4))));
  timer.unref();
  return { stalled, stop: () => clearInterval(timer) };
}
