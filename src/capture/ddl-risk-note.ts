// A note in the archive for each DDL event restore may not replay exactly (`cdp status` lists them).

import { ddlRiskKey } from '../archive/layout.js';
import { archiveRoot, type Config } from '../config/config.js';
import { toError } from '../errors.js';
import type { ChangeEvent } from '../format/change-event.js';
import { createStore, putOnce } from '../s3/client.js';
import type { Logger } from '../util/log.js';
import { formatLsn, microsToIso } from '../util/lsn.js';

/**
 * Leaves a note in the archive for `cdp status` (layout.ts ddlRiskKey). Best effort, in the
 * background: capture does not depend on S3. The content is deterministic (from the event), so a
 * capture that decodes the same event again after a restart writes the same bytes.
 */
export function recordDdlRisk(cfg: Config, log: Logger, signal: AbortSignal, ev: ChangeEvent, risk: string): void {
  const body = {
    commitLsn: formatLsn(ev.commitLsn),
    commitTime: microsToIso(ev.commitTime),
    xid: ev.xid,
    position: ev.position,
    tag: (JSON.parse(ev.content!) as { tag?: string }).tag ?? null,
    risk,
  };
  const store = createStore(cfg, log, { signal, maxElapsedMs: 60_000 });
  void putOnce(store, ddlRiskKey(archiveRoot(cfg), ev.commitLsn, ev.position), Buffer.from(JSON.stringify(body) + '\n'), { contentType: 'application/json' })
    .catch((err: unknown) =>
      log.warn(
        { err: toError(err).message },
        'could not record the DDL replay risk in the archive (cdp status will not show it; the capture log and metric do)',
      ),
    )
    .finally(() => store.client.destroy());
}
