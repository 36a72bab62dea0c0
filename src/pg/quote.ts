// SQL identifiers, always double-quoted (PostgreSQL docs 4.1.1 "Identifiers and Key Words"): safe for
// reserved words and mixed case. Replication commands take identifiers the same way (PostgreSQL docs,
// "Streaming Replication Protocol"), so the replication connection uses this too.

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
