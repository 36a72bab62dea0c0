-- Katya CDP: DDL capture, installed by `cdp setup` (idempotent: CREATE OR REPLACE; the event
-- triggers themselves are created by setup only when missing).
--
-- Logical decoding does not carry DDL (PostgreSQL docs 31.6 "Logical Replication - Restrictions":
-- "The database schema and DDL commands are not replicated"). An event trigger at
-- ddl_command_end writes the command text into the WAL with
-- pg_logical_emit_message(true, 'cdp.ddl', json): a transactional message is decoded inside the
-- transaction, at its position among the row changes (docs 9.27.6 "Replication Management
-- Functions"), so restore can replay the command exactly where it happened.
--
-- Content JSON: {command, tag, searchPath, objects, dropped, repeatOfPrevious}
--   command           current_query(): the client's whole statement text
--   tag               the command tag (CREATE TABLE, ALTER TABLE, ...)
--   searchPath        the schemas the session's search_path resolved to when the command ran
--                     (current_schemas(false), each quote_ident'ed, comma-separated), for
--                     replaying unqualified names. Resolved, not the setting's text: "$user"
--                     would otherwise be resolved on replay as the RESTORE role (CREATE TABLE
--                     orders by role app, schema app existing, must land in app.orders).
--                     'pg_catalog' when nothing resolved (unqualified creation fails on both
--                     sides alike), never empty: restore sets it before every DDL command.
--   objects           pg_event_trigger_ddl_commands()
--   dropped           pg_event_trigger_dropped_objects(), collected by the sql_drop trigger
--                     (sql_drop fires before ddl_command_end of the same command: docs 40.1)
--   repeatOfPrevious  true when the previous DDL event of this transaction had the same command
--                     text: a multi-statement query string or a DO block running several DDL
--                     commands fires once per command but current_query() is the whole text,
--                     which must be replayed once.
--
-- Setup's own statements set katya_cdp.skip = on locally so they are not captured.
-- No SECURITY DEFINER and no SET clause: current_schemas(false) must be the caller's.
-- Every name is qualified with pg_catalog so the caller's search_path cannot redirect a call.

CREATE SCHEMA IF NOT EXISTS katya_cdp;

COMMENT ON SCHEMA katya_cdp IS 'Katya CDP: DDL capture functions (cdp setup). Dropping it stops DDL capture.';

CREATE OR REPLACE FUNCTION katya_cdp.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  dropped jsonb;
BEGIN
  IF pg_catalog.current_setting('katya_cdp.skip', true) = 'on' THEN
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

CREATE OR REPLACE FUNCTION katya_cdp.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  q text := pg_catalog.current_query();
  qhash text := pg_catalog.md5(COALESCE(pg_catalog.current_query(), ''));
  objects jsonb;
  dropped text;
  previous text;
BEGIN
  IF pg_catalog.current_setting('katya_cdp.skip', true) = 'on' THEN
    RETURN;
  END IF;
  SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'objectType', c.object_type, 'schema', c.schema_name, 'identity', c.object_identity,
           'commandTag', c.command_tag, 'inExtension', c.in_extension)),
         '[]'::jsonb)
    INTO objects
    FROM pg_catalog.pg_event_trigger_ddl_commands() AS c;
  dropped := NULLIF(pg_catalog.current_setting('katya_cdp.dropped', true), '');
  PERFORM pg_catalog.set_config('katya_cdp.dropped', '', true);
  previous := pg_catalog.current_setting('katya_cdp.last_query', true);
  PERFORM pg_catalog.set_config('katya_cdp.last_query', qhash, true);
  PERFORM pg_catalog.pg_logical_emit_message(true, 'cdp.ddl', pg_catalog.jsonb_build_object(
    'command', q,
    'tag', tg_tag,
    'searchPath', COALESCE(NULLIF(pg_catalog.array_to_string(ARRAY(
                    SELECT pg_catalog.quote_ident(s) FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) AS s), ', '), ''),
                  'pg_catalog'),
    'objects', objects,
    'dropped', COALESCE(dropped::jsonb, '[]'::jsonb),
    'repeatOfPrevious', previous IS NOT DISTINCT FROM qhash)::text);
END
$fn$;
