import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Config } from '../config/config.js';
import { CdpError, ConfigError, ErrorCodes, toError } from '../errors.js';

// Optional client-side encryption (DESIGN.md G5): envelope encryption with AES-256-GCM. Each
// segment gets a fresh random 256-bit data key; the data key is itself encrypted ("wrapped") with
// the operator's master key, so rotating or revoking the master key never needs the segments'
// bulk bytes re-encrypted, and the master key never touches bulk data (NIST SP 800-38D limits on
// invocations per key are then per segment, far from reach).
//
// Object layout (everything after the magic is covered by the stored object's SHA-256):
//   "KCDPENC1" | uint32 BE header length | header JSON | ciphertext
// header = {v, alg, keyId, wrappedKey, wrapIv, wrapTag, iv, tag}, all binary fields base64.
// The key id (first 16 hex digits of SHA-256 of the master key) is bound into both GCM operations
// as additional authenticated data, so a header edited to point at another key fails to open.

export const ENCRYPTION_MAGIC = Buffer.from('KCDPENC1', 'ascii');

export interface MasterKey {
  id: string;
  key: Buffer;
}

/** The master keys this process can open; `current` encrypts new objects. */
export interface Keyring {
  current: MasterKey;
  keys: Map<string, Buffer>;
}

export interface EnvelopeHeader {
  v: 1;
  alg: 'AES-256-GCM';
  keyId: string;
  wrappedKey: string;
  wrapIv: string;
  wrapTag: string;
  iv: string;
  tag: string;
}

export function keyIdOf(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

/** Parses a 32-byte key written as 64 hex digits or as base64 (surrounding whitespace ignored). */
export function parseMasterKey(text: string, where: string): MasterKey {
  const t = text.trim();
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(t)) key = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t)) {
    const b = Buffer.from(t, 'base64');
    if (b.length === 32) key = b;
  }
  if (!key) {
    throw new ConfigError('must hold a 32-byte key as 64 hex digits or base64 (e.g. `openssl rand -hex 32`)', where);
  }
  return { id: keyIdOf(key), key };
}

export function keyringOf(...keys: MasterKey[]): Keyring {
  if (keys.length === 0) throw new Error('keyringOf needs at least one key');
  return { current: keys[0]!, keys: new Map(keys.map((k) => [k.id, k.key])) };
}

/** The configured master key, or undefined when client-side encryption is off. */
export function loadKeyring(cfg: Config, env: NodeJS.ProcessEnv = process.env): Keyring | undefined {
  const { encryptionKeyFile: file, encryptionKeyEnv: envName } = cfg.archive;
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read encryption key file ${file}: ${toError(err).message}`, 'archive.encryptionKeyFile', { cause: err });
    }
    return keyringOf(parseMasterKey(text, 'archive.encryptionKeyFile'));
  }
  if (envName) {
    const text = env[envName];
    if (!text) throw new ConfigError(`environment variable ${envName} is empty or unset`, 'archive.encryptionKeyEnv');
    return keyringOf(parseMasterKey(text, `archive.encryptionKeyEnv (${envName})`));
  }
  return undefined;
}

export function isEncrypted(bytes: Uint8Array): boolean {
  return bytes.length >= ENCRYPTION_MAGIC.length && ENCRYPTION_MAGIC.equals(bytes.subarray(0, ENCRYPTION_MAGIC.length));
}

function gcmEncrypt(key: Buffer, iv: Buffer, aad: Buffer, plain: Buffer): { data: Buffer; tag: Buffer } {
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad);
  const data = Buffer.concat([c.update(plain), c.final()]);
  return { data, tag: c.getAuthTag() };
}

function gcmDecrypt(key: Buffer, iv: Buffer, aad: Buffer, data: Buffer, tag: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, iv);
  d.setAAD(aad);
  d.setAuthTag(tag);
  return Buffer.concat([d.update(data), d.final()]);
}

export function encryptObject(plain: Buffer, master: MasterKey): Buffer {
  const dataKey = randomBytes(32);
  const aad = Buffer.from(master.id, 'ascii');
  // 96-bit random IVs, the length GCM is defined for (SP 800-38D 8.2.2); each key encrypts once.
  const wrapIv = randomBytes(12);
  const wrapped = gcmEncrypt(master.key, wrapIv, aad, dataKey);
  const iv = randomBytes(12);
  const body = gcmEncrypt(dataKey, iv, aad, plain);
  const header: EnvelopeHeader = {
    v: 1,
    alg: 'AES-256-GCM',
    keyId: master.id,
    wrappedKey: wrapped.data.toString('base64'),
    wrapIv: wrapIv.toString('base64'),
    wrapTag: wrapped.tag.toString('base64'),
    iv: iv.toString('base64'),
    tag: body.tag.toString('base64'),
  };
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(h.length);
  return Buffer.concat([ENCRYPTION_MAGIC, len, h, body.data]);
}

export function readEnvelopeHeader(bytes: Buffer, what: string): { header: EnvelopeHeader; bodyOffset: number } {
  const start = ENCRYPTION_MAGIC.length;
  if (bytes.length < start + 4) throw new CdpError(ErrorCodes.INTEGRITY, `${what}: truncated encryption header`);
  const n = bytes.readUInt32BE(start);
  if (start + 4 + n > bytes.length) throw new CdpError(ErrorCodes.INTEGRITY, `${what}: truncated encryption header`);
  try {
    const header = JSON.parse(bytes.subarray(start + 4, start + 4 + n).toString('utf8')) as EnvelopeHeader;
    if (header.v !== 1 || header.alg !== 'AES-256-GCM' || typeof header.keyId !== 'string') throw new Error(`unsupported envelope ${header.v}/${header.alg}`);
    return { header, bodyOffset: start + 4 + n };
  } catch (err) {
    throw new CdpError(ErrorCodes.INTEGRITY, `${what}: unreadable encryption header (${toError(err).message})`, { cause: err });
  }
}

/** Opens an encrypted object; a missing or wrong key is a CdpError ENCRYPTION naming the key id. */
export function decryptObject(bytes: Buffer, keyring: Keyring | undefined, what: string): Buffer {
  const { header, bodyOffset } = readEnvelopeHeader(bytes, what);
  const master = keyring?.keys.get(header.keyId);
  if (!master) {
    const have = keyring ? `the configured key has id ${keyring.current.id}` : 'no encryption key is configured';
    throw new CdpError(
      ErrorCodes.ENCRYPTION,
      `${what} is encrypted with master key id ${header.keyId} but ${have}; set archive.encryptionKeyFile or archive.encryptionKeyEnv (CDP_ENCRYPTION_KEY_FILE / CDP_ENCRYPTION_KEY_ENV) to the key with id ${header.keyId}`,
      { details: { keyId: header.keyId, configuredKeyId: keyring?.current.id } },
    );
  }
  const aad = Buffer.from(header.keyId, 'ascii');
  let dataKey: Buffer;
  try {
    dataKey = gcmDecrypt(master, Buffer.from(header.wrapIv, 'base64'), aad, Buffer.from(header.wrappedKey, 'base64'), Buffer.from(header.wrapTag, 'base64'));
  } catch (err) {
    throw new CdpError(ErrorCodes.ENCRYPTION, `${what}: cannot unwrap its data key with master key id ${header.keyId}; the key file holds a different key with the same id, or the header was altered`, { cause: err, details: { keyId: header.keyId } });
  }
  try {
    return gcmDecrypt(dataKey, Buffer.from(header.iv, 'base64'), aad, bytes.subarray(bodyOffset), Buffer.from(header.tag, 'base64'));
  } catch (err) {
    throw new CdpError(ErrorCodes.INTEGRITY, `${what}: authentication of the encrypted body failed (bytes altered after encryption)`, { cause: err, details: { keyId: header.keyId } });
  }
}
