import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { PassThrough } from 'node:stream';
import { sealStream, type Keyring } from '../archive/crypto.js';
import type { SyntheticBaseInfo } from '../archive/layout.js';
import type { BaseManifestExt } from '../base/basebackup.js';
import { CdpError, ErrorCodes } from '../errors.js';
import { checkBase } from '../restore/base-restore.js';
import type { Store } from '../s3/client.js';
import { MULTIPART_PART_SIZE, uploadMultipart } from '../s3/multipart.js';
import { hashMeter } from '../util/hash-meter.js';
import { formatLsn, microsToIso } from '../util/lsn.js';
import { fingerprintDigest } from './fingerprint.js';
import { segmentsUsed, type CompactPlan } from './plan.js';
import type { Replayed } from './replay.js';

// Steps 3 and 4 of cdp compact (compact.ts): the dump uploaded to its synthetic base folder, sealed
// with a key as every base is; the manifest that will describe it; and the read-back of what S3
// stores, through restore's own checks. The manifest itself is written last, by compact.ts.

/** Uploads `file` to `key` (sealed for it with a keyring); returns the stored object's size and SHA-256. */
export async function uploadDump(store: Store, keyring: Keyring | undefined, file: string, key: string): Promise<{ size: number; sha256: string }> {
  const meter = hashMeter();
  const body = new PassThrough({ highWaterMark: MULTIPART_PART_SIZE });
  const src = createReadStream(file);
  (keyring ? src.pipe(sealStream(keyring, key)).pipe(meter.stream) : src.pipe(meter.stream)).pipe(body);
  await uploadMultipart(store, key, body, { contentType: 'application/octet-stream', metadata: { 'cdp-kind': 'base', 'cdp-synthetic': 'true' } });
  return { size: meter.size(), sha256: meter.digest() };
}

export interface SyntheticInput {
  database: string;
  plan: CompactPlan;
  replayed: Replayed;
  fingerprints: Record<string, string>;
  /** The uploaded dump. */
  key: string;
  size: number;
  sha256: string;
  pgDumpVersion: string;
  keyring: Keyring | undefined;
  scratch: string;
}

/**
 * The synthetic base's manifest (at throughLsn + 1) and its `synthetic` part, whose `seconds` the
 * caller sets just before writing it.
 */
export function syntheticManifest(s: SyntheticInput): { manifest: BaseManifestExt; info: SyntheticBaseInfo } {
  const { newest, throughLsn } = s.plan;
  const lsn = throughLsn + 1;
  const info: SyntheticBaseInfo = {
    version: 1,
    fromBase: { lsn: newest.lsn, lsnText: newest.lsnText, key: newest.key, sha256: newest.sha256, synthetic: Boolean(newest.synthetic) },
    rootBase: s.plan.rootBase,
    throughLsn,
    throughLsnText: formatLsn(throughLsn),
    segments: segmentsUsed(s.plan.segLists, throughLsn),
    transactions: s.replayed.transactions,
    changes: s.replayed.changes,
    fingerprints: s.fingerprints,
    fingerprintDigest: fingerprintDigest(s.fingerprints),
    verified: { restoredFingerprintsMatch: true, readBack: true },
    scratch: s.scratch,
    createdAt: new Date().toISOString(),
    seconds: 0,
  };
  const manifest: BaseManifestExt = {
    version: 1,
    database: s.database,
    lsn,
    lsnText: formatLsn(lsn),
    // Every transaction in the base committed at or before this (commit times are not strictly
    // ordered with LSNs, hence the highest replayed, not the last): a --time target chooses this
    // base only when it is at or after it.
    time: microsToIso(s.replayed.maxCommit),
    timeMicros: s.replayed.maxCommit,
    key: s.key,
    size: s.size,
    sha256: s.sha256,
    serverVersion: newest.serverVersion,
    serverVersionNum: newest.serverVersionNum,
    pgDumpVersion: s.pgDumpVersion,
    encryption: s.keyring ? { keyId: s.keyring.current.id, envelope: 2 } : null,
    synthetic: info,
  };
  return { manifest, info };
}

/**
 * Reads back what S3 stores for `manifest` through restore's checks (size, SHA-256, and the
 * envelope with a key), after comparing the uploaded size with the local dump's when unsealed.
 */
export async function readBack(store: Store, manifest: BaseManifestExt, keyring: Keyring | undefined, file: string): Promise<void> {
  const localSize = (await stat(file)).size;
  if (!keyring && localSize !== manifest.size) throw new CdpError(ErrorCodes.INTEGRITY, `compact: uploaded ${manifest.size} bytes of a ${localSize}-byte dump`);
  await checkBase(store, manifest, keyring);
}
