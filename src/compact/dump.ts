import { createWriteStream } from 'node:fs';
import { pgDumpVersionProblem, type BaseManifestExt } from '../base/basebackup.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { childConnection } from '../pg/child-conn.js';
import { restoreBase } from '../restore/base-restore.js';
import { fingerprintDiff, tableFingerprints } from './fingerprint.js';
import { createScratchDatabase } from './scratch-pg.js';
import { dropDatabase, scratchFacts } from './scratch-target.js';
import { runTool } from './tools.js';

// Step 2 of cdp compact (compact.ts): the dump of the restored scratch database (pg_dump -Fc, what
// a restore to the same point would have left in a target), and the check that it holds what the
// scratch held: restored into a second scratch database, its rows must fingerprint the same. And
// the check, before anything starts, that the configured pg_dump can dump the base's major.

/** pg_dump -Fc of the database at `url` into `file` (mode 0600). */
export async function dumpDatabase(pgDumpPath: string, url: string, file: string, signal: AbortSignal): Promise<void> {
  const conn = childConnection(url);
  await runTool(
    pgDumpPath,
    ['--format=custom', '--no-publications', '--no-subscriptions', `--dbname=${conn.url}`],
    conn.env,
    signal,
    createWriteStream(file, { mode: 0o600 }),
  );
}

export interface DumpCheck {
  /** The dump and a folder restore may use beside it. */
  file: string;
  dir: string;
  /** The scratch server's maintenance URL, and the check database's name and URL on it. */
  adminUrl: string;
  db: string;
  url: string;
  jobs: number;
  pgRestorePath: string;
  pgDumpVersion: string;
  signal: AbortSignal;
  /** The fingerprints of the database that was dumped. */
  expected: Record<string, string>;
}

/**
 * Restores the dump into a new scratch database, as restore loads a base, and compares its rows'
 * fingerprints with the dumped database's: INTEGRITY when they differ (nothing is uploaded then).
 * The check database is dropped after a match.
 */
export async function checkDump(c: DumpCheck): Promise<void> {
  await createScratchDatabase(c.adminUrl, c.db);
  const { roles, versionNum } = await scratchFacts(c.adminUrl);
  await restoreBase({
    file: c.file,
    dir: c.dir,
    into: c.url,
    jobs: c.jobs,
    pgRestorePath: c.pgRestorePath,
    signal: c.signal,
    targetRoles: roles,
    baseDumpVersion: c.pgDumpVersion,
    targetVersionNum: versionNum,
  });
  const check = await tableFingerprints(c.url);
  const diff = fingerprintDiff(c.expected, check);
  if (diff.length > 0) {
    throw new CdpError(
      ErrorCodes.INTEGRITY,
      `compact: the dump of the scratch database does not restore to the same rows (${diff.slice(0, 5).join('; ')}); no synthetic base was written`,
    );
  }
  await dropDatabase(c.adminUrl, c.db);
}

/**
 * The version line of pg_dump (trimmed), checked to dump a server of `base`'s major: USAGE when
 * pg_dump cannot run or is too old.
 */
export async function checkedPgDumpVersion(pgDumpPath: string, base: BaseManifestExt, signal: AbortSignal): Promise<string> {
  const text = await runTool(pgDumpPath, ['--version'], undefined, signal).catch((err: unknown) => {
    throw new CdpError(ErrorCodes.USAGE, `${toError(err).message}; install the PostgreSQL client or set basebackup.pgDumpPath`, { cause: err });
  });
  const problem = pgDumpVersionProblem(text, pgDumpPath, base.serverVersionNum, base.serverVersion);
  if (problem) throw new CdpError(ErrorCodes.USAGE, problem);
  return text.trim();
}
