import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TargetCatalog } from '../../../src/restore/target-catalog.js';
import { adminUrl, createDatabase, dropDatabase, rand, stackEnvironment, withClient } from './helpers.js';

// TargetCatalog against a real catalog: which types beyond the built-in scalars may travel in a
// typed array literal (a batched UPDATE's unnest, a DELETE's = ANY), and which tables are
// inheritance parents (written ONLY).

const name = `tcat_${rand()}`;
let url = '';
let cat: TargetCatalog;

beforeAll(async () => {
  stackEnvironment();
  url = await createDatabase(name);
  await withClient(url, async (c) => {
    await c.query(`CREATE SCHEMA "Odd S"`);
    await c.query(`CREATE TYPE "Odd S"."Mood" AS ENUM ('a', 'b')`);
    await c.query(`CREATE DOMAIN public.short_text AS text CHECK (length(VALUE) < 10)`);
    await c.query(`CREATE DOMAIN public.int_list AS int[]`);
    await c.query(`CREATE TYPE public.span AS RANGE (subtype = float8)`);
    await c.query(`CREATE TYPE public.pair AS (x int, y text)`);
    await c.query(`CREATE DOMAIN public.pair_d AS public.pair`);
    await c.query(`CREATE DOMAIN public.pair_dd AS public.pair_d`);
    // A base type whose array elements are delimited by ':' (as PostGIS geometry's), and a domain over it.
    await c.query(`CREATE TYPE public.colon`);
    await c.query(`CREATE FUNCTION public.colon_in(cstring) RETURNS public.colon LANGUAGE internal IMMUTABLE STRICT AS 'textin'`);
    await c.query(`CREATE FUNCTION public.colon_out(public.colon) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'textout'`);
    await c.query(`CREATE TYPE public.colon (INPUT = public.colon_in, OUTPUT = public.colon_out, LIKE = text, DELIMITER = ':')`);
    await c.query(`CREATE DOMAIN public.colon_d AS public.colon`);
    // A range over a domain whose CHECK calls a function: reading a value of the range runs it.
    await c.query(`CREATE FUNCTION public.small(float8) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RETURN $1 < 100; END $$`);
    await c.query(`CREATE DOMAIN public.small_f AS float8 CHECK (public.small(VALUE))`);
    await c.query(`CREATE TYPE public.small_span AS RANGE (subtype = public.small_f)`);
    await c.query(`CREATE ROLE ${name}_app`);
    for (const [t, col] of [
      ['r_plain', 'public.span'],
      ['r_dom', 'public.small_span'],
      ['r_dom_multi', 'public.small_span_multirange'],
      ['r_dom_arr', 'public.small_span[]'],
    ]) {
      await c.query(`CREATE TABLE public.${t} (id int PRIMARY KEY, v ${col})`);
      await c.query(`ALTER TABLE public.${t} OWNER TO ${name}_app`);
    }
    await c.query(`CREATE TABLE public.parent (id int PRIMARY KEY)`);
    await c.query(`CREATE TABLE public.child () INHERITS (public.parent)`);
    await c.query(`CREATE TABLE public.parted (id int) PARTITION BY RANGE (id)`);
    await c.query(`CREATE TABLE public.parted_1 PARTITION OF public.parted FOR VALUES FROM (0) TO (10)`);
  });
  await withClient(url, async (c) => {
    cat = new TargetCatalog(c);
    await cat.read();
  });
});

afterAll(async () => {
  await dropDatabase(name);
  await withClient(adminUrl(), (c) => c.query(`DROP ROLE IF EXISTS ${name}_app`));
});

describe('TargetCatalog', () => {
  it('names the enums, domains, ranges and multiranges whose typed array literal reads back value by value', () => {
    for (const t of ['"Odd S"."Mood"', 'public.short_text', 'public.span', 'public.span_multirange', 'int4range']) {
      expect([t, cat.arrayType(t)]).toEqual([t, true]);
    }
    // A domain over an array (an array of it would nest), composites and domains over them
    // (unnest in FROM splits them into their fields), a ':'-delimited base type and a domain over
    // it, spellings capture never writes, and built-in scalars (sql.ts commaArrayType's).
    const no = ['public.int_list', 'public.pair', 'public.pair_d', 'public.pair_dd', 'public.parent', 'public.colon', 'public.colon_d'];
    for (const t of [...no, '"Odd S".Mood', 'Odd S.Mood', '"Odd S"."Mood"[]', 'integer', 'text']) {
      expect([t, cat.arrayType(t)]).toEqual([t, false]);
    }
  });

  it("writes a table with a range or multirange over a domain as its owner (the domain's CHECK is the owner's code)", () => {
    expect(cat.runAsOwner('public', 'r_plain')).toBeUndefined();
    for (const t of ['r_dom', 'r_dom_multi', 'r_dom_arr']) expect([t, cat.runAsOwner('public', t)]).toEqual([t, `${name}_app`]);
  });

  it('knows inheritance parents, and that a partitioned table is not one', () => {
    expect(cat.inheritanceParent('public', 'parent')).toBe(true);
    expect(cat.inheritanceParent('public', 'child')).toBe(false);
    expect(cat.inheritanceParent('public', 'parted')).toBe(false);
    expect(cat.inheritanceParent('public', 'parted_1')).toBe(false);
  });
});
