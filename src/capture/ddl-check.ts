// What capture can tell, the moment a DDL event passes, about whether restore will be able to
// replay it exactly (restore decides for good: src/restore/ddl-replay.ts, planDdl). Capture warns
// and counts it then, so an operator learns of it when it happens, not on the day of a restore.

interface Body {
  tag?: string;
  nested?: boolean;
  context?: string | null;
  inExtension?: boolean;
  rewrites?: Array<{ table?: string; reason?: number; hadRows?: boolean }>;
}

/** Why restore will probably stop at this DDL event (exit 1, --ddl-override), or undefined. */
export function ddlReplayRisk(bodyText: string): string | undefined {
  let b: Body;
  try {
    b = JSON.parse(bodyText) as Body;
  } catch {
    return 'the DDL description is not JSON';
  }
  if (b.inExtension) return undefined;
  if (b.nested && !(b.context ?? '').startsWith('SQL statement "')) {
    return `${b.tag ?? 'DDL'} ran inside a function whose statement text PostgreSQL does not report (${(b.context ?? '').split('\n')[0]})`;
  }
  // Reason bit 2 = AT_REWRITE_DEFAULT_VAL: per-row values (identity, serial, a volatile DEFAULT) computed by the rewrite.
  const rw = (b.rewrites ?? []).find((r) => (Number(r.reason) & 2) !== 0 && r.hadRows);
  if (rw)
    return `${b.tag ?? 'DDL'} rewrote ${rw.table ?? 'a table'} holding rows with a column whose values may be computed per row (identity, serial, volatile DEFAULT), which the stream does not carry`;
  return undefined;
}
