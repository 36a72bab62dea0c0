import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../../src/config/config.js';
import type { CommandContext } from '../../../src/context.js';
import { parseLsn } from '../../../src/util/lsn.js';
import { applyStackEnv, REPO } from '../../support/stack.js';

// Shared by the base, restore and ops integration tests: the local stack's environment and fresh
// databases (from test/support/stack.ts), CLI child processes, and the table fingerprint the
// oracle compares.

export const rand = () => randomBytes(4).toString('hex');
export const silentLog = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

export { adminUrl, createDatabase, dropDatabase, REPO, withClient } from '../../support/stack.js';
/** The local stack's variables, copied into process.env (variables already set win). */
export const stackEnvironment = applyStackEnv;

export function testConfig(env: Record<string, string>): Config {
  return loadConfig({ env: { ...process.env, ...stackEnvironment(), ...env }, flags: { 'metrics.port': 0 } });
}

export function testContext(cfg: Config, signal = new AbortController().signal): CommandContext {
  return { cfg, log: silentLog, signal };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/cdp.mjs <args>` to completion. */
export function runCli(args: string[], env: Record<string, string>, timeoutMs = 600_000): Promise<CliResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, ...args], {
      env: { ...process.env, ...stackEnvironment(), CDP_LOG_FORMAT: 'json', CDP_METRICS_PORT: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Starts `cdp run` (capture + archive) as a child; its stderr is piped for the caller to read. */
export function startRun(env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'run'], {
    env: { ...process.env, ...stackEnvironment(), CDP_LOG_FORMAT: 'json', CDP_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

/** `cdp status --json`'s restorable point as an LSN value, or undefined when there is none yet. */
export async function restorableLsn(env: Record<string, string>): Promise<number | undefined> {
  const r = await runCli(['status', '--json'], env);
  const p = (JSON.parse(r.stdout) as { restorablePoint?: { lsn: string } }).restorablePoint;
  return p ? parseLsn(p.lsn) : undefined;
}

/**
 * Every user table's content as an ordered md5 of its rows, read in one snapshot: two databases
 * with the same fingerprint hold the same rows in every table (and the same set of tables).
 */
export async function fingerprint(c: pg.Client): Promise<Record<string, string>> {
  await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
  try {
    const tables = await c.query<{ s: string; t: string }>(
      `SELECT n.nspname AS s, c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'katya_cdp', '_cdp_restore')
          AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2`,
    );
    const out: Record<string, string> = {};
    for (const { s, t } of tables.rows) {
      const q = `"${s.replace(/"/g, '""')}"."${t.replace(/"/g, '""')}"`;
      const r = await c.query(
        `SELECT count(*)::int AS n, md5(coalesce(string_agg(x.r, E'\\n' ORDER BY x.r), '')) AS h FROM (SELECT (${q}.*)::text AS r FROM ${q}) x`,
      );
      out[`${s}.${t}`] = `${r.rows[0].n}:${r.rows[0].h}`;
    }
    return out;
  } finally {
    await c.query('COMMIT');
  }
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 180_000, everyMs = 500): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Environment for a whole pipeline (setup, run, status, restore) on one scratch database: its own
 * slot, publication, topic and S3 prefix, quick segment cuts and heartbeats, no base schedule.
 */
export function pipelineEnv(name: string, url: string, prefix: string, partitions = 2): Record<string, string> {
  return {
    CDP_SOURCE_URL: url,
    CDP_SLOT: name,
    CDP_PUBLICATION: name,
    CDP_TOPIC: name,
    CDP_KAFKA_PARTITIONS: String(partitions),
    CDP_S3_PREFIX: `${prefix}/${name}`,
    CDP_SEGMENT_MAX_AGE_MS: '500',
    CDP_HEARTBEAT_INTERVAL_MS: '500',
    // An idle partition's pointer follows its watermarks every half second (default 10 s), so that
    // a test waiting for the restorable point does not wait for the idle cadence (cut-policy.ts).
    CDP_IDLE_POINTER_INTERVAL_MS: '500',
    CDP_BASEBACKUP_INTERVAL_HOURS: '0',
  };
}
