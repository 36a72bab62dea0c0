import type { BaseManifestExt } from '../base/basebackup.js';
import { CdpError, ErrorCodes } from '../errors.js';
import type { Logger } from '../util/log.js';

// Step 1 of cdp compact (compact.ts): the restore into the scratch database, by restore's own code,
// to the chosen point. Restore stops (UNSUPPORTED, details.role) on DDL run by a role the scratch
// server lacks: the role is created and the restore starts again from the start into a fresh
// database, so that its report covers every replayed transaction (the base's time comes from it).
// The steps come in as functions, so that the loop is tested without a server.

export interface ScratchRestore {
  /** One restore into the scratch database (restore.ts runRestore); resolves with its report. */
  restore(): Promise<Record<string, unknown>>;
  /** Creates a role on the scratch server. */
  createRole(role: string): Promise<void>;
  /** Drops the scratch database and creates it again, empty. */
  freshDatabase(): Promise<void>;
  log: Logger;
}

/** What a restore into the scratch replayed, for the synthetic base's manifest. */
export interface Replayed {
  transactions: number;
  changes: number;
  /** The highest commit time replayed (the base's own when none was): the synthetic base's time. */
  maxCommit: number;
}

const MAX_ROLE_RETRIES = 50;

/** Restores, creating each missing role restore stops on (at most 50 times); returns the last restore's report. */
export async function restoreWithRoles(s: ScratchRestore): Promise<Record<string, unknown>> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await s.restore();
    } catch (err) {
      if (err instanceof CdpError && err.code === ErrorCodes.UNSUPPORTED && err.details.legacyDdl === true) {
        // Unattended, nobody can vouch for text no role was recorded with: never trusted here.
        throw new CdpError(
          ErrorCodes.UNSUPPORTED,
          `cdp compact does not replay DDL captured by an earlier version of cdp (no role recorded, the whole query text): it runs unattended, and would run that text as a superuser on nobody's decision. ` +
            `Take a new base with cdp basebackup (compaction then starts after that DDL), or restore that period with cdp restore --ddl-role ROLE or --trust-legacy-ddl. The restore said: ${err.message}`,
          { cause: err, details: err.details },
        );
      }
      const role = err instanceof CdpError && err.code === ErrorCodes.UNSUPPORTED ? err.details.role : undefined;
      if (typeof role !== 'string' || attempt >= MAX_ROLE_RETRIES) throw err;
      await s.createRole(role);
      await s.freshDatabase();
      s.log.info({ role }, 'compact: created a role the stream names on the scratch server; restoring again');
    }
  }
}

/** The counts of a restore's report; refuses a restore that did not start from `newest`. */
export function replayedBy(report: Record<string, unknown>, newest: BaseManifestExt): Replayed {
  const reportBase = (report.base as { lsn: string }).lsn;
  if (reportBase !== newest.lsnText)
    throw new CdpError(ErrorCodes.INTERNAL, `compact: restore started from base ${reportBase}, expected the newest base ${newest.lsnText}`);
  return {
    transactions: Number(report.transactions ?? 0),
    changes: Number(report.changes ?? 0),
    maxCommit: Math.max(newest.timeMicros, Number(report.maxCommitTimeMicros ?? 0)),
  };
}
