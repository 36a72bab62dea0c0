import { execFileSync } from 'node:child_process';
import pg from 'pg';

// The local stack (deploy/local/stack.sh) as the integration tests see it: its environment, and
// scratch databases on its Postgres. One implementation for every test folder and for the global
// setup.

export const REPO = new URL('../../', import.meta.url).pathname;

/** Parses the `export NAME=value` lines that `stack.sh env` prints. */
export function parseStackExports(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    // stack.sh prints plain values; accept quoted ones too in case that ever changes.
    if (m) env[m[1]!] = m[2]!.replace(/^'(.*)'$/, '$1').replace(/^"(.*)"$/, '$1');
  }
  return env;
}

let cached: Record<string, string> | undefined;

/** The variables of `deploy/local/stack.sh env`, as a fresh object (callers may change it). */
export function stackEnv(): Record<string, string> {
  cached ??= parseStackExports(execFileSync('bash', [`${REPO}deploy/local/stack.sh`, 'env'], { encoding: 'utf8' }));
  return { ...cached };
}

/**
 * Copies the stack's variables into process.env and returns them. Variables already set win (a
 * developer may point the tests at another broker).
 */
export function applyStackEnv(): Record<string, string> {
  const env = stackEnv();
  for (const [k, v] of Object.entries(env)) process.env[k] ??= v;
  return env;
}

/** A connection URL to database `db` on the stack's Postgres, as its superuser. */
export function adminUrl(db = 'postgres'): string {
  const u = new URL(stackEnv().CDP_SOURCE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  u.pathname = `/${db}`;
  return u.toString();
}

export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Creates an empty database and returns its URL. */
export async function createDatabase(name: string): Promise<string> {
  await withClient(adminUrl(), (c) => c.query(`CREATE DATABASE ${name}`));
  return adminUrl(name);
}

/** Drops a scratch database and its replication slots; never throws (cleanup). */
export async function dropDatabase(name: string): Promise<void> {
  await withClient(adminUrl(), async (c) => {
    // Slots of this database first: a leftover slot retains WAL and fills the disk.
    const slots = await c.query(`SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1`, [name]);
    for (const s of slots.rows) {
      if (s.active_pid) await c.query('SELECT pg_terminate_backend($1)', [s.active_pid]).catch(() => {});
    }
    for (const s of slots.rows) {
      for (let i = 0; i < 20; i++) {
        try {
          await c.query('SELECT pg_drop_replication_slot($1)', [s.slot_name]);
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    }
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  }).catch(() => {});
}
