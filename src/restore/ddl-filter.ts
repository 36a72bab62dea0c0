// Which DDL events a `restore --tables` replays (issue 9). The base holds the whole schema and
// `--tables` restores data only for the chosen tables; DDL is replayed so that the schema keeps
// following the source. Skipping a DDL event is only safe when everything it touched belongs to a
// table that is not chosen: a sequence, type, domain, function, schema, extension ... created or
// changed by the stream may be used by a chosen table (CREATE SEQUENCE ids, then CREATE TABLE t
// (id bigint DEFAULT nextval('ids')): skipping the sequence made the table's CREATE fail), so those
// are always replayed. An index's identity does not name its table: replayed too (the table exists,
// from the base or the stream). Every object a command reports is looked at, dropped ones included;
// a command that reports none is replayed.
//
// Object identities are pg_event_trigger_ddl_commands() / pg_event_trigger_dropped_objects()'s
// object_identity: "schema.table", "schema.table.column", "name on schema.table" (constraints,
// triggers, rules, policies), each part quote_ident'ed.

/** A DDL event's content, as far as this module reads it (keys of every version of the event trigger). */
export interface DdlObjects {
  objects?: Array<Record<string, unknown>>;
  dropped?: Array<Record<string, unknown>>;
}

/** Object types whose identity names one table, and how to find that table in it. */
const TABLE_SCOPED: Record<string, 'self' | 'column' | 'on'> = {
  table: 'self',
  'foreign table': 'self',
  'table column': 'column',
  'table constraint': 'on',
  trigger: 'on',
  rule: 'on',
  policy: 'on',
};

/** True when `restore --tables` must replay this DDL event (see the file comment). */
export function ddlNeededForTables(c: DdlObjects, chosen: Set<string>): boolean {
  const all = [...(c.objects ?? []), ...(c.dropped ?? [])];
  if (all.length === 0) return true;
  for (const o of all) {
    const type = String(o.objectType ?? o.object_type ?? '').toLowerCase();
    const identity = String(o.identity ?? o.object_identity ?? o.objectIdentity ?? '');
    const table = tableOf(type, identity);
    if (table === undefined || chosen.has(table)) return true;
  }
  return false;
}

/** "schema.table" (unquoted) of a table-scoped object, undefined for any other object. */
export function tableOf(type: string, identity: string): string | undefined {
  const how = TABLE_SCOPED[type];
  if (!how) return undefined;
  let parts: string[];
  if (how === 'on') {
    const at = lastOutsideQuotes(identity, ' on ');
    if (at < 0) return undefined;
    parts = identParts(identity.slice(at + 4));
  } else {
    parts = identParts(identity);
    if (how === 'column') parts = parts.slice(0, -1);
  }
  return parts.length === 2 ? `${parts[0]}.${parts[1]}` : undefined;
}

/** Index of the last `needle` in `s` that is not inside a double-quoted identifier; -1 if none. */
function lastOutsideQuotes(s: string, needle: string): number {
  let found = -1;
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '"') quoted = !quoted;
    else if (!quoted && s.startsWith(needle, i)) found = i;
  }
  return found;
}

/** A dotted, possibly quoted name split into its unquoted parts: public."a.b""c" -> ['public', 'a.b"c']. */
export function identParts(name: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < name.length; i++) {
    const ch = name[i]!;
    if (ch === '"') {
      for (i++; i < name.length; i++) {
        if (name[i] === '"') {
          if (name[i + 1] === '"') {
            cur += '"';
            i++;
          } else break;
        } else cur += name[i];
      }
    } else if (ch === '.') {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  return parts;
}
