-- Katya CDP: DDL capture, installed by `cdp setup` (idempotent: CREATE OR REPLACE; the event
-- triggers themselves are created by setup only when missing).
--
-- Logical decoding does not carry DDL (PostgreSQL docs 31.6 "Logical Replication - Restrictions":
-- "The database schema and DDL commands are not replicated"). An event trigger at
-- ddl_command_end writes a description of each command into the WAL with
-- pg_logical_emit_message(true, 'cdp.ddl', ...): a transactional message is decoded inside the
-- transaction, at its position among the row changes, so restore replays the command exactly where
-- it happened.
--
-- Authenticity. pg_logical_emit_message is executable by PUBLIC: any user can write a message with
-- the prefix 'cdp.ddl'. Ours are signed: katya_cdp.emit_ddl (SECURITY DEFINER, owned by the role
-- that ran setup) computes HMAC-SHA256 over the message body with a key kept in katya_cdp.secret,
-- which no other role can read. Capture (which reads the key at start) verifies every 'cdp.ddl'
-- message and drops, logs and counts any other. emit_ddl only runs while a DDL command is running
-- (pg_event_trigger_ddl_commands() raises otherwise) and only for the query actually running
-- (current_query()); the role the payload claims is checked against session_user's memberships.
--
-- Message content (v2): {"body": "<JSON text>", "mac": "<hex HMAC-SHA256(key, body)>"}; body:
--   v              2
--   command        current_query(): the client's whole query string (restore parses it with the
--                  PostgreSQL parser and runs only the statement this event belongs to)
--   tag            the command tag (CREATE TABLE, ALTER TABLE, ...)
--   seq            1-based ordinal of this event among the top-level DDL events of this execution
--                  of the query string (statement_timestamp() + md5 of the text); nested and
--                  extension-script events do not count
--   nested         true when the command ran inside a function, procedure or DO block
--   context        nested only: PG_CONTEXT below the trigger's own frame (PL/pgSQL puts the inner
--                  statement text there: SQL statement "...")
--   inExtension    every object belongs to an extension being created or updated (replayed by the
--                  CREATE / ALTER EXTENSION event itself)
--   role           current_user when the command ran; roleVerified: session_user may act as it
--   sessionUser    session_user (read by the SECURITY DEFINER function, not claimable)
--   searchPath     the schemas the search_path resolved to (current_schemas(false), quoted)
--   settings       the session settings that change how DDL text parses or evaluates
--   objects        pg_event_trigger_ddl_commands()
--   dropped        pg_event_trigger_dropped_objects() (sql_drop fires before ddl_command_end)
--   rewrites       table_rewrite events of this command: {table, reason, hadRows}
--   missing        ALTER TABLE: the tables' columns with a "missing value" (pg_attribute
--                  attmissingval: the value rows that existed got from ADD COLUMN ... DEFAULT with a
--                  non-volatile expression such as now()), so restore gives the same rows the same
--                  value instead of re-evaluating the default at restore time
--
-- katya_cdp.skip = on (set by setup around its own statements) is honoured only for superusers:
-- an ordinary user cannot hide DDL from capture.
-- Every name is qualified with pg_catalog so the caller's search_path cannot redirect a call.

CREATE SCHEMA IF NOT EXISTS katya_cdp;

COMMENT ON SCHEMA katya_cdp IS 'Katya CDP: DDL capture functions (cdp setup). Dropping it stops DDL capture.';

REVOKE ALL ON SCHEMA katya_cdp FROM PUBLIC;
GRANT USAGE ON SCHEMA katya_cdp TO PUBLIC;

-- HMAC key, as the two padded keys of RFC 2104 (key XOR ipad, key XOR opad; 64 bytes each), so
-- that SQL needs only sha256(). Filled by setup. Readable by its owner (the setup role) only.
CREATE TABLE IF NOT EXISTS katya_cdp.secret (
  id int PRIMARY KEY CHECK (id = 1),
  ikey bytea NOT NULL,
  okey bytea NOT NULL,
  created timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON katya_cdp.secret FROM PUBLIC;

CREATE OR REPLACE FUNCTION katya_cdp.superuser() RETURNS boolean
LANGUAGE sql STABLE AS $fn$
  SELECT COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = pg_catalog.session_user()), false)
$fn$;

CREATE OR REPLACE FUNCTION katya_cdp.skipping() RETURNS boolean
LANGUAGE sql STABLE AS $fn$
  SELECT pg_catalog.current_setting('katya_cdp.skip', true) = 'on' AND katya_cdp.superuser()
$fn$;

CREATE OR REPLACE FUNCTION katya_cdp.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  dropped jsonb;
BEGIN
  IF katya_cdp.skipping() THEN
    RETURN;
  END IF;
  SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'objectType', d.object_type, 'schema', d.schema_name, 'name', d.object_name,
           'identity', d.object_identity, 'original', d.original, 'temporary', d.is_temporary)),
         '[]'::jsonb)
    INTO dropped
    FROM pg_catalog.pg_event_trigger_dropped_objects() AS d;
  -- Transaction-local (is_local = true); on_ddl_command_end reads and clears it.
  PERFORM pg_catalog.set_config('katya_cdp.dropped', dropped::text, true);
END
$fn$;

CREATE OR REPLACE FUNCTION katya_cdp.on_table_rewrite() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  rel oid := pg_catalog.pg_event_trigger_table_rewrite_oid();
  had boolean;
  acc jsonb;
BEGIN
  IF katya_cdp.skipping() THEN
    RETURN;
  END IF;
  EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %s)', rel::pg_catalog.regclass) INTO had;
  acc := COALESCE(NULLIF(pg_catalog.current_setting('katya_cdp.rewrites', true), '')::jsonb, '[]'::jsonb);
  acc := acc || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'table', rel::pg_catalog.regclass::text,
    'reason', pg_catalog.pg_event_trigger_table_rewrite_reason(),
    'hadRows', had));
  PERFORM pg_catalog.set_config('katya_cdp.rewrites', acc::text, true);
END
$fn$;

CREATE OR REPLACE FUNCTION katya_cdp.emit_ddl(payload jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
  k record;
  body text;
  claimed text := payload ->> 'role';
  verified boolean;
BEGIN
  -- Raises "can only be called in an event trigger function" unless a DDL command is running.
  PERFORM 1 FROM pg_catalog.pg_event_trigger_ddl_commands() LIMIT 1;
  IF (payload ->> 'command') IS DISTINCT FROM pg_catalog.current_query() THEN
    RAISE EXCEPTION 'katya_cdp.emit_ddl: the payload does not describe the running query';
  END IF;
  verified := claimed IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = claimed)
    AND (katya_cdp.superuser() OR pg_catalog.pg_has_role(pg_catalog.session_user(), claimed, 'MEMBER'));
  body := (payload || pg_catalog.jsonb_build_object('v', 2, 'sessionUser', pg_catalog.session_user()::text, 'roleVerified', verified))::text;
  SELECT s.ikey, s.okey INTO k FROM katya_cdp.secret s WHERE s.id = 1;
  PERFORM pg_catalog.pg_logical_emit_message(true, 'cdp.ddl', pg_catalog.jsonb_build_object(
    'body', body,
    'mac', CASE WHEN k.ikey IS NULL THEN NULL ELSE
      pg_catalog.encode(pg_catalog.sha256(k.okey || pg_catalog.sha256(k.ikey || pg_catalog.convert_to(body, 'UTF8'))), 'hex') END)::text);
END
$fn$;

REVOKE ALL ON FUNCTION katya_cdp.emit_ddl(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION katya_cdp.emit_ddl(jsonb) TO PUBLIC;

CREATE OR REPLACE FUNCTION katya_cdp.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  q text := pg_catalog.current_query();
  qkey text := pg_catalog.md5(COALESCE(pg_catalog.current_query(), '')) || '@' || pg_catalog.statement_timestamp()::text;
  ctx text;
  frames text[];
  is_nested boolean;
  in_ext boolean;
  objects jsonb;
  dropped text;
  rewrites text;
  missing jsonb := '[]'::jsonb;
  prev text;
  n int := 0;
  settings jsonb;
BEGIN
  IF katya_cdp.skipping() THEN
    RETURN;
  END IF;
  GET DIAGNOSTICS ctx = PG_CONTEXT;
  -- The first frame is this function; anything below it is a function, procedure or DO block
  -- that ran the command.
  frames := pg_catalog.regexp_split_to_array(ctx, E'\n');
  is_nested := pg_catalog.array_length(frames, 1) > 1;
  SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'objectType', c.object_type, 'schema', c.schema_name, 'identity', c.object_identity,
           'commandTag', c.command_tag, 'inExtension', c.in_extension)),
         '[]'::jsonb),
         COALESCE(pg_catalog.bool_and(c.in_extension), false)
    INTO objects, in_ext
    FROM pg_catalog.pg_event_trigger_ddl_commands() AS c;
  in_ext := in_ext AND tg_tag NOT IN ('CREATE EXTENSION', 'ALTER EXTENSION');
  IF tg_tag = 'ALTER TABLE' THEN
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
             'table', a.attrelid::pg_catalog.regclass::text, 'column', a.attname, 'value', a.attmissingval::text)), '[]'::jsonb)
      INTO missing
      FROM pg_catalog.pg_attribute a
     WHERE a.atthasmissing AND NOT a.attisdropped
       AND a.attrelid IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() AS c WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass);
  END IF;
  dropped := NULLIF(pg_catalog.current_setting('katya_cdp.dropped', true), '');
  PERFORM pg_catalog.set_config('katya_cdp.dropped', '', true);
  rewrites := NULLIF(pg_catalog.current_setting('katya_cdp.rewrites', true), '');
  PERFORM pg_catalog.set_config('katya_cdp.rewrites', '', true);
  IF NOT is_nested AND NOT in_ext THEN
    prev := pg_catalog.current_setting('katya_cdp.last_query', true);
    IF prev IS NOT NULL AND pg_catalog.split_part(prev, '#', 1) = qkey THEN
      n := pg_catalog.split_part(prev, '#', 2)::int;
    END IF;
    n := n + 1;
    PERFORM pg_catalog.set_config('katya_cdp.last_query', qkey || '#' || n, true);
  END IF;
  settings := pg_catalog.jsonb_build_object(
    'standard_conforming_strings', pg_catalog.current_setting('standard_conforming_strings'),
    'backslash_quote', pg_catalog.current_setting('backslash_quote'),
    'TimeZone', pg_catalog.current_setting('TimeZone'),
    'DateStyle', pg_catalog.current_setting('DateStyle'),
    'IntervalStyle', pg_catalog.current_setting('IntervalStyle'),
    'extra_float_digits', pg_catalog.current_setting('extra_float_digits'),
    'array_nulls', pg_catalog.current_setting('array_nulls'),
    'transform_null_equals', pg_catalog.current_setting('transform_null_equals'),
    'xmloption', pg_catalog.current_setting('xmloption'),
    'xmlbinary', pg_catalog.current_setting('xmlbinary'),
    'lc_monetary', pg_catalog.current_setting('lc_monetary'),
    'lc_numeric', pg_catalog.current_setting('lc_numeric'),
    'lc_time', pg_catalog.current_setting('lc_time'),
    'default_tablespace', pg_catalog.current_setting('default_tablespace'),
    'default_table_access_method', pg_catalog.current_setting('default_table_access_method'),
    'default_toast_compression', pg_catalog.current_setting('default_toast_compression'),
    'check_function_bodies', pg_catalog.current_setting('check_function_bodies'));
  PERFORM katya_cdp.emit_ddl(pg_catalog.jsonb_build_object(
    'command', q,
    'tag', tg_tag,
    'seq', CASE WHEN is_nested OR in_ext THEN NULL ELSE n END,
    'nested', is_nested,
    'context', CASE WHEN is_nested THEN pg_catalog.array_to_string(frames[2:], E'\n') END,
    'inExtension', in_ext,
    'role', current_user::text,
    'searchPath', COALESCE(NULLIF(pg_catalog.array_to_string(ARRAY(
                    SELECT pg_catalog.quote_ident(s) FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) AS s), ', '), ''),
                  'pg_catalog'),
    'settings', settings,
    'objects', objects,
    'dropped', COALESCE(dropped::jsonb, '[]'::jsonb),
    'rewrites', COALESCE(rewrites::jsonb, '[]'::jsonb),
    'missing', missing));
END
$fn$;
