import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, expect } from 'vitest';
import { parseLsn } from '../../../src/util/lsn.js';
import { createDatabase, dropDatabase, fingerprint, pipelineEnv, rand, runCli, stackEnvironment, waitFor, withClient } from '../restore/helpers.js';

// The set-up the tests that drive a whole pipeline through the CLI share (ops, info, the TLS
// tests, idle cost): a scratch source database with its own slot, topic and prefix, dropped after
// the tests with the `cdp run` they started; and the waits they all make: the source's WAL
// position, the restorable point reaching it, a daemon stopped cleanly.

export interface PipelineDatabase {
  /** The scratch database, also the slot, publication and topic name (pipelineEnv). */
  readonly name: string;
  /** The database as the superuser reaches it (the stack's admin URL). */
  url: string;
  /** The CDP_* environment of the pipeline, for runCli and startRun. */
  env: Record<string, string>;
  /** A `cdp run` a test started: killed after the tests if it is still running. */
  run: ChildProcess | undefined;
  /** More databases the tests create (restore targets): dropped after the tests. */
  readonly dropAfter: string[];
}

export interface PipelineOptions {
  /** Start of the database name; a random suffix follows. */
  label: string;
  /** S3 prefix of the test file (pipelineEnv). */
  prefix: string;
  /** SQL run in the new database before the tests (tables, first rows). */
  schema?: string;
  /** Variables added to (or replacing) pipelineEnv's. */
  env?: Record<string, string>;
  /** The source URL the pipeline uses, when not the admin URL (another role). */
  sourceUrl?: (name: string) => string;
}

/** Registers beforeAll / afterAll that create and drop a pipeline's scratch database; read the fields inside tests. */
export function usePipelineDatabase(opts: PipelineOptions): PipelineDatabase {
  const db: PipelineDatabase = { name: `${opts.label}_${rand()}`, url: '', env: {}, run: undefined, dropAfter: [] };
  beforeAll(async () => {
    stackEnvironment();
    db.url = await createDatabase(db.name);
    db.env = { ...pipelineEnv(db.name, opts.sourceUrl?.(db.name) ?? db.url, opts.prefix), ...opts.env };
    if (opts.schema) await withClient(db.url, (c) => c.query(opts.schema!));
  });
  afterAll(async () => {
    if (db.run && db.run.exitCode === null) db.run.kill('SIGKILL');
    for (const d of db.dropAfter) await dropDatabase(d);
    await dropDatabase(db.name);
  });
  return db;
}

/** The database's current WAL position (pg_current_wal_lsn) as an LSN value. */
export function walPosition(url: string): Promise<number> {
  return withClient(url, async (c) => parseLsn((await c.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l));
}

/** Waits until `cdp status` reports a restorable point at or past `lsn` (asked every second). */
export async function waitRestorablePast(env: Record<string, string>, lsn: number, what: string, timeoutMs = 180_000): Promise<void> {
  await waitFor(
    what,
    async () => {
      const s = await runCli(['status', '--json'], env, 60_000);
      // 3 and 4 (a break, a missed objective) still report the point; anything else is kept as the reason if time runs out.
      if (s.code !== 0 && s.code !== 3 && s.code !== 4) throw new Error(`status exited ${s.code}: ${s.stderr}`);
      const p = (JSON.parse(s.stdout) as { restorablePoint?: { lsn: string } | null }).restorablePoint;
      return p ? parseLsn(p.lsn) >= lsn : false;
    },
    timeoutMs,
    1_000,
  );
}

/** Stops a daemon child with SIGTERM (a clean stop) and waits for it to exit. */
export async function stopDaemon(child: ChildProcess): Promise<void> {
  const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** `cdp restore --latest` into a new database `target` (dropped afterwards) gives the rows of `sourceUrl`. */
export async function expectLatestRestores(env: Record<string, string>, sourceUrl: string, target: string): Promise<void> {
  const into = await createDatabase(target);
  try {
    const r = await runCli(['restore', '--into', into, '--latest'], env);
    expect(r.code, r.stderr).toBe(0);
    const [want, got] = await Promise.all([withClient(sourceUrl, fingerprint), withClient(into, fingerprint)]);
    expect(got).toEqual(want);
  } finally {
    await dropDatabase(target);
  }
}
