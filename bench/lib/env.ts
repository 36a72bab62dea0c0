// Small helpers shared by the benchmark scripts: the local stack's environment, one-shot SQL,
// LSN arithmetic.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import pg from 'pg';

export const REPO = new URL('../../', import.meta.url).pathname;

/** The export lines of `deploy/local/stack.sh env`, as an object (also set in process.env unless already set). */
export function loadStackEnv(): Record<string, string> {
  const out = execFileSync('bash', [`${REPO}deploy/local/stack.sh`, 'env'], { encoding: 'utf8' });
  const env: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]!] = m[2]!.replace(/^'(.*)'$/, '$1');
  }
  for (const [k, v] of Object.entries(env)) process.env[k] ??= v;
  return env;
}

/** The admin URL of the source server (CDP_SOURCE_URL of the stack) with another database. */
export function dbUrl(db: string, admin = process.env.CDP_SOURCE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'): string {
  const u = new URL(admin);
  u.pathname = `/${db}`;
  return u.toString();
}

/**
 * `url` for a libpq anchor (pg_recvlogical, a subscription's CONNECTION) with sslmode=disable. The
 * local stack runs PostgreSQL with ssl=on, and libpq's default (prefer) then encrypts: the anchor
 * paid TLS on every byte while cdp, whose plain connections are node-postgres's default, did not.
 * Measured 2026-11-29: native apply 43-50k changes/s over TLS, 66-77k plain.
 */
export function plainLibpqUrl(url: string): string {
  const u = new URL(url);
  u.searchParams.set('sslmode', 'disable');
  return u.toString();
}

/**
 * node's arguments to run bin/cdp.mjs as operators do: the flags of its shebang (the young
 * generation's size, see bin/cdp.mjs), then `extraFlags` (e.g. --cpu-prof, which NODE_OPTIONS does
 * not allow), then the bin. Spawn process.execPath with these followed by the command's arguments.
 */
export function cdpNodeArgs(extraFlags: readonly string[] = []): string[] {
  const bin = `${REPO}bin/cdp.mjs`;
  const shebang = readFileSync(bin, 'utf8').split('\n')[0]!;
  return [...shebang.split(' ').filter((w) => w.startsWith('--')), ...extraFlags, bin];
}

export async function sql<T = Record<string, unknown>>(url: string, text: string, values?: unknown[]): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(text, values)).rows as T[];
  } finally {
    await c.end();
  }
}

export const lsnNum = (t: string): number => {
  const [hi, lo] = t.split('/');
  return parseInt(hi!, 16) * 2 ** 32 + parseInt(lo!, 16);
};

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
