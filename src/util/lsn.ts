// Log sequence numbers. Postgres prints them as two 32-bit hex halves ("16/B374D848"). We keep them
// as JS numbers: exact up to 2^53 bytes of WAL (8 PiB), far beyond any cluster's lifetime, and
// cheap to compare and to carry as an Avro long.

export type Lsn = number;

const HALF = 2 ** 32;

export function parseLsn(text: string): Lsn {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (!m) throw new Error(`not an LSN: ${JSON.stringify(text)} (expected the form 16/B374D848)`);
  const value = parseInt(m[1]!, 16) * HALF + parseInt(m[2]!, 16);
  if (!Number.isSafeInteger(value)) throw new Error(`LSN ${text} is beyond 2^53`);
  return value;
}

export function formatLsn(lsn: Lsn): string {
  const hi = Math.floor(lsn / HALF);
  const lo = lsn - hi * HALF;
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

/** Zero-padded fixed-width hex, so that object keys sort by LSN (DESIGN.md section 4). */
export function lsnKey(lsn: Lsn): string {
  return lsn.toString(16).toUpperCase().padStart(16, '0');
}

/** Microseconds since the Unix epoch from Postgres's microseconds since 2000-01-01. */
export const PG_EPOCH_OFFSET_US = 946_684_800_000_000;

export function microsToIso(us: number): string {
  const ms = Math.floor(us / 1000);
  const rest = us - ms * 1000;
  const iso = new Date(ms).toISOString(); // 2026-11-27T10:00:00.123Z
  return `${iso.slice(0, 23)}${String(rest).padStart(3, '0')}Z`;
}
