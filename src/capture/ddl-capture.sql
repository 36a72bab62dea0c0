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
-- the prefix 'cdp.ddl'. Ours are signed with HMAC-SHA256 under a key kept in katya_cdp.secret,
-- which only the role that ran setup can read; capture verifies every 'cdp.ddl' message and drops,
-- logs and counts any other. The signing code has no entry point a user can call: it is the body
-- of event trigger functions (PostgreSQL refuses to call those other than as triggers), running
-- SECURITY DEFINER. Triggers of one event fire in name order (docs 40.1), so for ddl_command_end:
--   katya_cdp_ddl_command_a        invoker's rights: hands current_user and the search_path the
--                                  caller's session resolved to (a SECURITY DEFINER function sees
--                                  its owner there) to katya_cdp.note_invoker, which keeps them
--                                  for the command only if session_user may act as that role.
--                                  Calling note_invoker by hand gains nothing: it can name only a
--                                  role the caller could SET ROLE to anyway.
--   katya_cdp_ddl_command_end      SECURITY DEFINER: builds, signs and emits the message.
--   katya_cdp_ddl_command_keyless  invoker's rights: REPLICA IDENTITY FULL for new keyless tables.
-- sql_drop and table_rewrite triggers (SECURITY DEFINER) note what the command dropped or rewrote.
-- State between them lives in katya_cdp.ddl_state, which no other role can read or write (custom
-- GUCs would not do: any user can set katya_cdp.* variables).
-- SECURITY DEFINER functions run with search_path = pg_catalog, pg_temp: pg_temp last, so a
-- temporary type or table cannot shadow a catalog one (functions and operators are never looked up
-- in pg_temp). Operators are written OPERATOR(pg_catalog.=) where a caller's path applies.
--
-- Message content (v2): {"b64": base64(UTF-8 body), "mac": hex HMAC-SHA256(key, UTF-8 body)}, so
-- the content is ASCII whatever the database encoding. The body (JSON):
--   v              2
--   serverVersion  server_version_num (which statements fire DDL events differs by major)
--   command        current_query(): the client's whole query string (restore parses it with the
--                  PostgreSQL parser and runs only the statement this event belongs to)
--   tag            the command tag (CREATE TABLE, ALTER TABLE, ...)
--   seq            1-based ordinal of this event among the top-level DDL events of this execution
--                  of the query string (backend pid + statement_timestamp() + md5 of the text);
--                  nested and extension-script events do not count
--   nested         true when the command ran inside a function, procedure or DO block
--   context        nested only: PG_CONTEXT below the trigger's own frame (PL/pgSQL puts the inner
--                  statement text there: SQL statement "...")
--   inExtension    every object belongs to an extension being created or updated (replayed by the
--                  CREATE / ALTER EXTENSION event itself)
--   role           current_user when the command ran (session_user when that could not be vouched for)
--   roleVerified   role came from the invoker trigger and session_user may act as it
--   sessionUser    session_user
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
-- No backslash in a plain literal: PL/pgSQL compiles a body under the session's
-- standard_conforming_strings, which may be off.

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

-- Per-backend state between the event triggers of one transaction. UNLOGGED: nothing to keep
-- across a crash; rows written by a transaction that aborts vanish with it.
DROP TABLE IF EXISTS katya_cdp.ddl_state;
CREATE UNLOGGED TABLE katya_cdp.ddl_state (
  pid int PRIMARY KEY,
  qkey text,
  n int NOT NULL DEFAULT 0,
  dropped jsonb NOT NULL DEFAULT '[]',
  rewrites jsonb NOT NULL DEFAULT '[]',
  inv_role text,
  inv_search_path text
);
REVOKE ALL ON katya_cdp.ddl_state FROM PUBLIC;

-- What setup configured that the triggers need to know (readable by every role: the keyless
-- trigger runs with the caller's rights). Keys: publication, newKeylessTables ('full'|'leave').
CREATE TABLE IF NOT EXISTS katya_cdp.config (key text PRIMARY KEY, value text NOT NULL);
REVOKE ALL ON katya_cdp.config FROM PUBLIC;
GRANT SELECT ON katya_cdp.config TO PUBLIC;

-- Functions of earlier versions.
DROP FUNCTION IF EXISTS katya_cdp.emit_ddl(jsonb);
DROP FUNCTION IF EXISTS katya_cdp.emit_ddl(text, text, text);
DROP FUNCTION IF EXISTS katya_cdp.note_dropped();
DROP FUNCTION IF EXISTS katya_cdp.note_rewrite();

CREATE OR REPLACE FUNCTION katya_cdp.superuser() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) pg_catalog.session_user()), false)
$fn$;

CREATE OR REPLACE FUNCTION katya_cdp.skipping() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT COALESCE(pg_catalog.current_setting('katya_cdp.skip', true) OPERATOR(pg_catalog.=) 'on', false) AND katya_cdp.superuser()
$fn$;

CREATE OR REPLACE FUNCTION katya_cdp.note_invoker(claimed_role pg_catalog.text, search_path pg_catalog.text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  ok pg_catalog.bool;
BEGIN
  -- Raises unless a DDL command is running.
  PERFORM 1 FROM pg_catalog.pg_event_trigger_ddl_commands() LIMIT 1;
  ok := claimed_role IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = claimed_role)
    AND (katya_cdp.superuser() OR pg_catalog.pg_has_role(pg_catalog.session_user(), claimed_role, 'MEMBER'));
  INSERT INTO katya_cdp.ddl_state AS s (pid, inv_role, inv_search_path)
    VALUES (pg_catalog.pg_backend_pid(), CASE WHEN ok THEN claimed_role END, search_path)
    ON CONFLICT (pid) DO UPDATE SET inv_role = EXCLUDED.inv_role, inv_search_path = EXCLUDED.inv_search_path;
END
$fn$;
REVOKE ALL ON FUNCTION katya_cdp.note_invoker(pg_catalog.text, pg_catalog.text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION katya_cdp.note_invoker(pg_catalog.text, pg_catalog.text) TO PUBLIC;

CREATE OR REPLACE FUNCTION katya_cdp.on_ddl_invoker() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  -- Invoker's rights here: current_user and "$user" in the search_path are the caller's.
  sp pg_catalog.text := COALESCE(NULLIF(pg_catalog.array_to_string(ARRAY(
    SELECT pg_catalog.quote_ident(s) FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) AS s), ', '), ''), 'pg_catalog');
BEGIN
  IF katya_cdp.skipping() THEN
    RETURN;
  END IF;
  PERFORM katya_cdp.note_invoker(current_user::pg_catalog.text, sp);
END
$fn$;

CREATE OR REPLACE FUNCTION katya_cdp.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  d pg_catalog.jsonb;
BEGIN
  IF katya_cdp.skipping() THEN
    RETURN;
  END IF;
  SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'objectType', o.object_type, 'schema', o.schema_name, 'name', o.object_name,
           'identity', o.object_identity, 'original', o.original, 'temporary', o.is_temporary)),
         '[]'::pg_catalog.jsonb)
    INTO d
    FROM pg_catalog.pg_event_trigger_dropped_objects() AS o;
  INSERT INTO katya_cdp.ddl_state AS s (pid, dropped) VALUES (pg_catalog.pg_backend_pid(), d)
    ON CONFLICT (pid) DO UPDATE SET dropped = s.dropped || EXCLUDED.dropped;
END
$fn$;

CREATE OR REPLACE FUNCTION katya_cdp.on_table_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  rel pg_catalog.oid := pg_catalog.pg_event_trigger_table_rewrite_oid();
  ident pg_catalog.text;
  had pg_catalog.bool;
BEGIN
  IF katya_cdp.skipping() THEN
    RETURN;
  END IF;
  SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO ident
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
  EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %s)', ident) INTO had;
  INSERT INTO katya_cdp.ddl_state AS s (pid, rewrites)
    VALUES (pg_catalog.pg_backend_pid(), pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
      'table', ident, 'reason', pg_catalog.pg_event_trigger_table_rewrite_reason(), 'hadRows', had)))
    ON CONFLICT (pid) DO UPDATE SET rewrites = s.rewrites || EXCLUDED.rewrites;
END
$fn$;

CREATE OR REPLACE FUNCTION katya_cdp.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  q pg_catalog.text := pg_catalog.current_query();
  qk pg_catalog.text := pg_catalog.md5(COALESCE(pg_catalog.current_query(), '')) || '@' || pg_catalog.statement_timestamp()::pg_catalog.text;
  ctx pg_catalog.text;
  frames pg_catalog.text[];
  is_nested pg_catalog.bool;
  in_ext pg_catalog.bool;
  objects pg_catalog.jsonb;
  missing pg_catalog.jsonb := '[]'::pg_catalog.jsonb;
  st record;
  base pg_catalog.int4;
  ord pg_catalog.int4 := NULL;
  settings pg_catalog.jsonb;
  body pg_catalog.text;
  raw pg_catalog.bytea;
  k record;
BEGIN
  IF katya_cdp.skipping() THEN
    RETURN;
  END IF;
  GET DIAGNOSTICS ctx = PG_CONTEXT;
  -- Frame 1 is this function; anything below it is a function, procedure or DO block that ran
  -- the command.
  frames := pg_catalog.regexp_split_to_array(ctx, E'\n');
  is_nested := pg_catalog.array_length(frames, 1) > 1;
  SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'objectType', c.object_type, 'schema', c.schema_name, 'identity', c.object_identity,
           'commandTag', c.command_tag, 'inExtension', c.in_extension)),
         '[]'::pg_catalog.jsonb),
         COALESCE(pg_catalog.bool_and(c.in_extension), false)
    INTO objects, in_ext
    FROM pg_catalog.pg_event_trigger_ddl_commands() AS c;
  in_ext := in_ext AND tg_tag NOT IN ('CREATE EXTENSION', 'ALTER EXTENSION');
  IF tg_tag = 'ALTER TABLE' THEN
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
             'table', pg_catalog.format('%I.%I', ns.nspname, cl.relname), 'column', a.attname, 'value', a.attmissingval::pg_catalog.text)), '[]'::pg_catalog.jsonb)
      INTO missing
      FROM pg_catalog.pg_attribute a
      JOIN pg_catalog.pg_class cl ON cl.oid = a.attrelid
      JOIN pg_catalog.pg_namespace ns ON ns.oid = cl.relnamespace
     WHERE a.atthasmissing AND NOT a.attisdropped
       AND a.attrelid IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() AS c WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass);
  END IF;
  -- This command's state: who ran it (the invoker trigger), what sql_drop and table_rewrite
  -- noted, and the ordinal counter of the query string being run.
  SELECT s.qkey, s.n, s.dropped, s.rewrites, s.inv_role, s.inv_search_path INTO st FROM katya_cdp.ddl_state s WHERE s.pid = pg_catalog.pg_backend_pid();
  base := CASE WHEN st.qkey IS NOT DISTINCT FROM qk THEN COALESCE(st.n, 0) ELSE 0 END;
  IF NOT is_nested AND NOT in_ext THEN
    ord := base + 1;
  END IF;
  INSERT INTO katya_cdp.ddl_state AS s (pid, qkey, n) VALUES (pg_catalog.pg_backend_pid(), qk, COALESCE(ord, base))
    ON CONFLICT (pid) DO UPDATE SET qkey = EXCLUDED.qkey, n = EXCLUDED.n, dropped = '[]', rewrites = '[]', inv_role = NULL, inv_search_path = NULL;
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
  body := pg_catalog.jsonb_build_object(
    'v', 2,
    'serverVersion', pg_catalog.current_setting('server_version_num')::pg_catalog.int4,
    'command', q,
    'tag', tg_tag,
    'seq', ord,
    'nested', is_nested,
    'context', CASE WHEN is_nested THEN pg_catalog.array_to_string(frames[2:], E'\n') END,
    'inExtension', in_ext,
    'role', COALESCE(st.inv_role, pg_catalog.session_user()::pg_catalog.text),
    'roleVerified', st.inv_role IS NOT NULL,
    'sessionUser', pg_catalog.session_user()::pg_catalog.text,
    'searchPath', COALESCE(st.inv_search_path, 'pg_catalog'),
    'settings', settings,
    'objects', objects,
    'dropped', COALESCE(st.dropped, '[]'::pg_catalog.jsonb),
    'rewrites', COALESCE(st.rewrites, '[]'::pg_catalog.jsonb),
    'missing', missing)::pg_catalog.text;
  raw := pg_catalog.convert_to(body, 'UTF8');
  SELECT s.ikey, s.okey INTO k FROM katya_cdp.secret s WHERE s.id = 1;
  PERFORM pg_catalog.pg_logical_emit_message(true, 'cdp.ddl', pg_catalog.jsonb_build_object(
    'b64', pg_catalog.translate(pg_catalog.encode(raw, 'base64'), E'\n', ''),
    'mac', CASE WHEN k.ikey IS NULL THEN NULL ELSE
      pg_catalog.encode(pg_catalog.sha256(k.okey || pg_catalog.sha256(k.ikey || raw)), 'hex') END)::pg_catalog.text);
END
$fn$;

-- A table created without a primary key or replica identity, once published (FOR ALL TABLES or
-- its schema), makes its UPDATE and DELETE fail on the source ("cannot update table ... because
-- it does not have a replica identity and publishes updates"). With newKeylessTables = 'full',
-- such a table gets REPLICA IDENTITY FULL as it is created: a backup tool must never make the
-- source's writes fail. Runs as the caller, who owns the new table. The ALTER is itself captured
-- (a nested event, after the CREATE's own) and replayed.
CREATE OR REPLACE FUNCTION katya_cdp.on_ddl_keyless() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  r record;
BEGIN
  IF katya_cdp.skipping() OR tg_tag NOT IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
     OR COALESCE((SELECT c.value FROM katya_cdp.config c WHERE c.key OPERATOR(pg_catalog.=) 'newKeylessTables'), 'leave') OPERATOR(pg_catalog.<>) 'full' THEN
    RETURN;
  END IF;
  FOR r IN
    SELECT DISTINCT pg_catalog.format('%I.%I', ns.nspname, cl.relname) AS ident
      FROM pg_catalog.pg_event_trigger_ddl_commands() AS d
      JOIN pg_catalog.pg_class cl ON cl.oid OPERATOR(pg_catalog.=) d.objid AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
      JOIN pg_catalog.pg_namespace ns ON ns.oid OPERATOR(pg_catalog.=) cl.relnamespace
     WHERE cl.relkind OPERATOR(pg_catalog.=) 'r' AND cl.relpersistence OPERATOR(pg_catalog.=) 'p'
       AND (cl.relreplident OPERATOR(pg_catalog.=) 'n'
            OR (cl.relreplident OPERATOR(pg_catalog.=) 'd' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) cl.oid AND i.indisprimary)))
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt, katya_cdp.config c
                    WHERE c.key OPERATOR(pg_catalog.=) 'publication' AND pt.pubname OPERATOR(pg_catalog.=) c.value
                      AND pt.schemaname OPERATOR(pg_catalog.=) ns.nspname AND pt.tablename OPERATOR(pg_catalog.=) cl.relname)
  LOOP
    EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY FULL', r.ident);
  END LOOP;
END
$fn$;

DROP FUNCTION IF EXISTS katya_cdp.protect_new_tables();
