import { createHash, timingSafeEqual } from 'node:crypto';

// Authenticity of the engine's own logical messages (ddl-capture.sql, "Authenticity").
//
// pg_logical_emit_message() is executable by PUBLIC, so the prefix of a message proves nothing.
// The messages that restore acts on (cdp.ddl, cdp.sequences) carry an HMAC-SHA256 of their body
// under a key that lives in the source database, in katya_cdp.secret, readable only by the role
// that ran setup. The key is stored as the two padded keys of RFC 2104 (K XOR ipad, K XOR opad,
// 64 bytes each) so that the SQL side needs nothing but sha256():
//   HMAC(K, m) = SHA256((K ^ opad) || SHA256((K ^ ipad) || m))

export interface MessageKey {
  ikey: Buffer;
  okey: Buffer;
}

const BLOCK = 64;

/** The two padded keys of a 32-byte secret, as setup stores them. */
export function hmacPads(secret: Buffer): [Buffer, Buffer] {
  if (secret.length > BLOCK) throw new Error('HMAC key longer than the SHA-256 block');
  const ikey = Buffer.alloc(BLOCK, 0x36);
  const okey = Buffer.alloc(BLOCK, 0x5c);
  for (let i = 0; i < secret.length; i++) {
    ikey[i] = secret[i]! ^ 0x36;
    okey[i] = secret[i]! ^ 0x5c;
  }
  return [ikey, okey];
}

export function messageMac(key: MessageKey, body: string | Buffer): string {
  const inner = createHash('sha256').update(key.ikey).update(body).digest();
  return createHash('sha256').update(key.okey).update(inner).digest('hex');
}

/** A signed message's content as capture writes it: {"body": "<text>", "mac": "<hex>"}. */
export function signMessage(key: MessageKey, body: string): string {
  return JSON.stringify({ body, mac: messageMac(key, Buffer.from(body, 'utf8')) });
}

export type Verified = { ok: true; body: string } | { ok: false; why: string };

/**
 * The body of a signed message, or why it is refused: not a signed envelope, no key to check it
 * with, or a MAC that does not match. Never throws. Two envelopes: {"body", "mac"} (written by
 * capture itself) and {"b64", "mac"} (the DDL trigger: base64 of the UTF-8 body, so that the
 * message is ASCII whatever the source database's encoding).
 */
export function verifyMessage(key: MessageKey | undefined, content: string): Verified {
  let env: unknown;
  try {
    env = JSON.parse(content);
  } catch {
    return { ok: false, why: 'not JSON' };
  }
  if (!env || typeof env !== 'object') return { ok: false, why: 'not a signed message' };
  const e = env as { body?: unknown; b64?: unknown; mac?: unknown };
  let raw: Buffer;
  if (typeof e.b64 === 'string' && /^[A-Za-z0-9+/=]*$/.test(e.b64)) raw = Buffer.from(e.b64, 'base64');
  else if (typeof e.body === 'string') raw = Buffer.from(e.body, 'utf8');
  else return { ok: false, why: 'not a signed message (no body)' };
  const mac = e.mac;
  if (typeof mac !== 'string' || !/^[0-9a-f]{64}$/.test(mac)) return { ok: false, why: 'no MAC' };
  if (!key) return { ok: false, why: 'no key to verify it with (katya_cdp.secret missing: run cdp setup as a superuser)' };
  const want = Buffer.from(messageMac(key, raw), 'hex');
  if (!timingSafeEqual(want, Buffer.from(mac, 'hex'))) return { ok: false, why: 'MAC mismatch' };
  const body = raw.toString('utf8');
  if (!Buffer.from(body, 'utf8').equals(raw)) return { ok: false, why: 'body is not UTF-8' };
  return { ok: true, body };
}
