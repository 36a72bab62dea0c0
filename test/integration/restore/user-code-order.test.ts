import type { ChildProcess } from 'node:child_process';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../../src/util/lsn.js';
import {
  createDatabase,
  dropDatabase,
  fingerprint,
  pipelineEnv,
  rand,
  restorableLsn,
  runCli,
  stackEnvironment,
  startRun,
  waitFor,
  withClient,
} from './helpers.js';

// Coalescing must not reorder a coalesced table's changes after the stream-order writes of
// a table whose writes run user code (ALWAYS trigger / CHECK calling a user function), so that
// code sees other tables as they were BEFORE the source changed them.
const name = `ucorder_${rand()}`;
let url = '';
let env: Record<string, string> = {};
let run: ChildProcess | undefined;
const restored: string[] = [];

beforeAll(async () => {
  stackEnvironment();
  url = await createDatabase(name);
  env = pipelineEnv(name, url, 'test-usercode');
  await withClient(url, async (c) => {
    // 1. ALWAYS trigger reading another (coalesced) table.
    await c.query(`CREATE TABLE products (id int PRIMARY KEY, price int NOT NULL)`);
    await c.query(`CREATE TABLE orders (id int PRIMARY KEY, product int NOT NULL, price int)`);
    await c.query(
      `CREATE FUNCTION public.order_price() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.price := (SELECT p.price FROM public.products p WHERE p.id = NEW.product); RETURN NEW; END $$`,
    );
    await c.query(`CREATE TRIGGER order_price BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION public.order_price()`);
    await c.query(`ALTER TABLE orders ENABLE ALWAYS TRIGGER order_price`);
    await c.query(`INSERT INTO products VALUES (1, 10)`);
    // Control: the same, but products_c has a second unique index (never coalesced: stream order).
    await c.query(`CREATE TABLE products_c (id int PRIMARY KEY, price int NOT NULL, sku int UNIQUE)`);
    await c.query(`CREATE TABLE orders_c (id int PRIMARY KEY, product int NOT NULL, price int)`);
    await c.query(
      `CREATE FUNCTION public.order_price_c() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.price := (SELECT p.price FROM public.products_c p WHERE p.id = NEW.product); RETURN NEW; END $$`,
    );
    await c.query(`CREATE TRIGGER order_price_c BEFORE INSERT ON orders_c FOR EACH ROW EXECUTE FUNCTION public.order_price_c()`);
    await c.query(`ALTER TABLE orders_c ENABLE ALWAYS TRIGGER order_price_c`);
    await c.query(`INSERT INTO products_c VALUES (1, 10, 1)`);
    // 2. CHECK calling a user function that reads another (coalesced) table.
    await c.query(`CREATE TABLE cats (id int PRIMARY KEY)`);
    await c.query(
      `CREATE FUNCTION public.cat_exists(int) RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT EXISTS (SELECT 1 FROM public.cats WHERE id = $1) $$`,
    );
    await c.query(`CREATE TABLE items (id int PRIMARY KEY, cat int NOT NULL CHECK (public.cat_exists(cat)))`);
    // 3. A DEFERRABLE (initially immediate) unique column whose values are swapped in one statement.
    await c.query(`CREATE TABLE sw (id int PRIMARY KEY, code int NOT NULL UNIQUE DEFERRABLE INITIALLY IMMEDIATE)`);
    await c.query(`INSERT INTO sw VALUES (1, 1), (2, 2)`);
  });
});

afterAll(async () => {
  if (run && run.exitCode === null) run.kill('SIGKILL');
  await dropDatabase(name);
  for (const d of restored) await dropDatabase(d).catch(() => {});
});

async function restoreInto(args: string[]) {
  const db = `${name}_r${restored.length}`;
  restored.push(db);
  const into = await createDatabase(db);
  const r = await runCli(['restore', '--into', into, ...args], env);
  return { into, r };
}

describe('coalescing vs user code reading other tables', () => {
  it('a trigger and a CHECK that read other tables see them as the source did: restores to points after each are exact (whole tables)', async () => {
    const setup = await runCli(['setup'], env);
    expect(setup.code, setup.stderr).toBe(0);
    run = startRun(env);
    const lsn = async (c: pg.ClientBase) => (await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l;
    const s = await withClient(url, async (c) => {
      await c.query(`UPDATE products SET price = 20 WHERE id = 1`);
      await c.query(`INSERT INTO products VALUES (2, 30)`);
      await c.query(`INSERT INTO orders VALUES (1, 1, NULL), (2, 2, NULL)`);
      await c.query(`UPDATE products_c SET price = 20 WHERE id = 1`);
      await c.query(`INSERT INTO products_c VALUES (2, 30, 2)`);
      await c.query(`INSERT INTO orders_c VALUES (1, 1, NULL), (2, 2, NULL)`);
      const mid1 = await lsn(c);
      const fp1 = await fingerprint(c);
      await c.query(`INSERT INTO cats VALUES (5)`);
      await c.query(`INSERT INTO items VALUES (1, 5)`);
      await c.query(`UPDATE sw SET code = 3 - code`);
      const mid2 = await lsn(c);
      const fp2 = await fingerprint(c);
      return { mid1, fp1, mid2, fp2 };
    });
    await waitFor(`restorable point past ${s.mid2}`, async () => ((await restorableLsn(env)) ?? -1) >= parseLsn(s.mid2));
    const a = await restoreInto(['--lsn', s.mid1]);
    expect(a.r.code, a.r.stderr).toBe(0);
    expect(await withClient(a.into, async (c) => (await c.query('SELECT id, product, price FROM orders ORDER BY id')).rows)).toEqual([
      { id: 1, product: 1, price: 20 },
      { id: 2, product: 2, price: 30 },
    ]);
    expect(await withClient(a.into, fingerprint)).toEqual(s.fp1);
    const b = await restoreInto(['--lsn', s.mid2]);
    expect(b.r.code, b.r.stderr).toBe(0);
    expect(await withClient(b.into, fingerprint)).toEqual(s.fp2);
  }, 600_000);
});
