import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { archiveRoot, type Config } from '../config/config.js';
import { ConfigError, toError } from '../errors.js';

// The master keys of client-side encryption (DESIGN.md G5; the envelope itself is crypto.ts): the
// 32-byte keys the operator configures (archive.encryptionKeyFile or archive.encryptionKeyEnv), each
// known by an id derived from it, and the keyring a process seals and opens objects with.

export interface MasterKey {
  id: string;
  key: Buffer;
}

/**
 * The master keys this process can open (`current` seals new objects), and the archive they are
 * used for: the identity every object is bound to.
 */
export interface Keyring {
  current: MasterKey;
  keys: Map<string, Buffer>;
  /** The archive root, `<s3.prefix>/<database>`. */
  archive: string;
  /** Open envelope-v1 objects (archive.acceptLegacyEnvelopes). */
  acceptLegacy: boolean;
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

export function keyringOf(keys: MasterKey | MasterKey[], opts: { archive: string; acceptLegacy?: boolean }): Keyring {
  const list = Array.isArray(keys) ? keys : [keys];
  if (list.length === 0) throw new Error('keyringOf needs at least one key');
  if (!opts.archive) throw new Error('keyringOf needs the archive root its objects are bound to');
  return { current: list[0]!, keys: new Map(list.map((k) => [k.id, k.key])), archive: opts.archive, acceptLegacy: opts.acceptLegacy ?? false };
}

/** The configured master key, or undefined when client-side encryption is off. */
export function loadKeyring(cfg: Config, env: NodeJS.ProcessEnv = process.env): Keyring | undefined {
  const { encryptionKeyFile: file, encryptionKeyEnv: envName } = cfg.archive;
  const opts = { archive: archiveRoot(cfg), acceptLegacy: cfg.archive.acceptLegacyEnvelopes };
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read encryption key file ${file}: ${toError(err).message}`, 'archive.encryptionKeyFile', { cause: err });
    }
    return keyringOf(parseMasterKey(text, 'archive.encryptionKeyFile'), opts);
  }
  if (envName) {
    const text = env[envName];
    if (!text) throw new ConfigError(`environment variable ${envName} is empty or unset`, 'archive.encryptionKeyEnv');
    return keyringOf(parseMasterKey(text, `archive.encryptionKeyEnv (${envName})`), opts);
  }
  return undefined;
}
