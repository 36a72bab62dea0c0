import { describe, expect, it } from 'vitest';
import { ddlNeededForTables, identParts, tableOf } from '../../../src/restore/ddl-filter.js';

const chosen = new Set(['public.orders', 'app.a"b.c']);
const obj = (objectType: string, identity: string) => ({ objectType, identity });

describe('DDL replayed by restore --tables', () => {
  it('replays what a chosen table may depend on: sequences, types, functions, schemas; and indexes, whose identity names no table', () => {
    // The reported failure: CREATE SEQUENCE skipped, then the chosen table using it could not be created.
    expect(ddlNeededForTables({ objects: [obj('sequence', 'public.ids')] }, chosen)).toBe(true);
    expect(ddlNeededForTables({ objects: [obj('type', 'public.mood')] }, chosen)).toBe(true);
    expect(ddlNeededForTables({ objects: [obj('function', 'public.f(integer)')] }, chosen)).toBe(true);
    expect(ddlNeededForTables({ objects: [obj('schema', 'billing')] }, chosen)).toBe(true);
    expect(ddlNeededForTables({ objects: [obj('index', 'public.other_idx')] }, chosen)).toBe(true);
    expect(ddlNeededForTables({ objects: [] }, chosen)).toBe(true);
    expect(ddlNeededForTables({}, chosen)).toBe(true);
  });

  it('skips only DDL whose every object belongs to a table not chosen', () => {
    expect(ddlNeededForTables({ objects: [obj('table', 'public.other')] }, chosen)).toBe(false);
    expect(
      ddlNeededForTables({ objects: [obj('table column', 'public.other.c')], dropped: [obj('table constraint', 'other_pkey on public.other')] }, chosen),
    ).toBe(false);
    expect(ddlNeededForTables({ objects: [obj('table', 'public.orders')] }, chosen)).toBe(true);
    expect(ddlNeededForTables({ objects: [obj('trigger', 'trg on public.orders')] }, chosen)).toBe(true);
    expect(ddlNeededForTables({ objects: [obj('table', 'public.other'), obj('sequence', 'public.other_id_seq')] }, chosen)).toBe(true);
    // Older events spelled the keys as the SQL functions do.
    expect(ddlNeededForTables({ dropped: [{ object_type: 'table', object_identity: 'public.orders' }] }, chosen)).toBe(true);
  });

  it('reads quoted identities', () => {
    expect(identParts('public."a.b""c"')).toEqual(['public', 'a.b"c']);
    expect(tableOf('table', 'app."a""b.c"')).toBe('app.a"b.c');
    expect(tableOf('table column', 'app."a""b.c"."x y"')).toBe('app.a"b.c');
    expect(tableOf('table constraint', '"x on y" on app."a""b.c"')).toBe('app.a"b.c');
    expect(tableOf('index', 'public.i')).toBeUndefined();
    expect(ddlNeededForTables({ objects: [obj('policy', 'p on app."a""b.c"')] }, chosen)).toBe(true);
  });
});
