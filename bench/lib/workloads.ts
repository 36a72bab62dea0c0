// The capture workloads of the benchmark harness. Each is: tables (created before `cdp setup`),
// rows present before the slots exist (not part of the backlog), then the statements whose changes
// every reader drains, and how many row changes those are.

export interface Workload {
  name: string;
  /** What it is, for the results. */
  describe: string;
  schema: string[];
  prepare: string[];
  run: string[];
  changes: number;
}

/** ANCHORS.md: R inserts in one transaction, R/2 updates in a second, R/5 deletes in a third. */
export function bulk(rows: number): Workload {
  return {
    name: 'bulk',
    describe: `ANCHORS.md bulk: ${rows} inserts, ${rows / 2} updates, ${rows / 5} deletes in 3 transactions`,
    schema: ['CREATE TABLE bench (id bigint PRIMARY KEY, n integer, s text, t timestamptz, amount numeric(12,2))'],
    prepare: [],
    run: [
      `INSERT INTO bench SELECT g, g % 1000, md5(g::text), now(), (g % 100000) / 100.0 FROM generate_series(1, ${rows}) g`,
      `UPDATE bench SET n = n + 1 WHERE id <= ${rows / 2}`,
      `DELETE FROM bench WHERE id > ${rows - rows / 5}`,
    ],
    changes: rows + rows / 2 + rows / 5,
  };
}

/**
 * pgbench-style OLTP (TPC-B shape, pgbench's tables with keys on every table): each transaction
 * updates one account, one teller and one branch and inserts one history row, committed one by one
 * (PL/pgSQL COMMIT in a DO loop, so the load generator costs no round trips). 4 changes each.
 */
export function oltp(transactions: number, scale = 1): Workload {
  const accounts = 100_000 * scale;
  const tellers = 10 * scale;
  return {
    name: 'oltp',
    describe: `pgbench-style TPC-B: ${transactions} transactions of 3 updates + 1 insert (scale ${scale}), one commit each`,
    schema: [
      'CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int NOT NULL, filler char(88))',
      'CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int NOT NULL, tbalance int NOT NULL, filler char(84))',
      'CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84))',
      'CREATE TABLE pgbench_history (hid bigserial PRIMARY KEY, tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))',
    ],
    prepare: [
      `INSERT INTO pgbench_branches SELECT g, 0 FROM generate_series(1, ${scale}) g`,
      `INSERT INTO pgbench_tellers SELECT g, (g - 1) / 10 + 1, 0 FROM generate_series(1, ${tellers}) g`,
      `INSERT INTO pgbench_accounts SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, ${accounts}) g`,
      'VACUUM ANALYZE',
    ],
    run: [
      `DO $$ DECLARE a int; t int; b int; d int; BEGIN
         FOR x IN 1..${transactions} LOOP
           a := (x * 7919) % ${accounts} + 1; t := (x * 31) % ${tellers} + 1; b := (t - 1) / 10 + 1; d := (x * 13) % 10001 - 5000;
           UPDATE pgbench_accounts SET abalance = abalance + d WHERE aid = a;
           UPDATE pgbench_tellers SET tbalance = tbalance + d WHERE tid = t;
           UPDATE pgbench_branches SET bbalance = bbalance + d WHERE bid = b;
           INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (t, b, a, d, now());
           COMMIT;
         END LOOP; END $$`,
    ],
    changes: 4 * transactions,
  };
}

/** One transaction inserting `rows` rows (the reorder buffer spills to disk: the big-transaction case). */
export function bigTxn(rows: number): Workload {
  return {
    name: 'big-txn',
    describe: `one transaction of ${rows} inserts`,
    schema: ['CREATE TABLE bench (id bigint PRIMARY KEY, n integer, s text, t timestamptz, amount numeric(12,2))'],
    prepare: [],
    run: [`INSERT INTO bench SELECT g, g % 1000, md5(g::text), now(), (g % 100000) / 100.0 FROM generate_series(1, ${rows}) g`],
    changes: rows,
  };
}

/**
 * TOAST-heavy: rows carrying a ~kb KiB text value (md5 chunks: stored out of line), then updates
 * that change it, updates that leave it unchanged (pgoutput sends "unchanged TOAST" for those),
 * deletes.
 */
export function toast(rows: number, kb = 16): Workload {
  const body = (seed: string) => `(SELECT string_agg(md5(${seed} || ':' || k), '') FROM generate_series(1, ${kb * 32}) k)`;
  return {
    name: 'toast',
    describe: `TOAST-heavy: ${rows} inserts of ~${kb} KiB text, ${rows / 2} updates of it, ${rows / 2} updates of another column, ${rows / 5} deletes`,
    schema: ['CREATE TABLE docs (id bigint PRIMARY KEY, n integer NOT NULL, body text NOT NULL)'],
    prepare: [],
    run: [
      `INSERT INTO docs SELECT g, 0, ${body('g::text')} FROM generate_series(1, ${rows}) g`,
      `UPDATE docs SET body = ${body("'u' || id")} WHERE id <= ${rows / 2}`,
      `UPDATE docs SET n = n + 1 WHERE id > ${rows / 2}`,
      `DELETE FROM docs WHERE id > ${rows - rows / 5}`,
    ],
    changes: rows + rows / 2 + rows / 2 + rows / 5,
  };
}
