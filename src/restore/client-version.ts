// Whether the pg_restore we are about to run can load a base into this target (issue 10, the
// version matrix). Two facts of the PostgreSQL client programs, checked before pg_restore runs:
// - pg_restore reads archives of its own major and older only ("unsupported version (1.16) in file
//   header"): a base written by pg_dump 17 needs pg_restore 17 or newer.
// - pg_restore 17 and 18 open each connection with `SET transaction_timeout = 0`, a setting that
//   servers before 17 do not have, so with --exit-on-error they stop at once on a 16 target
//   (checked with Debian's 17.12 and 18.6). For such a target restore writes the base as an SQL
//   script instead (pg_restore -f -), drops that one line of its header, and feeds the rest to the
//   psql beside that pg_restore (base-restore.ts, scriptMode).

/** The major of a `pg_restore --version` / `pg_dump --version` text, or undefined. */
export function clientMajor(versionText: string): number | undefined {
  const m = /\(PostgreSQL\) (\d+)(?:\.(\d+))?/.exec(versionText);
  if (!m) return undefined;
  return Number(m[1]) >= 10 ? Number(m[1]) : Number(`${m[1]}.${m[2] ?? 0}`);
}

/** The message that explains why this pg_restore cannot load this base into this target, or undefined. */
export function pgRestoreVersionProblem(opts: {
  pgRestorePath: string;
  pgRestoreVersion: string;
  baseDumpVersion?: string;
  targetVersionNum: number;
}): string | undefined {
  const restoreMajor = clientMajor(opts.pgRestoreVersion);
  const dumpMajor = opts.baseDumpVersion ? clientMajor(opts.baseDumpVersion) : undefined;
  if (restoreMajor === undefined) return undefined;
  if (dumpMajor !== undefined && restoreMajor < dumpMajor) {
    return `${opts.pgRestorePath} is pg_restore ${restoreMajor} and the base was written by pg_dump ${dumpMajor}: pg_restore reads only archives of its own major or older; point basebackup.pgRestorePath at pg_restore ${dumpMajor} or newer`;
  }
  return undefined;
}

/**
 * pg_restore 17+ into a server before 17: load the base as an SQL script through psql, without the
 * header's `SET transaction_timeout` (see the file comment).
 */
export function scriptMode(pgRestoreVersion: string, targetVersionNum: number): boolean {
  const restoreMajor = clientMajor(pgRestoreVersion);
  return restoreMajor !== undefined && restoreMajor >= 17 && targetVersionNum < 170000;
}

/**
 * The script's lines with the header's `SET transaction_timeout = 0;` left out. Only in the header
 * (before the first line that is not a SET, a set_config SELECT, a comment, a psql \restrict or
 * empty): after it, a line of COPY data could hold the same text.
 */
export class ScriptHeaderFilter {
  private inHeader = true;
  private rest = '';
  push(chunk: string): string {
    if (!this.inHeader) return chunk;
    const text = this.rest + chunk;
    const lines = text.split('\n');
    this.rest = lines.pop()!;
    let out = '';
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (this.inHeader && !/^(SET |SELECT pg_catalog\.set_config\(|--|\\restrict |$)/.test(line)) {
        this.inHeader = false;
        out += lines.slice(i).join('\n') + '\n';
        break;
      }
      if (line !== 'SET transaction_timeout = 0;') out += line + '\n';
    }
    if (!this.inHeader) {
      out += this.rest;
      this.rest = '';
    }
    return out;
  }
  end(): string {
    const r = this.rest;
    this.rest = '';
    return r === 'SET transaction_timeout = 0;' && this.inHeader ? '' : r;
  }
}
