import { S3Client } from '@aws-sdk/client-s3';
import type { CommandContext } from '../context.js';
import { archiveRoot } from '../config/config.js';
import { createStore, getObject, listObjects, putMutable, putOnce, type Store } from '../s3/client.js';

// `cdp replicate`: the offsite copy of 3-2-1. Copies every object of this database's archive that
// the destination lacks. Segments and bases are write-once, so "present with the same size" means
// copied; putOnce checks the bytes when a key exists. Pointers (state/, archive.json) are mutable
// and copied every time. Objects are read fully into memory one at a time (segments are bounded by
// archive.segmentMaxBytes; very large bases would want a streaming copy: see README, Limits).

export interface ReplicateReport {
  /** The destination, s3://bucket/root/. */
  to: string;
  copied: number;
  alreadyThere: number;
}

export async function replicateArchive(ctx: CommandContext, opts: { toBucket: string; toEndpoint?: string }): Promise<ReplicateReport> {
  const { cfg, log } = ctx;
  const src = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 120_000 });
  const dst: Store = {
    ...src,
    bucket: opts.toBucket,
    client: opts.toEndpoint ? new S3Client({ region: cfg.s3.region, endpoint: opts.toEndpoint, forcePathStyle: true, maxAttempts: 3 }) : src.client,
  };
  const root = archiveRoot(cfg);
  const have = new Map<string, number>();
  for await (const o of listObjects(dst, `${root}/`)) have.set(o.key, o.size);
  let copied = 0;
  let skipped = 0;
  for await (const o of listObjects(src, `${root}/`)) {
    const mutable = o.key.endsWith('/archive.json') || o.key.includes('/state/');
    if (!mutable && have.get(o.key) === o.size) {
      skipped += 1;
      continue;
    }
    const body = await getObject(src, o.key);
    if (mutable) await putMutable(dst, o.key, body);
    else await putOnce(dst, o.key, body);
    copied += 1;
  }
  return { to: `s3://${opts.toBucket}/${root}/`, copied, alreadyThere: skipped };
}
