import { CdpError, ErrorCodes } from '../errors.js';
import { formatLsn, microsToIso, parseLsn, type Lsn } from '../util/lsn.js';

// Restore targets (DESIGN.md section 5) and the rule that decides, transaction by transaction in
// commit order, whether it belongs to the restored state. The rules follow PostgreSQL's own
// recovery targets (docs, 20.5.5 "Recovery Target"): recovery_target_time stops before the first
// transaction committed after the time (recovery_target_inclusive = on applies transactions at
// exactly the time); recovery_target_xid includes that transaction; recovery_target_lsn includes
// transactions whose commit record is at or before the LSN.

export type RestoreTarget = { kind: 'lsn'; lsn: Lsn } | { kind: 'time'; micros: number; text: string } | { kind: 'xid'; xid: number } | { kind: 'latest' };

export interface TxnHeader {
  commitLsn: Lsn;
  commitTime: number;
  xid: number;
}

/** What to do with the next transaction in commit order. */
export type CutDecision = 'apply' | 'apply-and-stop' | 'stop';

/**
 * Parses an ISO 8601 / PostgreSQL timestamp with zone into microseconds since the Unix epoch,
 * keeping microseconds (Date.parse stops at milliseconds, and the oracle compares at µs).
 * Accepts "2026-11-27T10:00:00.123456Z", "2026-11-27 10:00:00.123456+00", "+05:30", "+0530".
 */
export function parseTimeMicros(text: string): number {
  const m = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)$/.exec(text.trim());
  if (!m) {
    throw new CdpError(ErrorCodes.USAGE, `--time: ${JSON.stringify(text)} is not a timestamp with a zone; use ISO 8601, e.g. 2026-11-27T10:00:00.123456Z`);
  }
  let zone = m[4]!.toUpperCase();
  if (zone !== 'Z') {
    const z = /^([+-]\d{2}):?(\d{2})?$/.exec(zone)!;
    zone = `${z[1]}:${z[2] ?? '00'}`;
  }
  const time = m[2]!.length === 5 ? `${m[2]}:00` : m[2]!;
  // Date.parse rolls impossible dates over (2026-02-30 becomes March 2): check every field first.
  const [y, mo, d] = m[1]!.split('-').map(Number) as [number, number, number];
  const [h, mi, sec] = time.split(':').map(Number) as [number, number, number];
  const daysInMonth = mo >= 1 && mo <= 12 ? new Date(Date.UTC(y, mo, 0)).getUTCDate() : 0;
  const zm = /^([+-])(\d{2}):(\d{2})$/.exec(zone);
  const bad =
    mo < 1 || mo > 12
      ? `month ${mo}`
      : d < 1 || d > daysInMonth
        ? `day ${d} (${m[1]!.slice(0, 7)} has ${daysInMonth} days)`
        : h > 23
          ? `hour ${h}`
          : mi > 59
            ? `minute ${mi}`
            : sec > 59
              ? `second ${sec}`
              : zm && (Number(zm[2]) > 15 || Number(zm[3]) > 59)
                ? `zone ${zone}`
                : undefined;
  if (bad) throw new CdpError(ErrorCodes.USAGE, `--time: ${JSON.stringify(text)} is not a valid timestamp: ${bad} does not exist`);
  const ms = Date.parse(`${m[1]}T${time}${zone}`);
  if (!Number.isFinite(ms)) throw new CdpError(ErrorCodes.USAGE, `--time: ${JSON.stringify(text)} is not a valid date`);
  const frac = (m[3] ?? '').padEnd(6, '0').slice(0, 6);
  return ms * 1000 + Number(frac);
}

/** Exactly one of --time, --lsn, --xid, --latest: the CLI checks it before anything else, parseTarget again. */
export function checkOneTarget(opts: { time?: string; lsn?: string; xid?: number; latest?: boolean }): void {
  const given = (['time', 'lsn', 'xid', 'latest'] as const).filter((k) => (k === 'latest' ? Boolean(opts.latest) : opts[k] !== undefined));
  if (given.length !== 1) {
    throw new CdpError(
      ErrorCodes.USAGE,
      `restore needs exactly one of --time, --lsn, --xid, --latest (got ${given.length ? given.map((t) => '--' + t).join(', ') : 'none'})`,
    );
  }
}

export function parseTarget(opts: { time?: string; lsn?: string; xid?: number; latest?: boolean }): RestoreTarget {
  checkOneTarget(opts);
  if (opts.time !== undefined) return { kind: 'time', micros: parseTimeMicros(opts.time), text: opts.time };
  if (opts.lsn !== undefined) {
    try {
      return { kind: 'lsn', lsn: parseLsn(opts.lsn) };
    } catch (err) {
      throw new CdpError(ErrorCodes.USAGE, `--lsn: ${(err as Error).message}`, { cause: err });
    }
  }
  if (opts.xid !== undefined) {
    if (!Number.isSafeInteger(opts.xid) || opts.xid <= 0) throw new CdpError(ErrorCodes.USAGE, `--xid: expected a positive transaction id, got ${opts.xid}`);
    return { kind: 'xid', xid: opts.xid };
  }
  return { kind: 'latest' };
}

export function describeTarget(t: RestoreTarget): string {
  switch (t.kind) {
    case 'lsn':
      return `lsn ${formatLsn(t.lsn)}`;
    case 'time':
      return `time ${microsToIso(t.micros)}`;
    case 'xid':
      return `xid ${t.xid}`;
    case 'latest':
      return 'latest';
  }
}

/**
 * The cut rule. `limitLsn` is the restorable point: nothing beyond it is ever applied (G3), whatever
 * the target says; `--latest` is exactly that limit.
 */
export function makeCut(target: RestoreTarget, limitLsn: Lsn): (t: TxnHeader) => CutDecision {
  return (t) => {
    if (t.commitLsn > limitLsn) return 'stop';
    switch (target.kind) {
      case 'latest':
        return 'apply';
      case 'lsn':
        return t.commitLsn <= target.lsn ? 'apply' : 'stop';
      case 'time':
        return t.commitTime <= target.micros ? 'apply' : 'stop';
      case 'xid':
        return xidMatches(t.xid, target.xid) ? 'apply-and-stop' : 'apply';
    }
  };
}

/**
 * The cut rule for a WATERMARK C of the merged stream (every transaction with commit LSN <= C has
 * been seen): true when no transaction after it may be applied. At or past the restorable point,
 * or an LSN target: nothing after C is at or before it. A time target: transaction C (the last
 * one capture had acknowledged, a heartbeat's when idle) committed after the target time, and
 * the cut stops at the first transaction in commit order that did (makeCut). An xid target: never
 * (its transaction ends the replay itself).
 */
export function makeWatermarkCut(target: RestoreTarget, limitLsn: Lsn): (w: { commitLsn: Lsn; commitTime: number }) => boolean {
  return (w) => {
    if (w.commitLsn >= limitLsn) return true;
    switch (target.kind) {
      case 'lsn':
        return w.commitLsn >= target.lsn;
      case 'time':
        return w.commitTime > target.micros;
      default:
        return false;
    }
  };
}

/**
 * Whether a transaction of the stream is the --xid target. pgoutput gives 32-bit xids; PostgreSQL
 * shows 64-bit ones (pg_current_xact_id(), txid_current(): epoch * 2^32 + xid). A target of 2^32
 * or more is matched on its low 32 bits: restore picks a base whose snapshot xmax (64-bit) is at
 * or below the target (planRestore), and within the replay from that base the low 32 bits name one
 * transaction unless more than 2^31 transactions separate base and target (PostgreSQL's
 * wraparound horizon). A target below 2^32 is the first transaction with that xid after the base.
 */
export function xidMatches(streamXid: number, target: number): boolean {
  return streamXid === (target >= 2 ** 32 ? target % 2 ** 32 : target);
}
