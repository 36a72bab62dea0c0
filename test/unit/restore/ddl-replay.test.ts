import { beforeAll, describe, expect, it } from 'vitest';
import { blankLiterals, ddlReplaySql, innerStatement, loadParser, planDdl, splitStatements, type DdlContent } from '../../../src/restore/ddl-replay.js';
import { CdpError } from '../../../src/errors.js';

const at = { commitLsn: 0x1000, xid: 742, position: 3 };
const v2 = (c: Partial<DdlContent>): DdlContent => ({
  v: 2,
  command: '',
  tag: 'CREATE TABLE',
  seq: 1,
  role: 'app',
  roleVerified: true,
  sessionUser: 'app',
  searchPath: 'public',
  settings: { standard_conforming_strings: 'on' },
  ...c,
});

/** The statement a replay runs, decoded from its base64 DO block. */
function statementOf(sql: string): string | undefined {
  const m = /(?:cdp_as\(|EXECUTE )pg_catalog\.convert_from\(pg_catalog\.decode\('([A-Za-z0-9+/=]*)', 'base64'\)/.exec(sql);
  return m ? Buffer.from(m[1]!, 'base64').toString('utf8') : undefined;
}

beforeAll(async () => {
  await loadParser();
});

describe('splitting a query string with the PostgreSQL parser', () => {
  it('finds statements by byte location, whatever the characters before them', () => {
    const s = splitStatements(`SELECT 'é'; CREATE TABLE z (a int); INSERT INTO z VALUES (1)`, false);
    expect(s.map((x) => x.text)).toEqual([`SELECT 'é'`, 'CREATE TABLE z (a int)', 'INSERT INTO z VALUES (1)']);
  });
  it('keeps a SQL-standard function body (semicolons inside BEGIN ATOMIC) as one statement', () => {
    const s = splitStatements(`CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC; SELECT 1; END; CREATE TABLE y ()`, false);
    expect(s).toHaveLength(2);
    expect(s[1]!.text).toBe('CREATE TABLE y ()');
  });
  it('under standard_conforming_strings = off, a backslash-escaped quote does not end the literal', () => {
    const q = `COMMENT ON TABLE t IS 'it\\'s; DROP TABLE t; --'; CREATE TABLE after_it ()`;
    expect(blankLiterals(Buffer.from(q)).toString()).toBe(`COMMENT ON TABLE t IS 'xxxxxxxxxxxxxxxxxxxxxxx'; CREATE TABLE after_it ()`);
    const s = splitStatements(q, true);
    expect(s.map((x) => x.text)).toEqual([`COMMENT ON TABLE t IS 'it\\'s; DROP TABLE t; --'`, 'CREATE TABLE after_it ()']);
  });
  it('reads the inner statement of a nested event from PL/pgSQL context', () => {
    expect(innerStatement('SQL statement "CREATE TABLE c (z int)"\nPL/pgSQL function inline_code_block line 1 at SQL statement')).toBe(
      'CREATE TABLE c (z int)',
    );
    expect(innerStatement('SQL function "mk" statement 1')).toBeUndefined();
  });
});

describe('planning one DDL event', () => {
  it('runs only the seq-th DDL statement of the query string, never its DML or DO blocks', () => {
    const command = `CREATE TABLE s (id int); INSERT INTO s VALUES (1); DO $$ BEGIN PERFORM 1; END $$; ALTER TABLE s ADD w int; UPDATE s SET w = 1`;
    expect(statementOf(ddlReplaySql(planDdl(v2({ command, seq: 1 }), at)))).toBe('CREATE TABLE s (id int)');
    expect(statementOf(ddlReplaySql(planDdl(v2({ command, seq: 2, tag: 'ALTER TABLE' }), at)))).toBe('ALTER TABLE s ADD w int');
  });
  it('refuses, loudly, a statement that is not of the event tag, or a seq past the DDL statements', () => {
    expect(() => planDdl(v2({ command: 'CREATE TABLE a (); DROP TABLE b', seq: 2, tag: 'ALTER TABLE' }), at)).toThrow(/is not a ALTER TABLE/);
    expect(() => planDdl(v2({ command: 'CREATE TABLE a ()', seq: 2 }), at)).toThrow(/holds 1 DDL statement/);
    expect(() => planDdl(v2({ command: 'CREATE TABL a ()', seq: 1 }), at)).toThrow(/does not parse/);
  });
  it('runs a nested event as its inner statement, and stops on one whose text PostgreSQL does not report', () => {
    const c = v2({
      command: 'DO $$ BEGIN CREATE TABLE c (z int); PERFORM pg_sleep(0); END $$',
      nested: true,
      seq: null,
      context: 'SQL statement "CREATE TABLE c (z int)"\nPL/pgSQL function inline_code_block line 1 at SQL statement',
    });
    expect(statementOf(ddlReplaySql(planDdl(c, at)))).toBe('CREATE TABLE c (z int)');
    expect(() => planDdl(v2({ command: 'SELECT mk()', nested: true, seq: null, context: 'SQL function "mk" statement 1' }), at)).toThrow(CdpError);
  });
  it('skips the commands of an extension script (CREATE EXTENSION replays them)', () => {
    expect(ddlReplaySql(planDdl(v2({ command: 'CREATE EXTENSION pg_trgm', tag: 'CREATE FUNCTION', inExtension: true, seq: null }), at))).toBe('');
  });
  it('runs as the role, with the settings, and returns to the session state; the text never appears as SQL', () => {
    const sql = ddlReplaySql(
      planDdl(v2({ command: "COMMENT ON TABLE t IS 'it\\'s'", tag: 'COMMENT', settings: { standard_conforming_strings: 'off', TimeZone: 'Asia/Tokyo' } }), at),
    );
    // A SECURITY DEFINER function owned by the role runs it: code inside cannot RESET ROLE. It is
    // made again right before the call and discarded right after (its owner could replace it).
    expect(sql).toContain('CREATE OR REPLACE FUNCTION pg_temp.cdp_as(q pg_catalog.text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER');
    expect(sql).toMatch(
      /ALTER FUNCTION pg_temp\.cdp_as\(pg_catalog\.text\) OWNER TO "app";\nDO \$cdp_run\$ BEGIN PERFORM pg_temp\.cdp_as\(pg_catalog\.convert_from\(.*\nCLOSE ALL;\nDISCARD TEMP;\n/,
    );
    // standard_conforming_strings last: the SELECT is parsed before any of it takes effect anyway.
    // Values from the stream are base64 (a schema name could hold a dollar-quote tag and a psql command).
    const b = (x: string) => `pg_catalog.convert_from(pg_catalog.decode('${Buffer.from(x).toString('base64')}', 'base64'), 'UTF8')`;
    expect(sql).toContain(
      `pg_catalog.set_config('TimeZone', ${b('Asia/Tokyo')}, false), pg_catalog.set_config('search_path', ${b('public')} || ', pg_temp', false), pg_catalog.set_config('standard_conforming_strings', ${b('off')}, false); END $cdp_set$;`,
    );
    expect(sql).not.toContain('COMMENT');
    expect(statementOf(sql)).toBe("COMMENT ON TABLE t IS 'it\\'s'");
    // Then the restore session's own settings, whole.
    expect(sql).toMatch(/\nRESET ALL; SET client_encoding = 'UTF8'; SET standard_conforming_strings = on; .*SET search_path = pg_catalog, pg_temp;.*\n$/);
  });
  it('never puts text from the stream into the SQL: a schema name holding a dollar-quote tag and a psql command', () => {
    const evil = '"x$cdp_set$\\! id > /tmp/pwned #", public';
    const sql = ddlReplaySql(planDdl(v2({ command: 'CREATE TABLE a ()', searchPath: evil }), at));
    expect(sql).not.toContain('$cdp_set$\\!');
    expect(sql).not.toContain('pwned');
  });
  it('skips DDL on temporary objects (gone with their session; restore must not create them in its own)', () => {
    expect(
      ddlReplaySql(planDdl(v2({ command: 'CREATE TEMP TABLE x (a int)', objects: [{ objectType: 'table', schema: 'pg_temp_3', identity: 'pg_temp.x' }] }), at)),
    ).toBe('');
    expect(
      ddlReplaySql(
        planDdl(
          v2({
            command: 'CREATE DOMAIN pg_temp.text AS int',
            tag: 'CREATE DOMAIN',
            objects: [{ objectType: 'type', schema: 'pg_temp_3', identity: 'pg_temp.text' }],
          }),
          at,
        ),
      ),
    ).toBe('');
    expect(
      ddlReplaySql(
        planDdl(
          v2({ command: 'DROP TABLE x', tag: 'DROP TABLE', dropped: [{ objectType: 'table', schema: 'pg_temp_3', identity: 'pg_temp.x', temporary: true }] }),
          at,
        ),
      ),
    ).toBe('');
  });
  it('stops when the query string rolls back between DDL statements (the ordinal no longer places the event)', () => {
    expect(() => planDdl(v2({ command: 'BEGIN; DROP TABLE important; ROLLBACK; DROP TABLE junk', tag: 'DROP TABLE', seq: 1 }), at)).toThrow(
      /rolls back part of its work/,
    );
    expect(statementOf(ddlReplaySql(planDdl(v2({ command: 'BEGIN; DROP TABLE junk; COMMIT', tag: 'DROP TABLE', seq: 1 }), at)))).toBe('DROP TABLE junk');
  });
  it('does not count statements on shared objects (databases, roles, tablespaces fire no event)', () => {
    const command = 'GRANT CONNECT ON DATABASE src TO r; COMMENT ON ROLE r IS $$x$$; GRANT SELECT ON public.important TO r';
    expect(statementOf(ddlReplaySql(planDdl(v2({ command, tag: 'GRANT', seq: 1 }), at)))).toBe('GRANT SELECT ON public.important TO r');
  });
  it('stops on a statement naming temporary and permanent relations together, skips one naming only temporary ones', () => {
    expect(() => planDdl(v2({ command: 'REVOKE SELECT ON mal.secret, pg_temp.tmp FROM PUBLIC', tag: 'REVOKE' }), at)).toThrow(/temporary and permanent/);
    expect(ddlReplaySql(planDdl(v2({ command: 'CREATE TEMP TABLE x (a int)', objects: [] }), at))).toBe('');
  });
  it('counts REINDEX as a DDL statement only where it fires the event (PostgreSQL 17 on)', () => {
    const command = 'REINDEX TABLE t; CREATE INDEX i ON t (a)';
    expect(statementOf(ddlReplaySql(planDdl(v2({ command, tag: 'CREATE INDEX', seq: 1, serverVersion: 150004 }), at)))).toBe('CREATE INDEX i ON t (a)');
    expect(statementOf(ddlReplaySql(planDdl(v2({ command, tag: 'CREATE INDEX', seq: 2, serverVersion: 170002 }), at)))).toBe('CREATE INDEX i ON t (a)');
  });
  it('an unverified role claim is not used, nor the session user', () => {
    // Neither the claimed role nor the login is right there: apply.ts stops unless --ddl-role.
    expect(planDdl(v2({ command: 'CREATE TABLE a ()', role: 'postgres', roleVerified: false, sessionUser: 'intruder' }), at).role).toBeUndefined();
  });
  it('drops CONCURRENTLY (not allowed in a transaction block; the plain form builds the same)', () => {
    expect(statementOf(ddlReplaySql(planDdl(v2({ command: 'CREATE INDEX CONCURRENTLY i ON t (c)', tag: 'CREATE INDEX' }), at)))).toBe(
      'CREATE INDEX  i ON t (c)',
    );
    // DETACH ... CONCURRENTLY: the plain form, plus the CHECK constraint the concurrent form adds.
    const detach = statementOf(ddlReplaySql(planDdl(v2({ command: 'ALTER TABLE p DETACH PARTITION c CONCURRENTLY', tag: 'ALTER TABLE' }), at)))!;
    expect(detach).toContain(
      `DO $cdp_detach$ DECLARE part pg_catalog.regclass := pg_catalog.convert_from(pg_catalog.decode('${Buffer.from('"c"').toString('base64')}', 'base64'), 'UTF8')::pg_catalog.regclass;`,
    );
    expect(detach).toContain(`EXECUTE pg_catalog.convert_from(pg_catalog.decode('${Buffer.from('ALTER TABLE p DETACH PARTITION c ').toString('base64')}'`);
    expect(detach).toContain("EXECUTE pg_catalog.format('ALTER TABLE %s ADD CHECK (%s)', part, def);");
  });
  it('marks ALTER TYPE ... ADD VALUE to end the target transaction with its source transaction', () => {
    expect(planDdl(v2({ command: "ALTER TYPE mood ADD VALUE 'furious'", tag: 'ALTER TYPE' }), at).commitAfterTransaction).toBe(true);
    expect(planDdl(v2({ command: "ALTER TYPE mood RENAME VALUE 'a' TO 'b'", tag: 'ALTER TYPE' }), at).commitAfterTransaction).toBe(false);
  });
  it('gives existing rows the value the source gave them for a computed DEFAULT (now()), not a constant one', () => {
    const missing = [
      { table: 't', column: 'at', value: '{"2026-01-01 00:00:00+00"}' },
      { table: 't', column: 'k', value: '{0}' },
    ];
    const p = planDdl(v2({ command: 'ALTER TABLE t ADD COLUMN at timestamptz DEFAULT now(), ADD COLUMN k int DEFAULT 0', tag: 'ALTER TABLE', missing }), at);
    const payload = /decode\('([A-Za-z0-9+/=]*)'/.exec(p.after!)![1]!;
    expect(JSON.parse(Buffer.from(payload, 'base64').toString())).toEqual([missing[0]]);
  });
  it('stops at a rewrite with per-row values on a table with rows, naming --ddl-override; not when the table was empty or the column is generated', () => {
    const rw = (hadRows: boolean) => [{ table: 't', reason: 2, hadRows }];
    expect(() => planDdl(v2({ command: 'ALTER TABLE t ADD COLUMN n serial', tag: 'ALTER TABLE', rewrites: rw(true) }), at)).toThrow(
      /--ddl-override FILE \(JSON: \{"0\/1000#3": "<SQL>"\}/,
    );
    expect(() => planDdl(v2({ command: 'ALTER TABLE t ADD COLUMN n int GENERATED ALWAYS AS IDENTITY', tag: 'ALTER TABLE', rewrites: rw(true) }), at)).toThrow(
      CdpError,
    );
    expect(() => planDdl(v2({ command: 'ALTER TABLE t ADD COLUMN r float8 DEFAULT random()', tag: 'ALTER TABLE', rewrites: rw(true) }), at)).toThrow(CdpError);
    expect(planDdl(v2({ command: 'ALTER TABLE t ADD COLUMN n serial', tag: 'ALTER TABLE', rewrites: rw(false) }), at).statement).toBe(
      'ALTER TABLE t ADD COLUMN n serial',
    );
    expect(
      planDdl(v2({ command: 'ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (a * 2) STORED', tag: 'ALTER TABLE', rewrites: rw(true) }), at).statement,
    ).toBeDefined();
  });
  it('an override replaces the event, run as the restore role; events of earlier versions replay their whole text', () => {
    const o = planDdl(
      v2({ command: 'ALTER TABLE t ADD COLUMN n serial', tag: 'ALTER TABLE', rewrites: [{ table: 't', reason: 2, hadRows: true }] }),
      at,
      new Map([['0/1000#3', 'SELECT 1']]),
    );
    expect(ddlReplaySql(o)).not.toContain('cdp_as_');
    expect(ddlReplaySql(o)).not.toContain("search_path', 'public");
    expect(statementOf(ddlReplaySql(o))).toBe('SELECT 1');
    expect(statementOf(ddlReplaySql(planDdl({ command: 'CREATE TABLE a (); CREATE TABLE b ()', searchPath: 'public' }, at)))).toBe(
      'CREATE TABLE a (); CREATE TABLE b ()',
    );
  });
});

describe('statements the server runs itself', () => {
  beforeAll(async () => {
    await loadParser();
  });
  it('skips the temporary diff table of REFRESH MATERIALIZED VIEW CONCURRENTLY (run through SPI, one context frame)', () => {
    const c = v2({
      command: 'REFRESH MATERIALIZED VIEW CONCURRENTLY mv',
      nested: true,
      seq: null,
      context: 'SQL statement "CREATE TEMP TABLE pg_temp_2.pg_temp_84727_2 (tid pg_catalog.tid)"',
      objects: [],
    });
    expect(ddlReplaySql(planDdl(c, at))).toBe('');
    expect(innerStatement('SQL statement "CREATE TABLE x ()"')).toBe('CREATE TABLE x ()');
  });
});
