import { describe, expect, it } from 'vitest';
import { Applier } from '../../../src/restore/apply.js';
import { groupTransactions } from '../../../src/restore/merge.js';
import { makeCut } from '../../../src/restore/target.js';
import type { ChangeEvent, RelationInfo } from '../../../src/format/change-event.js';
import { chunks, RecordingSink, txn } from './helpers.js';

// products: coalesced (reorderable, no user code). orders: ALWAYS trigger reading products (user
// code: runAsOwner). Source order: UPDATE products, INSERT products, INSERT orders.
const PRODUCTS: RelationInfo = { oid: 1, replicaIdentity: 'd', columns: ['id', 'price'], types: ['integer', 'integer'], key: [0] };
const ORDERS: RelationInfo = { oid: 2, replicaIdentity: 'd', columns: ['id', 'product', 'price'], types: ['integer', 'integer', 'integer'], key: [0] };

describe('a user-code table must see the coalesced tables as the source did', () => {
  it('writes products before the orders row whose trigger reads them', async () => {
    const evs: ChangeEvent[] = [
      ...txn(100, 1, 1, [{ op: 'UPDATE', table: 'products', relation: PRODUCTS, new: ['1', '20'], unchanged: [] }]),
      ...txn(200, 2, 2, [{ op: 'INSERT', table: 'products', relation: PRODUCTS, new: ['2', '30'] }]),
      ...txn(300, 3, 3, [{ op: 'INSERT', table: 'orders', relation: ORDERS, new: ['1', '1', '20'] }]),
    ];
    const sink = new RecordingSink();
    const a = new Applier(sink, {
      cursor: false,
      reorderable: (_s, t) => t === 'products',
      runAsOwner: (_s, t) => (t === 'orders' ? 'app' : undefined),
      tableExists: () => true,
    });
    for await (const item of groupTransactions(chunks(evs), makeCut({ kind: 'latest' }, Number.MAX_SAFE_INTEGER))) await a.handle(item);
    const sql = sink.text;
    console.log(sql);
    const orders = sql.indexOf('PERFORM pg_temp.cdp_as('); // the orders INSERT, run as its owner (base64 inside)
    const productsUpdate = sql.indexOf('UPDATE "public"."products"');
    const productsInsert = sql.indexOf('INSERT INTO "public"."products"');
    expect(productsUpdate).toBeGreaterThanOrEqual(0);
    expect(productsUpdate).toBeLessThan(orders);
    expect(productsInsert).toBeLessThan(orders);
  });
});
