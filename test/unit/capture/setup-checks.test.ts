import { describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../../src/config/config.js';
import { checkDdlCapture } from '../../../src/capture/setup-ddl-capture.js';
import type { Findings } from '../../../src/capture/setup-findings.js';
import { checkPublishedTables } from '../../../src/capture/setup-publication.js';
import type { Query, ServerFacts } from '../../../src/capture/setup-source.js';

// Setup's checks, given the rows a catalog query returns (a fake Query): before setup-*.ts they
// were reachable only through `cdp setup` against a real database.

function fakeQuery(rows: unknown[]): { q: Query; sql: string[]; params: unknown[][] } {
  const sql: string[] = [];
  const params: unknown[][] = [];
  const q = (<R>(text: string, values: unknown[] = []) => {
    sql.push(text);
    params.push(values);
    return Promise.resolve(rows as R[]);
  }) as Query;
  return { q, sql, params };
}

const findings = (): Findings => ({ problems: [], warnings: [] });
const base = loadConfig({ env: { CDP_SOURCE_URL: 'postgres://u@h:5432/shop' } });
const withSource = (source: Partial<Config['source']>): Config => ({ ...base, source: { ...base.source, ...source } });

const table = (ident: string, over: Partial<{ relreplident: string; relpersistence: string; has_pk: boolean; has_ri: boolean }> = {}) => ({
  ident,
  relreplident: 'd',
  relpersistence: 'p',
  has_pk: true,
  has_ri: false,
  ...over,
});

describe('checkPublishedTables', () => {
  const rows = [
    table('public.ok'),
    table('public.nokey', { has_pk: false }),
    table('public.nothing', { relreplident: 'n' }),
    table('public.idx_gone', { relreplident: 'i', has_ri: false }),
    table('public.full', { relreplident: 'f', has_pk: false }),
    table('public.scratch', { relpersistence: 'u', has_pk: false }),
  ];

  it('refuses tables whose UPDATE and DELETE would fail once published, and warns about unlogged ones', async () => {
    const f = findings();
    const keyless = await checkPublishedTables(fakeQuery(rows).q, withSource({ keylessTables: 'refuse' }), [], f);
    expect(keyless).toEqual(['public.nokey', 'public.nothing', 'public.idx_gone']);
    expect(f.problems).toEqual([
      expect.stringMatching(/^table\(s\) without a primary key or replica identity: public\.nokey, public\.nothing, public\.idx_gone; /),
    ]);
    expect(f.warnings).toEqual([expect.stringMatching(/^table public\.scratch is UNLOGGED/)]);
  });

  it('only warns when told to set REPLICA IDENTITY FULL', async () => {
    const f = findings();
    const keyless = await checkPublishedTables(fakeQuery(rows).q, withSource({ keylessTables: 'full' }), [], f);
    expect(keyless).toHaveLength(3);
    expect(f.problems).toEqual([]);
    expect(f.warnings[1]).toMatch(/^setting REPLICA IDENTITY FULL on 3 table\(s\)/);
  });

  it('scopes the query by the configured tables, else schemas, else all', async () => {
    const byTables = fakeQuery([]);
    await checkPublishedTables(byTables.q, withSource({ tables: ['public.a'] }), [42], findings());
    expect(byTables.sql[0]).toMatch(/AND c\.oid = ANY\(\$1::oid\[\]\)/);
    expect(byTables.params[0]).toEqual([[42]]);
    const bySchemas = fakeQuery([]);
    await checkPublishedTables(bySchemas.q, withSource({ schemas: ['sales'] }), [], findings());
    expect(bySchemas.sql[0]).toMatch(/AND n\.nspname = ANY\(\$1::text\[\]\)/);
    expect(bySchemas.params[0]).toEqual([['sales']]);
    const all = fakeQuery([]);
    await checkPublishedTables(all.q, base, [], findings());
    expect(all.sql[0]).toMatch(/AND true\s/);
    expect(all.params[0]).toEqual([]);
  });
});

describe('checkDdlCapture', () => {
  const names = ['katya_cdp_sql_drop', 'katya_cdp_table_rewrite', 'katya_cdp_ddl_command_a', 'katya_cdp_ddl_command_end', 'katya_cdp_ddl_command_keyless'];
  const superuser = { rolsuper: true } as ServerFacts;

  it('is installed when every trigger exists, and warns about a disabled one', async () => {
    const f = findings();
    const rows = names.map((evtname) => ({ evtname, evtenabled: evtname === 'katya_cdp_sql_drop' ? 'D' : 'O' }));
    await expect(checkDdlCapture(fakeQuery(rows).q, superuser, f)).resolves.toBe(true);
    expect(f.warnings).toEqual([expect.stringMatching(/^event trigger katya_cdp_sql_drop is disabled/)]);
  });

  it('is not installed with a trigger missing, and says DDL will not be captured without a superuser', async () => {
    const f = findings();
    const rows = names.slice(1).map((evtname) => ({ evtname, evtenabled: 'O' }));
    await expect(checkDdlCapture(fakeQuery(rows).q, { rolsuper: false } as ServerFacts, f)).resolves.toBe(false);
    expect(f.warnings).toEqual([expect.stringMatching(/schema changes \(DDL\) will NOT be captured/)]);
    expect(f.problems).toEqual([]);
  });
});
