import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { objectBinding, type Keyring } from '../archive/crypto.js';
import { basesPrefix, parseBaseKey } from '../archive/layout.js';
import { IntegrityError, toError } from '../errors.js';
import { getObject, listObjects, type Store } from '../s3/client.js';
import type { BaseManifestExt } from './basebackup.js';

// A base manifest decides which dump a restore starts from, the LSN it replays from, the time a
// --time target is compared with, and (synthetic.rootBase) which recorded breaks a base covers.
// The dump itself is sealed for its own object name (crypto.ts), but the manifest is plain JSON:
// someone with write access to the bucket and no key could write bases/<later lsn>/manifest.json
// pointing at an older, genuine dump, and a restore would replay only from the later LSN, silently
// missing the changes in between. Two checks close that:
//
// - binding (always): a manifest describes the dump in its own folder (`key` is <folder>base.dump)
//   and its `lsn` is the folder's LSN. With encryption on, the dump opens only under its own name,
//   so this pins the LSN to the dump.
// - MAC (with a keyring): `mac` is HMAC-SHA256 over the manifest's other fields and its object
//   name, under a key derived from the master key (HKDF, RFC 5869). It covers every field, time
//   and synthetic provenance included. Manifests written before the MAC (no `mac`) are accepted
//   only with archive.acceptLegacyEnvelopes, as v1 envelopes are.

export interface ManifestMac {
  v: 1;
  keyId: string;
  /** base64 of HMAC-SHA256 */
  hmac: string;
}

type SignedManifest = BaseManifestExt & { mac?: ManifestMac };

function macKey(master: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.from('katya-cdp', 'utf8'), Buffer.from('base manifest mac v1', 'utf8'), 32));
}

function macOf(master: Buffer, archive: string, manifestKey: string, body: BaseManifestExt): Buffer {
  const { mac: _drop, ...fields } = body as SignedManifest;
  const text = `katya-cdp base manifest v1 ${JSON.stringify([archive, objectBinding(archive, manifestKey)])}\n${JSON.stringify(fields)}`;
  return createHmac('sha256', macKey(master)).update(text, 'utf8').digest();
}

/** The bytes to store at `manifestKey`: the manifest, with its MAC when a keyring is configured. */
export function encodeManifest(manifest: BaseManifestExt, manifestKey: string, keyring: Keyring | undefined): Buffer {
  const { mac: _old, ...fields } = manifest as SignedManifest;
  const out: SignedManifest = keyring
    ? { ...fields, mac: { v: 1, keyId: keyring.current.id, hmac: macOf(keyring.current.key, keyring.archive, manifestKey, fields).toString('base64') } }
    : fields;
  return Buffer.from(JSON.stringify(out, null, 1));
}

function forged(manifestKey: string, why: string): IntegrityError {
  return new IntegrityError(
    `base manifest ${manifestKey} ${why}: it was not written by cdp for the base it sits beside (altered, moved, or forged by someone with write access to the bucket). ` +
      'No restore will start from it: inspect it, delete that base folder, and restore it from the offsite copy (cdp replicate) if it was genuine',
    { details: { key: manifestKey } },
  );
}

/**
 * Parses and checks one manifest read from `manifestKey`. Throws IntegrityError (exit 3) when the
 * manifest is not bound to its folder or its MAC does not check out.
 */
export function parseManifest(manifestKey: string, bytes: Buffer, keyring: Keyring | undefined): BaseManifestExt {
  let m: SignedManifest;
  try {
    m = JSON.parse(bytes.toString('utf8')) as SignedManifest;
  } catch (err) {
    throw forged(manifestKey, `is not valid JSON (${toError(err).message})`);
  }
  if (typeof m !== 'object' || m === null) throw forged(manifestKey, 'is not a JSON object');
  const where = parseBaseKey(manifestKey);
  if (!where || where.file !== 'manifest.json') throw forged(manifestKey, 'is not at bases/<lsn>[-synthetic-<run>]/manifest.json');
  if (m.key !== `${where.dir}base.dump`) throw forged(manifestKey, `names the dump ${String(m.key)}, not the one in its own folder (${where.dir}base.dump)`);
  if (m.lsn !== where.lsn) throw forged(manifestKey, `says LSN ${String(m.lsnText ?? m.lsn)}, but its folder is for another LSN`);
  if (where.synthetic !== Boolean(m.synthetic))
    throw forged(
      manifestKey,
      where.synthetic ? 'sits in a synthetic base folder but does not say it is synthetic' : 'says it is synthetic but sits in a source base folder',
    );
  if (keyring) {
    const mac = m.mac;
    if (!mac) {
      if (!keyring.acceptLegacy) {
        throw new IntegrityError(
          `base manifest ${manifestKey} carries no MAC, but an encryption key is configured: manifests are authenticated since this version. ` +
            'If this base was written by an earlier version, set archive.acceptLegacyEnvelopes: true (CDP_ACCEPT_LEGACY_ENVELOPES=true) for this command; a new base backup makes it unnecessary for later targets',
          { details: { key: manifestKey } },
        );
      }
    } else {
      const master = keyring.keys.get(mac.keyId);
      if (!master) throw forged(manifestKey, `is authenticated with master key id ${String(mac.keyId)}, which is not in the configured keyring`);
      const want = macOf(master, keyring.archive, manifestKey, m);
      const got = Buffer.from(String(mac.hmac), 'base64');
      if (mac.v !== 1 || got.length !== want.length || !timingSafeEqual(got, want)) throw forged(manifestKey, 'fails its MAC');
    }
  }
  const { mac: _mac, ...fields } = m;
  return fields;
}

/** Every base manifest of the archive, oldest first, and those that fail their checks. */
export async function scanBaseManifests(
  store: Store,
  root: string,
  keyring: Keyring | undefined,
): Promise<{ bases: BaseManifestExt[]; refused: IntegrityError[] }> {
  const bases: BaseManifestExt[] = [];
  const refused: IntegrityError[] = [];
  for await (const o of listObjects(store, basesPrefix(root))) {
    if (!o.key.endsWith('/manifest.json')) continue;
    try {
      bases.push(parseManifest(o.key, await getObject(store, o.key), keyring));
    } catch (err) {
      if (!(err instanceof IntegrityError)) throw err;
      refused.push(err);
    }
  }
  return { bases: bases.sort((a, b) => a.lsn - b.lsn), refused };
}

/**
 * Every base manifest of the archive, checked (parseManifest), oldest first. A manifest that fails
 * its checks stops the listing (IntegrityError, exit 3): a restore is exact or stops loudly, and a
 * forged manifest is a sign someone else writes to the bucket.
 */
export async function listBaseManifests(store: Store, root: string, keyring: Keyring | undefined): Promise<BaseManifestExt[]> {
  const { bases, refused } = await scanBaseManifests(store, root, keyring);
  if (refused.length > 0) throw refused[0]!;
  return bases;
}
