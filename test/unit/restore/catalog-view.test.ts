import { describe, expect, it } from 'vitest';
import { emptyEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { CatalogView } from '../../../src/restore/catalog-view.js';

const REL: RelationInfo = { oid: 1, replicaIdentity: 'd', columns: ['id'], types: ['integer'], key: [0] };
const ev = (table: string, relation = REL) => emptyEvent({ op: 'INSERT', database: 'db', schema: 'public', table, relation, new: ['1'] });

// The applier's view of the target's catalog between two reads, without an Applier.
describe('CatalogView', () => {
  it('asks the caller once per table and shape until the catalog is read again', () => {
    const asked: string[] = [];
    const v = new CatalogView({
      reorderable: (_s, t) => (asked.push(`reorderable ${t}`), true),
      tableExists: (_s, t) => (asked.push(`exists ${t}`), true),
      runAsOwner: (_s, t) => (asked.push(`owner ${t}`), undefined),
    });
    const a = v.info(ev('a'));
    expect(a).toMatchObject({ netKey: 'public\u0000a', reorderable: true, exists: true });
    expect(v.info(ev('a'))).toBe(a);
    expect(asked).toEqual(['reorderable a', 'owner a', 'exists a']);
    // Another relation description (a DDL changed the shape) is asked again; the owner stays cached.
    v.info(ev('a', { ...REL, columns: ['id', 'x'], types: ['integer', 'text'] }));
    expect(asked.slice(3)).toEqual(['reorderable a', 'exists a']);
    v.reread();
    v.info(ev('a'));
    expect(asked.slice(5)).toEqual(['reorderable a', 'owner a', 'exists a']);
  });

  it('never reorders a table whose writes run user code', () => {
    const v = new CatalogView({ reorderable: () => true, runAsOwner: (_s, t) => (t === 'u' ? 'app' : undefined) });
    expect(v.info(ev('u')).reorderable).toBe(false);
    expect(v.ownerRunner({ schema: 'public', table: 'u' })).toBe('app');
    expect(v.info(ev('t')).reorderable).toBe(true);
    expect(new CatalogView({}).info(ev('t')).reorderable).toBe(false);
  });

  it("corrects the caller's answer by the tables DDL created or dropped since the read", () => {
    const have = new Set(['public.t']);
    const v = new CatalogView({ tableExists: (s, t) => have.has(`${s}.${t}`) });
    expect(v.exists('public', 'x')).toBe(false);
    v.created('public.x');
    expect(v.exists('public', 'x')).toBe(true);
    v.dropped('public.t');
    expect(v.exists('public', 't')).toBe(false);
    // info() keeps its answer until forgetTables (after a DDL) or reread.
    const info = v.info(ev('x'));
    expect(info.exists).toBe(true);
    v.dropped('public.x');
    expect(v.info(ev('x'))).toBe(info);
    v.forgetTables();
    expect(v.info(ev('x')).exists).toBe(false);
    v.stale = true;
    v.reread();
    expect(v.stale).toBe(false);
    expect(v.exists('public', 't')).toBe(true);
    // Without the caller's catalog (the --sql file) every table exists.
    expect(new CatalogView({}).exists('public', 'nowhere')).toBe(true);
  });
});
