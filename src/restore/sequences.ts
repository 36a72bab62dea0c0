import { CURSOR_SCHEMA } from './cursor.js';
import { quoteLiteral } from './sql.js';

// Sequences at the end of a restore: the values capture recorded (SEQUENCES snapshots, signed
// logical messages) and the rows the replay wrote. Split from apply.ts (issue 12 item 5).

/** A SEQUENCES event's content: {"schema.sequence": value}, or undefined when it is not that. */
export function parseSequences(content: string): Record<string, string | number> | undefined {
  try {
    const v = JSON.parse(content) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, string | number>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Sets every sequence to at least its value at the target: the SEQUENCES snapshot (values read
 * after the target when archived, else the last before), the sequence's current value (the base
 * dump's SEQUENCE SET), and the highest value (lowest for a descending sequence) in every integer
 * column that draws from it: the column that owns it (serial, identity, OWNED BY: pg_depend 'a' /
 * 'i' from the sequence to the column) and every column whose default calls nextval on it
 * (pg_depend 'n' from the default, pg_attrdef, to the sequence: a standalone sequence used by a
 * DEFAULT nextval('seq') without OWNED BY, or shared by several tables, has only these).
 *
 * The columns matter because the snapshot can be older than the target: capture writes one every
 * capture.sequenceIntervalMs, so a target in the last interval before the restorable point
 * (always so for --latest) gets the snapshot before it, which predates the newest rows, or even
 * the sequence itself (created after it: no entry at all). A default written as
 * nextval('seq'::text) records no dependency and is not seen. Clamped to the sequence's bounds
 * (setval refuses values outside them; the source cannot be past them either).
 * One DO block, so that the same text serves the live target and the --sql file.
 */
export function sequencesSql(snapshot: Record<string, string | number> | undefined): string {
  const snap = quoteLiteral(JSON.stringify(snapshot ?? {}));
  const body = `
DECLARE
  r record;
  d record;
  snap jsonb := ${snap}::jsonb;
  v numeric;
  m numeric;
  cur numeric;
BEGIN
  FOR r IN
    SELECT c.oid AS seq, n.nspname, c.relname, s.seqincrement > 0 AS up, s.seqmin, s.seqmax
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
    WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema', '${CURSOR_SCHEMA}')
  LOOP
    v := (snap ->> (r.nspname || '.' || r.relname))::numeric;
    FOR d IN
      SELECT a.attrelid AS tbl, a.attname
      FROM pg_catalog.pg_depend dep
      JOIN pg_catalog.pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
      WHERE dep.classid = 'pg_catalog.pg_class'::regclass AND dep.objid = r.seq
        AND dep.refclassid = 'pg_catalog.pg_class'::regclass AND dep.deptype IN ('a', 'i') AND dep.refobjsubid > 0
        AND a.atttypid IN (20, 21, 23) AND NOT a.attisdropped
      UNION
      SELECT a.attrelid, a.attname
      FROM pg_catalog.pg_depend dep
      JOIN pg_catalog.pg_attrdef ad ON ad.oid = dep.objid
      JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
      WHERE dep.classid = 'pg_catalog.pg_attrdef'::regclass AND dep.refclassid = 'pg_catalog.pg_class'::regclass
        AND dep.refobjid = r.seq AND dep.deptype = 'n'
        AND a.atttypid IN (20, 21, 23) AND NOT a.attisdropped
    LOOP
      -- Tables only: max() over a view would run the view's query (a user's functions) as the
      -- restore's superuser.
      CONTINUE WHEN (SELECT c2.relkind FROM pg_catalog.pg_class c2 WHERE c2.oid = d.tbl) NOT IN ('r', 'p');
      EXECUTE format('SELECT %s(%I)::numeric FROM %s', CASE WHEN r.up THEN 'max' ELSE 'min' END, d.attname, d.tbl::regclass) INTO m;
      v := CASE WHEN r.up THEN greatest(v, m) ELSE least(v, m) END;
    END LOOP;
    v := greatest(least(v, r.seqmax), r.seqmin);
    EXECUTE format('SELECT CASE WHEN is_called THEN last_value END::numeric FROM %s', r.seq::regclass) INTO cur;
    IF v IS NOT NULL AND (cur IS NULL OR (r.up AND v > cur) OR (NOT r.up AND v < cur)) THEN
      PERFORM pg_catalog.setval(r.seq, v::bigint, true);
    END IF;
  END LOOP;
END
`;
  // The body holds sequence names (in the snapshot literal): a dollar-quote tag that occurs in it
  // would end the quote early (a sequence named x$cdp$y). Use a tag the body does not contain.
  let tag = '$cdp$';
  for (let i = 1; body.includes(tag); i++) tag = `$cdp${i}$`;
  return `DO ${tag}${body}${tag};\n`;
}
