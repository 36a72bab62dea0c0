import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';
import { CdpError, ErrorCodes } from '../errors.js';

// The client side of the SASL mechanisms the engine offers (Kafka documentation, "Authentication
// using SASL"): PLAIN (RFC 4616) and SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677; Kafka's
// SCRAM, KIP-84). Pure functions over strings and Buffers; connection.ts carries the bytes in
// SaslAuthenticate requests. Channel binding is not used (gs2 header "n,,"), as in Kafka's own client.
// Passwords are not SASLprep-normalised (RFC 4013): Kafka's Java client does not either, so a
// non-ASCII password works the same way with both.

export const SASL_MECHANISMS = ['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'] as const;
export type SaslMechanism = (typeof SASL_MECHANISMS)[number];

export interface SaslCredentials {
  mechanism: SaslMechanism;
  username: string;
  password: string;
}

/** PLAIN: [authzid] NUL authcid NUL passwd, with an empty authzid. */
export function plainMessage(username: string, password: string): Buffer {
  return Buffer.from(`\u0000${username}\u0000${password}`, 'utf8');
}

const HASH = { 'SCRAM-SHA-256': { name: 'sha256', bytes: 32 }, 'SCRAM-SHA-512': { name: 'sha512', bytes: 64 } } as const;

/** RFC 5802 section 5.1: "=" and "," in a user name are sent as "=3D" and "=2C". */
function saslName(username: string): string {
  return username.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

function authFailed(message: string): CdpError {
  return new CdpError(ErrorCodes.KAFKA, message, { canRetry: false, details: { kafkaError: 'SASL_AUTHENTICATION_FAILED' } });
}

/** One SCRAM exchange: clientFirst(), then clientFinal(serverFirst), then verifyServerFinal(serverFinal). */
export class ScramClient {
  private readonly hash: (typeof HASH)[keyof typeof HASH];
  private readonly firstBare: string;
  private serverSignature: Buffer | null = null;

  constructor(
    mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-512',
    username: string,
    private readonly password: string,
    private readonly clientNonce = randomBytes(24).toString('base64'),
  ) {
    this.hash = HASH[mechanism];
    this.firstBare = `n=${saslName(username)},r=${this.clientNonce}`;
  }

  clientFirst(): Buffer {
    return Buffer.from(`n,,${this.firstBare}`, 'utf8');
  }

  clientFinal(serverFirstBytes: Buffer): Buffer {
    const serverFirst = serverFirstBytes.toString('utf8');
    const attrs = parseAttributes(serverFirst);
    if (attrs.e) throw authFailed(`SCRAM: the broker refused the first message (${attrs.e})`);
    const nonce = attrs.r;
    const salt = attrs.s;
    const iterations = Number(attrs.i);
    if (!nonce || !salt || !Number.isInteger(iterations) || iterations < 1) throw authFailed(`SCRAM: malformed server-first-message`);
    // The server's nonce must extend ours (RFC 5802 section 5.1, r=), or this is not our exchange.
    if (!nonce.startsWith(this.clientNonce) || nonce.length === this.clientNonce.length)
      throw authFailed('SCRAM: the server nonce does not extend the client nonce');
    const { name, bytes } = this.hash;
    const salted = pbkdf2Sync(Buffer.from(this.password, 'utf8'), Buffer.from(salt, 'base64'), iterations, bytes, name);
    const clientKey = hmac(name, salted, 'Client Key');
    const storedKey = createHash(name).update(clientKey).digest();
    const finalWithoutProof = `c=biws,r=${nonce}`; // biws = base64("n,,")
    const authMessage = `${this.firstBare},${serverFirst},${finalWithoutProof}`;
    const clientSignature = hmac(name, storedKey, authMessage);
    const proof = Buffer.alloc(clientKey.length);
    for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i]! ^ clientSignature[i]!;
    this.serverSignature = hmac(name, hmac(name, salted, 'Server Key'), authMessage);
    return Buffer.from(`${finalWithoutProof},p=${proof.toString('base64')}`, 'utf8');
  }

  /** The broker proves it knows the password too (RFC 5802 section 3, ServerSignature). */
  verifyServerFinal(serverFinalBytes: Buffer): void {
    const attrs = parseAttributes(serverFinalBytes.toString('utf8'));
    if (attrs.e) throw authFailed(`SCRAM: the broker refused the proof (${attrs.e})`);
    const v = attrs.v ? Buffer.from(attrs.v, 'base64') : null;
    if (!this.serverSignature || !v || v.length !== this.serverSignature.length || !timingSafeEqual(v, this.serverSignature)) {
      throw authFailed("SCRAM: the broker's signature does not match: it does not know this password (a wrong or impersonated broker)");
    }
  }
}

function hmac(name: string, key: Buffer, text: string): Buffer {
  return createHmac(name, key).update(text, 'utf8').digest();
}

function parseAttributes(message: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of message.split(',')) {
    const i = part.indexOf('=');
    if (i === 1) out[part[0]!] = part.slice(2);
  }
  return out;
}
