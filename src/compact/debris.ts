import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { basesPrefix, parseBaseKey } from '../archive/layout.js';
import { listObjects, s3Error, type Store } from '../s3/client.js';
import type { Logger } from '../util/log.js';
import { reapScratchClusters } from './scratch-pg.js';

// What earlier, killed compactions left (compact.ts, protocol): synthetic base folders without a
// manifest on S3, and scratch clusters on this machine. Removed at the start of the next compaction,
// the folders only once compact.debrisGraceMinutes old.

export interface SyntheticDebris {
  dir: string;
  keys: string[];
  newest: number;
}

/** What the clean-up did, reported by cdp compact. */
export interface Cleaned {
  scratchClusters: number;
  debrisFolders: number;
  debrisKept: number;
}

/**
 * Synthetic base folders without a manifest (compactions that died), with their objects. Only
 * synthetic ones: a source base being uploaded by `cdp basebackup` also has no manifest yet.
 */
export async function listSyntheticDebris(store: Store, root: string): Promise<SyntheticDebris[]> {
  const dirs = new Map<string, { keys: string[]; manifest: boolean; newest: number }>();
  for await (const o of listObjects(store, basesPrefix(root))) {
    const k = parseBaseKey(o.key);
    if (!k || !k.synthetic) continue;
    const d = dirs.get(k.dir) ?? { keys: [], manifest: false, newest: 0 };
    d.keys.push(o.key);
    if (k.file === 'manifest.json') d.manifest = true;
    d.newest = Math.max(d.newest, o.lastModified ?? Date.now());
    dirs.set(k.dir, d);
  }
  return [...dirs.entries()].filter(([, d]) => !d.manifest).map(([dir, d]) => ({ dir, keys: d.keys, newest: d.newest }));
}

/** The debris folders old enough to remove: none written to for `graceMs`. */
export function staleDebris(debris: SyntheticDebris[], graceMs: number, now: number): SyntheticDebris[] {
  return debris.filter((d) => now - d.newest >= graceMs);
}

async function deleteKeys(store: Store, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    try {
      await store.client.send(
        new DeleteObjectsCommand({ Bucket: store.bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true } }),
      );
    } catch (err) {
      throw s3Error('compact: delete debris', err);
    }
  }
}

/**
 * Stops and removes the scratch clusters of dead compactions (not with a configured scratch URL:
 * nothing of ours runs there), and deletes the stale synthetic folders (not on a dry run).
 */
export async function cleanLeftovers(
  store: Store,
  root: string,
  opts: { scratchUrl: string | undefined; home: string; graceMinutes: number; dryRun: boolean; log: Logger },
): Promise<Cleaned> {
  const reaped = opts.scratchUrl ? [] : await reapScratchClusters(opts.home, opts.log);
  const debris = await listSyntheticDebris(store, root);
  const stale = staleDebris(debris, opts.graceMinutes * 60_000, Date.now());
  if (stale.length > 0 && !opts.dryRun) {
    await deleteKeys(
      store,
      stale.flatMap((d) => d.keys),
    );
    opts.log.info({ folders: stale.map((d) => d.dir) }, 'compact: removed synthetic base folders without manifest (compactions that did not finish)');
  }
  return {
    scratchClusters: reaped.length,
    debrisFolders: opts.dryRun ? 0 : stale.length,
    debrisKept: debris.length - (opts.dryRun ? 0 : stale.length),
  };
}
