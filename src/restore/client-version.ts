// Whether the pg_restore we are about to run can load a base into this target (issue 10, the
// version matrix). Two facts of the PostgreSQL client programs, checked before pg_restore runs:
// - pg_restore reads archives of its own major and older only ("unsupported version (1.16) in file
//   header"): a base written by pg_dump 17 needs pg_restore 17 or newer.
// - pg_restore 17 and 18 open each connection with `SET transaction_timeout = 0`, a setting that
//   servers before 17 do not have, so with --exit-on-error they stop at once on a 16 target
//   (checked with Debian's 17.12 and 18.6). A base of pg_dump 17+ therefore cannot go into a
//   target older than 17 at all, and a base of pg_dump 16 or older wants its own pg_restore there.

/** The major of a `pg_restore --version` / `pg_dump --version` text, or undefined. */
export function clientMajor(versionText: string): number | undefined {
  const m = /\(PostgreSQL\) (\d+)(?:\.(\d+))?/.exec(versionText);
  if (!m) return undefined;
  return Number(m[1]) >= 10 ? Number(m[1]) : Number(`${m[1]}.${m[2] ?? 0}`);
}

/** The message that explains why this pg_restore cannot load this base into this target, or undefined. */
export function pgRestoreVersionProblem(opts: { pgRestorePath: string; pgRestoreVersion: string; baseDumpVersion?: string; targetVersionNum: number }): string | undefined {
  const restoreMajor = clientMajor(opts.pgRestoreVersion);
  const dumpMajor = opts.baseDumpVersion ? clientMajor(opts.baseDumpVersion) : undefined;
  const targetMajor = opts.targetVersionNum >= 100000 ? Math.floor(opts.targetVersionNum / 10000) : Math.floor(opts.targetVersionNum / 100) / 100;
  if (dumpMajor !== undefined && dumpMajor >= 17 && targetMajor < 17) {
    return `the base was written by pg_dump ${dumpMajor} and the target runs PostgreSQL ${targetMajor}: only pg_restore ${dumpMajor} or newer reads it, and those stop on a server older than 17 (they set transaction_timeout, which it lacks); restore into PostgreSQL 17 or newer`;
  }
  if (restoreMajor === undefined) return undefined;
  if (dumpMajor !== undefined && restoreMajor < dumpMajor) {
    return `${opts.pgRestorePath} is pg_restore ${restoreMajor} and the base was written by pg_dump ${dumpMajor}: pg_restore reads only archives of its own major or older; point basebackup.pgRestorePath at pg_restore ${dumpMajor} or newer`;
  }
  if (restoreMajor >= 17 && targetMajor < 17) {
    return `${opts.pgRestorePath} is pg_restore ${restoreMajor}, which stops on a PostgreSQL ${targetMajor} target (it sets transaction_timeout, which servers before 17 lack); point basebackup.pgRestorePath at pg_restore ${Math.max(dumpMajor ?? 0, targetMajor)}`;
  }
  return undefined;
}
