import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import type { CommandContext } from '../context.js';
import { archiveRoot } from '../config/config.js';
import { baseDumpKey, baseManifestKey } from '../archive/layout.js';
import { listSegments, readArchiveManifest } from '../archive/catalog.js';
import { createStore, s3Error } from '../s3/client.js';
import { listBases } from './status.js';
import { loadKeyring } from '../archive/crypto.js';

// `cdp prune`: retention. Every point of the last retention.days stays restorable: that needs every
// base younger than the cutoff, the newest base older than it (the anchor a restore to the cutoff
// starts from), and every segment holding a change at or after the anchor. Older bases go, and so
// do segments whose highest commit LSN is below the anchor. Bases are never pruned to zero.
// Synthetic bases (cdp compact) are never the anchor: see below.

export interface PruneReport {
  cutoff: string;
  anchorBase: string | null;
  deletions: number;
  dryRun: boolean;
  /** With --dry-run, the keys that would be deleted. */
  keys: string[] | undefined;
}

export async function pruneArchive(ctx: CommandContext, opts: { dryRun: boolean }): Promise<PruneReport> {
  const { cfg, log } = ctx;
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 60_000 });
  const root = archiveRoot(cfg);
  const cutoffMicros = (Date.now() - cfg.retention.days * 86_400_000) * 1000;
  // Checked manifests (src/base/manifest.ts): a forged one must not decide what is deleted.
  const bases = await listBases(store, root, loadKeyring(cfg));
  // The anchor is a base taken from the source, never a synthetic one (cdp compact): every point of
  // the retention window stays restorable from a source base and the segments after it, so losing
  // or distrusting a synthetic base never loses a point. Synthetic bases older than the anchor go
  // with the rest; newer ones stay.
  const older = bases.filter((b) => b.timeMicros < cutoffMicros && !b.synthetic);
  const anchor = older[older.length - 1];
  const doomed: string[] = [];
  if (anchor) {
    for (const b of bases.filter((x) => x.lsn < anchor.lsn)) {
      if (b.synthetic) doomed.push(b.key.replace(/base\.dump$/, 'manifest.json'), b.key);
      else doomed.push(baseManifestKey(root, b.lsn), baseDumpKey(root, b.lsn));
    }
    const manifest = await readArchiveManifest(store, root);
    for (let p = 0; p < (manifest?.partitions ?? 0); p++) {
      for await (const seg of listSegments(store, root, p, 0)) if (seg.maxLsn < anchor.lsn) doomed.push(seg.key);
    }
  }
  const report = { cutoff: new Date(cutoffMicros / 1000).toISOString(), anchorBase: anchor?.lsnText ?? null, deletions: doomed.length, dryRun: opts.dryRun };
  if (!opts.dryRun) {
    // Manifests first: a base without its manifest is already "incomplete" to every reader.
    for (let i = 0; i < doomed.length; i += 1000) {
      const chunk = doomed.slice(i, i + 1000);
      try {
        await store.client.send(new DeleteObjectsCommand({ Bucket: store.bucket, Delete: { Objects: chunk.map((Key) => ({ Key })), Quiet: true } }));
      } catch (err) {
        throw s3Error('prune: delete', err);
      }
    }
  }
  return { ...report, keys: opts.dryRun ? doomed : undefined };
}
