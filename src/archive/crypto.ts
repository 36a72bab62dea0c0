import { createCipheriv, createDecipheriv, randomBytes, type CipherGCM, type DecipherGCM } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { CdpError, ErrorCodes, IntegrityError, toError } from '../errors.js';
import type { Keyring, MasterKey } from './keyring.js';

// Client-side encryption (DESIGN.md G5 and "Envelope"): the one envelope module, used by segments
// (whole buffers) and bases (streams). AES-256-GCM under a fresh random data key per object; the
// data key is wrapped by the operator's master key, so the master key never touches bulk data and
// GCM's per-key limits are per object.
//
// Envelope v2 (written by this version):
//   "KCDPENC2" | uint32 BE n | header JSON (n bytes) | ciphertext | 16-byte GCM tag
//   header = {v: 2, alg, keyId, wrappedKey, wrapIv, wrapTag, iv, archive, object}
// The tag trails the body so that a base can be sealed while it streams out of pg_dump.
//
// Binding. Every v2 object is bound to WHERE it belongs: its archive (the archive root
// `<s3.prefix>/<database>`, taken from the configuration of the reading process, never from the
// bucket) and its object name relative to that root. A segment's name ends in the SHA-256 of its
// sealed bytes, which cannot be known before sealing, so the bound name is the segment's name
// without "-<sha256>.avro"; the hash part is bound anyway, because every read checks the stored
// bytes against it first. The binding enters both GCM operations as additional authenticated data
// (the data-key wrap: keyId + binding; the body: the whole stored prefix, header included, +
// binding), so an object moved or renamed inside the archive, copied from another archive, or
// with any header field edited fails to open. The header repeats archive and object only to say,
// in the error, where an object was sealed for.
//
// Downgrades. With a key configured, a plaintext object is an integrity error (it is what an
// attacker without the key can write). Envelope v1 objects (written before v2: "KCDPENC1" segments,
// and bases whose manifest carries the wrapped key) authenticate their content but not their name,
// so a v1 object could be moved or replayed unnoticed: they open only when the operator sets
// archive.acceptLegacyEnvelopes for an archive written before v2. A v1 segment is then also
// checked against its name (partition, offsets, LSN in its authenticated manifest: segment.ts).

// The master keys and their configuration: keyring.ts (kept importable from here).
export { keyIdOf, keyringOf, loadKeyring, parseMasterKey, type Keyring, type MasterKey } from './keyring.js';

export const ENVELOPE_V1_MAGIC = Buffer.from('KCDPENC1', 'ascii');
export const ENVELOPE_V2_MAGIC = Buffer.from('KCDPENC2', 'ascii');
/** Kept for readers of the old name. */
export const ENCRYPTION_MAGIC = ENVELOPE_V1_MAGIC;
const TAG_BYTES = 16;
const MAX_HEADER_BYTES = 64 * 1024;

/** What both envelope versions carry: the data key wrapped by the master key, and the data IV. */
interface WrappedKeyHeader {
  alg: 'AES-256-GCM';
  keyId: string;
  wrappedKey: string;
  wrapIv: string;
  wrapTag: string;
  iv: string;
}

interface HeaderV2 extends WrappedKeyHeader {
  v: 2;
  archive: string;
  object: string;
}

interface HeaderV1 extends WrappedKeyHeader {
  v: 1;
  tag: string;
}

/** What a base manifest said about a v1-encrypted dump (the header lived in the manifest). */
export interface LegacyBaseEncryption {
  keyId: string;
  /** base64 of wrapIv (12) | wrapTag (16) | wrapped data key (32). */
  wrappedKey?: string;
  iv?: string;
  tag?: string;
}

export type EnvelopeKind = 'plain' | 'v1' | 'v2';

export function envelopeOf(bytes: Uint8Array): EnvelopeKind {
  const head = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, 8));
  if (head.length === 8 && head.equals(ENVELOPE_V2_MAGIC)) return 'v2';
  if (head.length === 8 && head.equals(ENVELOPE_V1_MAGIC)) return 'v1';
  return 'plain';
}

export function isEncrypted(bytes: Uint8Array): boolean {
  return envelopeOf(bytes) !== 'plain';
}

/**
 * The name an object is bound to: its key relative to the archive root, without a segment's
 * trailing "-<sha256>.avro" (the hash of the sealed bytes, checked on every read instead). A key
 * outside the archive root is refused: nothing outside the archive opens under its binding.
 */
export function objectBinding(archive: string, key: string): string {
  const prefix = `${archive}/`;
  if (!key.startsWith(prefix) || key.length === prefix.length) {
    throw new IntegrityError(`${key} is not an object of the archive ${prefix}: an encrypted object opens only under the name and archive it was written for`, {
      details: { key, archive },
    });
  }
  return key.slice(prefix.length).replace(/-[0-9a-f]{64}\.avro$/, '');
}

function bindingAad(archive: string, object: string): Buffer {
  // JSON keeps the two strings unambiguous whatever characters they hold.
  return Buffer.from(`katya-cdp envelope v2 binding ${JSON.stringify([archive, object])}`, 'utf8');
}

function wrapAad(keyId: string, binding: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${keyId}\n`, 'ascii'), binding]);
}

function noKeyError(what: string, keyId: string, keyring: Keyring | undefined): CdpError {
  const have = keyring ? `which is not in the configured keyring (configured key id ${keyring.current.id})` : 'but no encryption key is configured';
  return new CdpError(
    ErrorCodes.ENCRYPTION,
    `${what} is encrypted with master key id ${keyId}, ${have}; set archive.encryptionKeyFile or archive.encryptionKeyEnv (CDP_ENCRYPTION_KEY_FILE / CDP_ENCRYPTION_KEY_ENV) to the key with id ${keyId}`,
    { details: { keyId, configuredKeyId: keyring?.current.id } },
  );
}

function plaintextError(what: string): IntegrityError {
  return new IntegrityError(
    `${what} is not encrypted, but an encryption key is configured: this archive's objects are sealed and bound to their name, so an unencrypted one was put there by someone else. Run cdp verify and restore the object from the offsite copy (cdp replicate)`,
  );
}

function legacyRefused(what: string): IntegrityError {
  return new IntegrityError(
    `${what} uses envelope v1, which does not bind an object to its name and archive (it could have been moved or replayed). If this archive was written before envelope v2, set archive.acceptLegacyEnvelopes: true (CDP_ACCEPT_LEGACY_ENVELOPES=true) for this command; a new base backup makes older v1 objects unnecessary for later targets`,
  );
}

// --- sealing (v2) ---

class Sealer {
  readonly prefix: Buffer;
  private readonly cipher: CipherGCM;

  constructor(master: MasterKey, archive: string, object: string) {
    const binding = bindingAad(archive, object);
    const dataKey = randomBytes(32);
    // 96-bit random IVs, the length GCM is defined for (SP 800-38D 8.2.2); each key seals once.
    const wrapIv = randomBytes(12);
    const w = createCipheriv('aes-256-gcm', master.key, wrapIv);
    w.setAAD(wrapAad(master.id, binding));
    const wrapped = Buffer.concat([w.update(dataKey), w.final()]);
    const iv = randomBytes(12);
    const header: HeaderV2 = {
      v: 2,
      alg: 'AES-256-GCM',
      keyId: master.id,
      wrappedKey: wrapped.toString('base64'),
      wrapIv: wrapIv.toString('base64'),
      wrapTag: w.getAuthTag().toString('base64'),
      iv: iv.toString('base64'),
      archive,
      object,
    };
    const h = Buffer.from(JSON.stringify(header), 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(h.length);
    this.prefix = Buffer.concat([ENVELOPE_V2_MAGIC, len, h]);
    this.cipher = createCipheriv('aes-256-gcm', dataKey, iv);
    this.cipher.setAAD(Buffer.concat([this.prefix, binding]));
  }

  update(chunk: Buffer): Buffer {
    return this.cipher.update(chunk);
  }

  final(): Buffer {
    return Buffer.concat([this.cipher.final(), this.cipher.getAuthTag()]);
  }
}

/** Seals a whole object (a segment) for the object key it will be stored under. */
export function sealObject(plain: Buffer, keyring: Keyring, key: string): Buffer {
  const s = new Sealer(keyring.current, keyring.archive, objectBinding(keyring.archive, key));
  return Buffer.concat([s.prefix, s.update(plain), s.final()]);
}

/** A stream that seals what passes through it (a base dump) for `key`. */
export function sealStream(keyring: Keyring, key: string): Transform {
  const s = new Sealer(keyring.current, keyring.archive, objectBinding(keyring.archive, key));
  let started = false;
  return new Transform({
    transform(chunk: Buffer, _e, cb) {
      const out = s.update(chunk);
      if (!started) {
        started = true;
        cb(null, Buffer.concat([s.prefix, out]));
      } else cb(null, out);
    },
    flush(cb) {
      cb(null, started ? s.final() : Buffer.concat([s.prefix, s.final()]));
    },
  });
}

// --- opening (v2) ---

/** Parses a v2 prefix; undefined while more bytes are needed. */
function parseV2Prefix(buf: Buffer, what: string): { header: HeaderV2; prefix: Buffer } | undefined {
  if (buf.length < 12) return undefined;
  const n = buf.readUInt32BE(8);
  if (n > MAX_HEADER_BYTES) throw new IntegrityError(`${what}: encryption header of ${n} bytes (corrupt)`);
  if (buf.length < 12 + n) return undefined;
  let header: HeaderV2;
  try {
    header = JSON.parse(buf.subarray(12, 12 + n).toString('utf8')) as HeaderV2;
  } catch (err) {
    throw new IntegrityError(`${what}: unreadable encryption header (${toError(err).message})`, { cause: err });
  }
  const fields = ['keyId', 'wrappedKey', 'wrapIv', 'wrapTag', 'iv', 'archive', 'object'] as const;
  if (header.v !== 2 || header.alg !== 'AES-256-GCM' || fields.some((f) => typeof header[f] !== 'string')) {
    throw new IntegrityError(`${what}: unsupported encryption header ${JSON.stringify({ v: header.v, alg: header.alg })}`);
  }
  return { header, prefix: Buffer.from(buf.subarray(0, 12 + n)) };
}

/** Unwraps the data key of a v2 object stored at `key`, and returns a decipher for its body. */
function v2Decipher(header: HeaderV2, prefix: Buffer, keyring: Keyring | undefined, key: string | undefined, what: string): DecipherGCM {
  const master = keyring?.keys.get(header.keyId);
  if (!keyring || !master) throw noKeyError(what, header.keyId, keyring);
  if (key === undefined) throw new Error(`${what}: opening an encrypted object needs its object key`);
  const object = objectBinding(keyring.archive, key);
  const binding = bindingAad(keyring.archive, object);
  let dataKey: Buffer;
  try {
    const w = createDecipheriv('aes-256-gcm', master, Buffer.from(header.wrapIv, 'base64'));
    w.setAAD(wrapAad(header.keyId, binding));
    w.setAuthTag(Buffer.from(header.wrapTag, 'base64'));
    dataKey = Buffer.concat([w.update(Buffer.from(header.wrappedKey, 'base64')), w.final()]);
  } catch (err) {
    if (header.archive !== keyring.archive || header.object !== object) {
      throw new IntegrityError(
        `${what} was sealed as object ${JSON.stringify(header.object)} of archive ${JSON.stringify(header.archive)}, but is stored as ${JSON.stringify(object)} of ${JSON.stringify(keyring.archive)}: it was moved, renamed or copied from another archive`,
        { cause: err, details: { key, sealedFor: { archive: header.archive, object: header.object } } },
      );
    }
    throw new CdpError(
      ErrorCodes.ENCRYPTION,
      `${what}: cannot unwrap its data key with master key id ${header.keyId}; the key file holds a different key with the same id, or the header was altered`,
      { cause: err, details: { keyId: header.keyId } },
    );
  }
  const d = createDecipheriv('aes-256-gcm', dataKey, Buffer.from(header.iv, 'base64'));
  d.setAAD(Buffer.concat([prefix, binding]));
  return d;
}

function bodyAuthFailed(what: string, err: unknown): IntegrityError {
  return new IntegrityError(`${what}: authentication of the encrypted body failed (bytes altered after encryption)`, { cause: err });
}

// --- opening (v1, legacy) ---

function openV1Object(bytes: Buffer, keyring: Keyring, what: string): Buffer {
  const start = ENVELOPE_V1_MAGIC.length;
  if (bytes.length < start + 4) throw new IntegrityError(`${what}: truncated encryption header`);
  const n = bytes.readUInt32BE(start);
  if (n > MAX_HEADER_BYTES || start + 4 + n > bytes.length) throw new IntegrityError(`${what}: truncated encryption header`);
  let header: HeaderV1;
  try {
    header = JSON.parse(bytes.subarray(start + 4, start + 4 + n).toString('utf8')) as HeaderV1;
    if (header.v !== 1 || header.alg !== 'AES-256-GCM' || typeof header.keyId !== 'string') throw new Error(`unsupported envelope ${header.v}/${header.alg}`);
  } catch (err) {
    throw new IntegrityError(`${what}: unreadable encryption header (${toError(err).message})`, { cause: err });
  }
  const master = keyring.keys.get(header.keyId);
  if (!master) throw noKeyError(what, header.keyId, keyring);
  // v1 bound only the key id.
  const aad = Buffer.from(header.keyId, 'ascii');
  let dataKey: Buffer;
  try {
    const w = createDecipheriv('aes-256-gcm', master, Buffer.from(header.wrapIv, 'base64'));
    w.setAAD(aad);
    w.setAuthTag(Buffer.from(header.wrapTag, 'base64'));
    dataKey = Buffer.concat([w.update(Buffer.from(header.wrappedKey, 'base64')), w.final()]);
  } catch (err) {
    throw new CdpError(
      ErrorCodes.ENCRYPTION,
      `${what}: cannot unwrap its data key with master key id ${header.keyId}; the key file holds a different key with the same id, or the header was altered`,
      { cause: err, details: { keyId: header.keyId } },
    );
  }
  try {
    const d = createDecipheriv('aes-256-gcm', dataKey, Buffer.from(header.iv, 'base64'));
    d.setAAD(aad);
    d.setAuthTag(Buffer.from(header.tag, 'base64'));
    return Buffer.concat([d.update(bytes.subarray(start + 4 + n)), d.final()]);
  } catch (err) {
    throw bodyAuthFailed(what, err);
  }
}

/** A decipher for a v1 base dump, whose envelope header was kept in its manifest. */
function v1BaseDecipher(enc: LegacyBaseEncryption, keyring: Keyring, what: string): DecipherGCM {
  const master = keyring.keys.get(enc.keyId);
  if (!master) throw noKeyError(what, enc.keyId, keyring);
  const packed = Buffer.from(enc.wrappedKey ?? '', 'base64');
  if (packed.length < 28 + 32 || !enc.iv || !enc.tag) throw new IntegrityError(`${what}: its manifest's encryption fields are incomplete`);
  const aad = Buffer.from(enc.keyId, 'ascii');
  let dataKey: Buffer;
  try {
    const w = createDecipheriv('aes-256-gcm', master, packed.subarray(0, 12));
    w.setAAD(aad);
    w.setAuthTag(packed.subarray(12, 28));
    dataKey = Buffer.concat([w.update(packed.subarray(28)), w.final()]);
  } catch (err) {
    throw new CdpError(ErrorCodes.ENCRYPTION, `${what}: cannot unwrap its data key with master key id ${enc.keyId} (wrong key, or the manifest was altered)`, {
      cause: err,
    });
  }
  const d = createDecipheriv('aes-256-gcm', dataKey, Buffer.from(enc.iv, 'base64'));
  d.setAAD(aad);
  d.setAuthTag(Buffer.from(enc.tag, 'base64'));
  return d;
}

// --- the entry points readers use ---

/**
 * Opens a stored whole object (a segment) read from `key`. Without a keyring, a plaintext object is
 * returned as is and an encrypted one is CDP_ENCRYPTION. With a keyring, only a v2 object sealed
 * for `key` in this archive opens (v1 with acceptLegacy); anything else is an integrity error.
 */
export function openObject(bytes: Buffer, keyring: Keyring | undefined, key: string | undefined, what: string): { plain: Buffer; envelope: EnvelopeKind } {
  const kind = envelopeOf(bytes);
  if (kind === 'plain') {
    if (keyring) throw plaintextError(what);
    return { plain: bytes, envelope: kind };
  }
  if (kind === 'v1') {
    if (!keyring) {
      const keyId = /"keyId":"([0-9a-f]+)"/.exec(bytes.subarray(0, 512).toString('latin1'))?.[1] ?? 'unknown';
      throw noKeyError(what, keyId, undefined);
    }
    if (!keyring.acceptLegacy) throw legacyRefused(what);
    return { plain: openV1Object(bytes, keyring, what), envelope: kind };
  }
  const parsed = parseV2Prefix(bytes, what);
  if (!parsed || bytes.length < parsed.prefix.length + TAG_BYTES) throw new IntegrityError(`${what}: truncated encrypted object`);
  const d = v2Decipher(parsed.header, parsed.prefix, keyring, key, what);
  d.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
  try {
    return { plain: Buffer.concat([d.update(bytes.subarray(parsed.prefix.length, bytes.length - TAG_BYTES)), d.final()]), envelope: kind };
  } catch (err) {
    throw bodyAuthFailed(what, err);
  }
}

/** Streaming v2 opener: holds back the trailing tag, checks it at the end. */
class OpenV2Stream extends Transform {
  private head: Buffer = Buffer.alloc(0);
  private decipher: DecipherGCM | undefined;
  private tail: Buffer = Buffer.alloc(0);

  constructor(
    private readonly keyring: Keyring,
    private readonly key: string,
    private readonly what: string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    try {
      if (!this.decipher) {
        this.head = Buffer.concat([this.head, chunk]);
        if (this.head.length >= 8 && envelopeOf(this.head) !== 'v2')
          throw envelopeOf(this.head) === 'v1' ? legacyRefused(this.what) : plaintextError(this.what);
        const parsed = parseV2Prefix(this.head, this.what);
        if (!parsed) return cb();
        this.decipher = v2Decipher(parsed.header, parsed.prefix, this.keyring, this.key, this.what);
        chunk = this.head.subarray(parsed.prefix.length);
        this.head = Buffer.alloc(0);
      }
      const all = this.tail.length > 0 ? Buffer.concat([this.tail, chunk]) : chunk;
      if (all.length <= TAG_BYTES) {
        this.tail = Buffer.from(all);
        return cb();
      }
      this.tail = Buffer.from(all.subarray(all.length - TAG_BYTES));
      cb(null, this.decipher.update(all.subarray(0, all.length - TAG_BYTES)));
    } catch (err) {
      cb(toError(err));
    }
  }

  override _flush(cb: TransformCallback): void {
    if (!this.decipher) {
      const kind = envelopeOf(this.head);
      return cb(
        kind === 'v2' || this.head.length < 8
          ? new IntegrityError(`${this.what}: truncated encrypted object`)
          : kind === 'v1'
            ? legacyRefused(this.what)
            : plaintextError(this.what),
      );
    }
    if (this.tail.length < TAG_BYTES) return cb(new IntegrityError(`${this.what}: truncated encrypted object`));
    try {
      this.decipher.setAuthTag(this.tail);
      cb(null, this.decipher.final());
    } catch (err) {
      cb(bodyAuthFailed(this.what, err));
    }
  }
}

/** Wraps GCM errors of a legacy base decipher into an integrity error. */
function legacyStream(d: DecipherGCM, what: string): Transform {
  return new Transform({
    transform(chunk: Buffer, _e, cb) {
      cb(null, d.update(chunk));
    },
    flush(cb) {
      try {
        cb(null, d.final());
      } catch (err) {
        cb(bodyAuthFailed(what, err));
      }
    },
  });
}

/**
 * The stage that opens a base dump streamed from `key`, or undefined when it is stored in clear
 * (no keyring, no encryption in its manifest). `manifestEncryption` is what the (unauthenticated)
 * manifest says; with a keyring, it only decides whether a v1 base is tried (acceptLegacy).
 */
export function openBaseStream(
  keyring: Keyring | undefined,
  key: string,
  manifestEncryption: (LegacyBaseEncryption & { envelope?: number }) | null | undefined,
  what: string,
): Transform | undefined {
  if (!keyring) {
    if (manifestEncryption) throw noKeyError(what, manifestEncryption.keyId, undefined);
    return undefined;
  }
  if (manifestEncryption && manifestEncryption.envelope !== 2) {
    if (!keyring.acceptLegacy) throw legacyRefused(what);
    return legacyStream(v1BaseDecipher(manifestEncryption, keyring, what), what);
  }
  return new OpenV2Stream(keyring, key, what);
}
