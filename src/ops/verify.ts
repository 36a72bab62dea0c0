import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { CommandContext } from '../cli/main.js';
import { archiveRoot } from '../config/config.js';
import { ExitCode, toError } from '../errors.js';
import { listSegments, readArchiveManifest } from '../archive/catalog.js';
import { loadKeyring } from '../archive/crypto.js';
import { fetchSegment } from '../archive/segment.js';
import { createStore } from '../s3/client.js';
import { listBases } from './status.js';
import type { BaseManifestExt } from '../base/basebackup.js';
import { checkBase } from '../restore/base-restore.js';

// `cdp verify`: reads every stored object back and checks it against its recorded SHA-256 (G5),
// decodes every segment, and checks that each partition's segments cover a contiguous run of
// offsets (a hole would mean changes that were committed in Kafka but never stored). --deep also
// restores the latest point into a scratch database. Exit 3 when anything is wrong.

export interface VerifyProblem {
  what: string;
  problem: string;
}

export async function verifyArchive(ctx: CommandContext): Promise<{ segments: number; bases: number; problems: VerifyProblem[] }> {
  const { cfg, log } = ctx;
  const store = createStore(cfg, log, { signal: ctx.signal, maxElapsedMs: 60_000 });
  const root = archiveRoot(cfg);
  const keyring = loadKeyring(cfg);
  const problems: VerifyProblem[] = [];
  const manifest = await readArchiveManifest(store, root);
  if (!manifest) return { segments: 0, bases: 0, problems: [{ what: root, problem: 'no archive.json: run cdp setup' }] };
  let segments = 0;
  for (let p = 0; p < manifest.partitions; p++) {
    let covered: bigint | undefined;
    for await (const seg of listSegments(store, root, p, 0)) {
      segments += 1;
      const first = BigInt(seg.firstOffset);
      const last = BigInt(seg.lastOffset);
      if (covered !== undefined && first > covered + 1n) {
        problems.push({ what: `partition ${p}`, problem: `offsets ${covered + 1n}..${first - 1n} are in no segment (gap before ${seg.key})` });
      }
      covered = covered === undefined || last > covered ? last : covered;
      try {
        const opened = await fetchSegment(store, seg.key, seg.sha256, keyring);
        let n = 0;
        for (const block of opened.blocks()) n += block.length;
        if (n !== opened.manifest.count) problems.push({ what: seg.key, problem: `holds ${n} records, its manifest says ${opened.manifest.count}` });
      } catch (err) {
        problems.push({ what: seg.key, problem: toError(err).message });
      }
    }
  }
  const bases = await listBases(store, root);
  for (const b of bases) {
    try {
      // Size, SHA-256 and, with a key, the envelope bound to this base (crypto.ts), as restore reads it.
      await checkBase(store, b as unknown as BaseManifestExt, keyring);
    } catch (err) {
      problems.push({ what: b.key, problem: toError(err).message });
    }
  }
  if (bases.length === 0) problems.push({ what: root, problem: 'no base backup: run cdp basebackup' });
  return { segments, bases: bases.length, problems };
}

export async function runVerify(ctx: CommandContext, opts: { deep: boolean }): Promise<number> {
  const result = await verifyArchive(ctx);
  let deep: string | undefined;
  let deepReport: Record<string, unknown> | undefined;
  if (opts.deep && result.problems.length === 0) {
    const scratch = `cdp_verify_${randomBytes(4).toString('hex')}`;
    const admin = new pg.Client({ connectionString: ctx.cfg.source.url });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${scratch}`);
      const into = new URL(ctx.cfg.source.url);
      into.pathname = `/${scratch}`;
      const { runRestore } = await import('../restore/restore.js');
      let restored: Record<string, unknown> | undefined;
      const code = await runRestore(ctx, { into: into.toString(), latest: true, dryRun: false, force: false }, (r) => (restored = r));
      deep =
        code === ExitCode.ok
          ? `test restore of the latest point into ${scratch} succeeded`
          : `test restore failed with exit ${code}`;
      if (restored) deepReport = restored;
      if (code !== ExitCode.ok) result.problems.push({ what: 'deep', problem: deep });
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${scratch} WITH (FORCE)`).catch(() => {});
      await admin.end();
    }
  }
  process.stdout.write(JSON.stringify({ ok: result.problems.length === 0, segments: result.segments, bases: result.bases, deep, deepRestore: deepReport, problems: result.problems }, null, 2) + '\n');
  return result.problems.length === 0 ? ExitCode.ok : ExitCode.integrity;
}
