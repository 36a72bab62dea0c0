import { describe, expect, it } from 'vitest';
import { cursorUpdateSql, TxnGroup } from '../../../src/restore/txn-group.js';
import { DEFERRED_TRIGGER_GUARD_SQL } from '../../../src/restore/target-catalog.js';

// The grouping rules on their own, with a clock the test moves (the Applier reads Date.now()).
describe('TxnGroup: when a target transaction ends', () => {
  const clock = () => {
    const c = { t: 1_000, now: () => c.t };
    return c;
  };

  it('opens one target transaction for many source transactions and ends it with the cursor update', () => {
    const g = new TxnGroup({ cursor: true, groupMaxChanges: 3 }, clock().now);
    expect(g.begin()).toBe('BEGIN;\n');
    expect(g.begin()).toBe('');
    g.changes += 2;
    expect(g.full(false)).toBe(false);
    g.changes++;
    expect(g.full(false)).toBe(true);
    const last = { commitLsn: 300, commitTime: 7, xid: 12 };
    expect(g.end({ transactions: 5, last, lastEndLsn: 340 })).toBe(`${cursorUpdateSql(last, 340, 5)}${DEFERRED_TRIGGER_GUARD_SQL}COMMIT;\n`);
    expect(g.open).toBe(false);
    // The next group counts the transactions since this commit only.
    g.begin();
    expect(g.end({ transactions: 7, last, lastEndLsn: 340 })).toContain('transactions = transactions + 2,');
    expect(g.begin()).toBe('BEGIN;\n');
    expect(g.changes).toBe(0);
  });

  it('writes no cursor without the option or before any source transaction; the deferred-trigger guard only with it (a live session)', () => {
    expect(new TxnGroup({ cursor: false }).end({ transactions: 1, last: { commitLsn: 1, commitTime: 1, xid: 1 }, lastEndLsn: 2 })).toBe('COMMIT;\n');
    expect(new TxnGroup({ cursor: true }).end({ transactions: 0, last: undefined, lastEndLsn: 0 })).toBe(`${DEFERRED_TRIGGER_GUARD_SQL}COMMIT;\n`);
  });

  it('ends a group by age', () => {
    const c = clock();
    const g = new TxnGroup({ cursor: false, groupMaxMs: 100 }, c.now);
    g.begin();
    c.t += 99;
    expect(g.full(false)).toBe(false);
    c.t += 1;
    expect(g.full(false)).toBe(true);
  });

  it('ends every source transaction alone for the --sql file', () => {
    const g = new TxnGroup({ cursor: false, onePerSource: true, groupMaxChanges: 1_000 }, clock().now);
    g.begin();
    expect(g.full(false)).toBe(true);
  });

  it('lets a group whose buffer keeps a load run to coalesceMaxChanges, and 30 s', () => {
    const c = clock();
    const g = new TxnGroup({ cursor: false, groupMaxChanges: 10, groupMaxMs: 100, coalesceMaxChanges: 50 }, c.now);
    g.begin();
    g.changes = 20;
    c.t += 1_000;
    expect(g.full(false)).toBe(true);
    expect(g.full(true)).toBe(false);
    g.changes = 50;
    expect(g.full(true)).toBe(true);
    g.changes = 20;
    c.t += 29_000;
    expect(g.full(true)).toBe(true);
  });

  it('spans loads only when coalesceMaxChanges is above groupMaxChanges, and never for the --sql file', () => {
    expect(new TxnGroup({ cursor: false }).spansLoads).toBe(false);
    expect(new TxnGroup({ cursor: false, groupMaxChanges: 10, coalesceMaxChanges: 10 }).spansLoads).toBe(false);
    expect(new TxnGroup({ cursor: false, groupMaxChanges: 10, coalesceMaxChanges: 11 }).spansLoads).toBe(true);
    const sql = new TxnGroup({ cursor: false, onePerSource: true, coalesceMaxChanges: 1_000_000 });
    expect(sql.spansLoads).toBe(false);
    sql.begin();
    expect(sql.full(true)).toBe(true);
  });
});
