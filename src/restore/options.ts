import { readFile } from 'node:fs/promises';
import { CdpError, ErrorCodes, toError } from '../errors.js';

// `cdp restore`'s options as the CLI, `cdp verify --deep` and `cdp compact` pass them.

export interface RestoreOptions {
  into: string;
  time?: string;
  lsn?: string;
  xid?: number;
  latest: boolean;
  tables?: string[];
  dryRun: boolean;
  sqlFile?: string;
  force: boolean;
  jobs?: number;
  /** --ddl-override FILE: JSON {"<commit LSN>#<position>": "SQL"} run in place of DDL events restore cannot replay exactly. */
  ddlOverride?: string;
  /** --ddl-role ROLE: replay DDL as this role instead of the role that ran it on the source. */
  ddlRole?: string;
  /**
   * --trust-legacy-ddl: replay DDL captured by an earlier version (no role, whole query text) as
   * the restore role. Without it or --ddl-role, such DDL stops the restore (UNSUPPORTED).
   */
  trustLegacyDdl?: boolean;
}

/** Reads --ddl-override FILE: a JSON object mapping "<commit LSN>#<position>" (as restore's error names it) to SQL. */
export async function readDdlOverrides(file: string | undefined): Promise<Map<string, string> | undefined> {
  if (!file) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new CdpError(ErrorCodes.USAGE, `--ddl-override ${file}: ${toError(err).message}; the file must be JSON: {"<commit LSN>#<position>": "<SQL>"}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new CdpError(ErrorCodes.USAGE, `--ddl-override ${file}: expected a JSON object {"<commit LSN>#<position>": "<SQL>"}`);
  }
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(parsed)) {
    if (!/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}#\d+$/.test(k) || typeof v !== 'string') {
      throw new CdpError(
        ErrorCodes.USAGE,
        `--ddl-override ${file}: entry ${JSON.stringify(k)} must be "<commit LSN>#<position>": "<SQL>" (as the restore error names it)`,
      );
    }
    out.set(k, v);
  }
  return out;
}
