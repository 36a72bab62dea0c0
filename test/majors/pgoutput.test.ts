import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pluginOptions } from '../../src/pg/replication-stream.js';
import { rand } from '../integration/restore/helpers.js';
import { withClient } from '../support/stack.js';
import { createDb, dropDb, type Major } from './support.js';

// pgoutput of each major of the matrix, read through the SQL interface
// (pg_logical_slot_peek_binary_changes) from one transaction that touches every message kind the
// engine decodes. What each major adds, and what the engine asks for:
//   protocol 1  every major; the engine's choice (pluginOptions): one transaction at a time,
//               after its commit, which is all capture needs
//   protocol 2  streaming of in-progress transactions (14+)
//   protocol 3  two-phase commit (15+)
//   protocol 4  parallel apply of streamed transactions, streaming = 'parallel' (16+)
//   origin      option 'none' / 'any' to filter replicated changes by origin (16+)
//   publish_generated_columns  publication parameter sending stored generated columns (18+; off
//               by default, so the engine's publication sees the same columns on every major)
// The message bytes of protocol 1 are the same on 15..18: the engine's decoder needs nothing new.

const MAJORS: Major[] = [15, 16, 17, 18];
const MAX_PROTO: Record<Major, number> = { 15: 3, 16: 4, 17: 4, 18: 4 };
const name = `pgo_${rand()}`;
const urls: Partial<Record<Major, string>> = {};

beforeAll(async () => {
  for (const m of MAJORS) {
    const url = await createDb(m, name);
    urls[m] = url;
    await withClient(url, async (c) => {
      await c.query(`CREATE TABLE t (id int PRIMARY KEY, v text, g int GENERATED ALWAYS AS (id * 2) STORED)`);
      await c.query(`CREATE PUBLICATION ${name} FOR TABLE t`);
      await c.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [name]);
      await c.query(`BEGIN;
        INSERT INTO t (id, v) VALUES (1, 'one'), (2, 'two');
        SELECT pg_logical_emit_message(true, 'cdp.test', 'hello');
        UPDATE t SET v = 'uno' WHERE id = 1;
        DELETE FROM t WHERE id = 2;
        TRUNCATE t;
        COMMIT`);
    });
  }
});

afterAll(async () => {
  for (const m of MAJORS) await dropDb(m, name);
});

/** The first byte (message type) of every record pgoutput sends with these options. */
async function peek(c: pg.Client, opts: Record<string, string>): Promise<{ types: string; data: Buffer[] }> {
  const args = Object.entries(opts).flat();
  const r = await c.query<{ data: Buffer }>(
    `SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL${args.map((_, i) => `, $${i + 2}`).join('')})`,
    [name, ...args],
  );
  return { types: r.rows.map((x) => String.fromCharCode(x.data[0]!)).join(''), data: r.rows.map((x) => x.data) };
}

/** Column count of the first Relation message: 'R', xid-less int32 oid, namespace\0, name\0, replident byte, int16 ncols. */
function relationColumns(data: Buffer[]): number {
  const r = data.find((d) => d[0] === 0x52)!;
  let p = 1 + 4;
  p = r.indexOf(0, p) + 1;
  p = r.indexOf(0, p) + 1;
  p += 1;
  return r.readInt16BE(p);
}

describe('pgoutput of every major', () => {
  for (const m of MAJORS) {
    it(`PostgreSQL ${m}: protocol versions, options and message kinds`, async () => {
      await withClient(urls[m]!, async (c) => {
        const version = Number((await c.query(`SELECT current_setting('server_version_num') AS v`)).rows[0].v);
        expect(Math.floor(version / 10000)).toBe(m);
        const base = { publication_names: name, messages: 'true' };
        // The engine's own options (protocol 1) on this server: Begin, Relation, Insert x2, Message,
        // Update, Delete, Relation again (pgoutput sends it before a Truncate), Truncate, Commit.
        const engine = await peek(c, pluginOptions(name, version));
        expect(engine.types).toBe('BRIIMUDRTC');
        // Generated columns are not sent by default on any major (the publication does not ask).
        expect(relationColumns(engine.data)).toBe(2);
        for (let v = 1; v <= 5; v++) {
          const attempt = peek(c, { ...base, proto_version: String(v) });
          if (v <= MAX_PROTO[m]) expect((await attempt).types).toBe('BRIIMUDRTC');
          // 15 words it "but we only support", 16+ "but server only supports".
          else
            await expect(attempt).rejects.toThrow(
              new RegExp(`client sent proto_version=${v} but (we|server) only supports? protocol ${MAX_PROTO[m]} or lower`),
            );
        }
        // One query at a time on the connection: each attempt settles before the next starts.
        const outcome = (opts: Record<string, string>) =>
          peek(c, opts).then(
            (r) => r.types,
            (e: unknown) => e as Error,
          );
        const origin = await outcome({ ...base, proto_version: '1', origin: 'none' });
        const parallel = await outcome({ ...base, proto_version: '4', streaming: 'parallel' });
        if (m >= 16) {
          expect(origin).toBe('BRIIMUDRTC');
          expect(parallel).toBe('BRIIMUDRTC');
        } else {
          expect(String(origin)).toContain('unrecognized pgoutput option: origin');
          // 15 parses streaming as a boolean (options are checked before the protocol version).
          expect(String(parallel)).toContain('streaming requires a Boolean value');
        }
        const gen = c.query(`ALTER PUBLICATION ${name} SET (publish_generated_columns = stored)`);
        if (m >= 18) {
          await gen;
          // Decoding reads the publication as it was when each change was written: a change after
          // the ALTER comes with a Relation of 3 columns, the generated one included.
          await c.query(`INSERT INTO t (id, v) VALUES (3, 'three')`);
          const after = (await peek(c, { ...base, proto_version: '1' })).data;
          expect(relationColumns(after.slice(0, 2))).toBe(2);
          expect(relationColumns(after.filter((d) => d[0] === 0x52).slice(-1))).toBe(3);
          await c.query(`ALTER PUBLICATION ${name} SET (publish_generated_columns = none)`);
        } else {
          await expect(gen).rejects.toThrow('unrecognized publication parameter: "publish_generated_columns"');
        }
      });
    });
  }
});
