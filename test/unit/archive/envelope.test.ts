import { createCipheriv, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import {
  keyringOf,
  objectBinding,
  openBaseStream,
  openObject,
  parseMasterKey,
  sealObject,
  sealStream,
  type Keyring,
  type MasterKey,
} from '../../../src/archive/crypto.js';
import { segmentKey } from '../../../src/archive/layout.js';
import { encodeSegment, readSegment } from '../../../src/archive/segment.js';
import { emptyEvent, type ChangeEvent } from '../../../src/format/change-event.js';
import { CdpError, IntegrityError } from '../../../src/errors.js';
import { sha256 } from '../../../src/s3/client.js';

// The envelope (crypto.ts) as an attacker with write access to the bucket but without the key
// would try it: plaintext in place of a sealed object, a sealed object moved, copied from another
// archive, or an old v1 object presented to dodge the binding.

const ARCHIVE = 'cdp/shop';
const master = parseMasterKey('42'.repeat(32), 'test');
const ring = keyringOf(master, { archive: ARCHIVE });
const legacyRing = keyringOf(master, { archive: ARCHIVE, acceptLegacy: true });
const other = keyringOf(master, { archive: 'cdp/other' });
const wrongKey = keyringOf(parseMasterKey('43'.repeat(32), 'test'), { archive: ARCHIVE });
const baseKey = `${ARCHIVE}/bases/0000000001000028/base.dump`;

function failure(fn: () => unknown): CdpError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).exitCode).toBe(3);
    return err as CdpError;
  }
  throw new Error('expected a failure');
}

/** The v1 envelope exactly as versions before v2 wrote it (key id as the only AAD). */
function sealV1(plain: Buffer, m: MasterKey): Buffer {
  const aad = Buffer.from(m.id, 'ascii');
  const enc = (key: Buffer, iv: Buffer, data: Buffer) => {
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(aad);
    return { data: Buffer.concat([c.update(data), c.final()]), tag: c.getAuthTag() };
  };
  const dataKey = randomBytes(32);
  const wrapIv = randomBytes(12);
  const wrapped = enc(m.key, wrapIv, dataKey);
  const iv = randomBytes(12);
  const body = enc(dataKey, iv, plain);
  const h = Buffer.from(
    JSON.stringify({
      v: 1,
      alg: 'AES-256-GCM',
      keyId: m.id,
      wrappedKey: wrapped.data.toString('base64'),
      wrapIv: wrapIv.toString('base64'),
      wrapTag: wrapped.tag.toString('base64'),
      iv: iv.toString('base64'),
      tag: body.tag.toString('base64'),
    }),
  );
  const len = Buffer.alloc(4);
  len.writeUInt32BE(h.length);
  return Buffer.concat([Buffer.from('KCDPENC1'), len, h, body.data]);
}

/** A v1 base: raw ciphertext, the header in the manifest (wrapIv | wrapTag | wrapped key). */
function sealV1Base(plain: Buffer, m: MasterKey): { bytes: Buffer; encryption: { keyId: string; wrappedKey: string; iv: string; tag: string } } {
  const aad = Buffer.from(m.id, 'ascii');
  const dataKey = randomBytes(32);
  const wrapIv = randomBytes(12);
  const w = createCipheriv('aes-256-gcm', m.key, wrapIv);
  w.setAAD(aad);
  const wrapped = Buffer.concat([w.update(dataKey), w.final()]);
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', dataKey, iv);
  c.setAAD(aad);
  const bytes = Buffer.concat([c.update(plain), c.final()]);
  return {
    bytes,
    encryption: {
      keyId: m.id,
      wrappedKey: Buffer.concat([wrapIv, w.getAuthTag(), wrapped]).toString('base64'),
      iv: iv.toString('base64'),
      tag: c.getAuthTag().toString('base64'),
    },
  };
}

async function openStream(
  bytes: Buffer,
  keyring: Keyring | undefined,
  key: string,
  manifestEncryption: Parameters<typeof openBaseStream>[2] = null,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const stage = openBaseStream(keyring, key, manifestEncryption, `base ${key}`);
  // Odd chunk sizes: the header and the trailing tag straddle chunk boundaries.
  const parts: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 7) parts.push(bytes.subarray(i, i + 7));
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  await (stage ? pipeline(Readable.from(parts), stage, sink) : pipeline(Readable.from(parts), sink));
  return Buffer.concat(chunks);
}

async function sealedStream(plain: Buffer, keyring: Keyring, key: string): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from([plain.subarray(0, 5), plain.subarray(5)]),
    sealStream(keyring, key),
    new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

function txn(n: number): ChangeEvent[] {
  const out: ChangeEvent[] = [];
  for (let i = 0; i < n; i++)
    out.push(
      emptyEvent({
        op: 'INSERT',
        database: 'shop',
        commitLsn: 0x9000,
        changeLsn: 0x9000 + i,
        xid: 7,
        commitTime: 1,
        position: i,
        schema: 'public',
        table: 't',
        new: [String(i)],
      }),
    );
  out.push(emptyEvent({ op: 'COMMIT', database: 'shop', commitLsn: 0x9000, changeLsn: 0x9100, xid: 7, commitTime: 1, position: n }));
  return out;
}

describe('envelope v2: bound to object name and archive', () => {
  it('binds a segment to its name without the hash of its sealed bytes, and a base to its full name', () => {
    const key = `${ARCHIVE}/segments/p0003/0000000000009000-00000000000000000010-00000000000000000020-${'ab'.repeat(32)}.avro`;
    expect(objectBinding(ARCHIVE, key)).toBe('segments/p0003/0000000000009000-00000000000000000010-00000000000000000020');
    expect(objectBinding(ARCHIVE, baseKey)).toBe('bases/0000000001000028/base.dump');
    expect(() => objectBinding(ARCHIVE, `cdp/shopping/bases/x/base.dump`)).toThrow(IntegrityError);
  });

  it('opens what it sealed, at the same key', () => {
    const plain = Buffer.from('pg_dump bytes');
    const sealed = sealObject(plain, ring, baseKey);
    expect(sealed.subarray(0, 8).toString()).toBe('KCDPENC2');
    expect(sealed.includes(plain)).toBe(false);
    expect(openObject(sealed, ring, baseKey, 'x').plain).toEqual(plain);
  });

  it('a plaintext object with a key configured is an integrity error', () => {
    const e = failure(() => openObject(Buffer.from('Obj\x01 forged'), ring, baseKey, 'segment x'));
    expect(e).toBeInstanceOf(IntegrityError);
    expect(e.message).toMatch(/not encrypted, but an encryption key is configured/);
  });

  it('an object moved to another name, or copied into another archive, is an integrity error', () => {
    const sealed = sealObject(Buffer.from('data'), ring, baseKey);
    const moved = failure(() => openObject(sealed, ring, `${ARCHIVE}/bases/0000000002000028/base.dump`, 'x'));
    expect(moved).toBeInstanceOf(IntegrityError);
    expect(moved.message).toMatch(/moved, renamed or copied/);
    const copied = failure(() => openObject(sealed, other, `cdp/other/bases/0000000001000028/base.dump`, 'x'));
    expect(copied).toBeInstanceOf(IntegrityError);
  });

  it('a header edited to claim the new name still fails (the header is authenticated)', () => {
    const sealed = sealObject(Buffer.from('data'), ring, baseKey);
    const text = sealed.toString('latin1').replace('0000000001000028', '0000000002000028');
    const edited = Buffer.from(text, 'latin1');
    expect(failure(() => openObject(edited, ring, `${ARCHIVE}/bases/0000000002000028/base.dump`, 'x')).code).toMatch(/CDP_INTEGRITY|CDP_ENCRYPTION/);
  });

  it('a wrong key is CDP_ENCRYPTION (exit 3) naming the key id; no key configured too', () => {
    const sealed = sealObject(Buffer.from('data'), ring, baseKey);
    for (const k of [wrongKey, undefined]) {
      const e = failure(() => openObject(sealed, k, baseKey, 'x'));
      expect(e.code).toBe('CDP_ENCRYPTION');
      expect(e.message).toContain(master.id);
    }
  });

  it('a flipped ciphertext bit is an integrity error', () => {
    const sealed = sealObject(Buffer.alloc(100, 1), ring, baseKey);
    sealed[sealed.length - 30]! ^= 1;
    expect(failure(() => openObject(sealed, ring, baseKey, 'x'))).toBeInstanceOf(IntegrityError);
  });
});

describe('envelope v1 (written before v2)', () => {
  it('is refused by default (a downgrade would dodge the binding) and opens with acceptLegacy', () => {
    const old = sealV1(Buffer.from('old segment'), master);
    const e = failure(() => openObject(old, ring, baseKey, 'x'));
    expect(e).toBeInstanceOf(IntegrityError);
    expect(e.message).toMatch(/acceptLegacyEnvelopes/);
    expect(openObject(old, legacyRing, baseKey, 'x').plain.toString()).toBe('old segment');
  });

  it('a v1 segment opens only under the name its authenticated manifest gives', () => {
    const seg = encodeSegment(txn(5), { partition: 2, codec: 'zstandard', firstOffset: 40 });
    const v1 = sealV1(seg.bytes, master);
    const name = { ...seg.name, sha256: sha256(v1) };
    const right = segmentKey(ARCHIVE, name);
    expect([...readSegment(v1, { expectedSha256: name.sha256, keyring: legacyRing, key: right }).blocks()].flat().length).toBe(6);
    const moved = segmentKey(ARCHIVE, { ...name, partition: 1 });
    expect(failure(() => readSegment(v1, { expectedSha256: name.sha256, keyring: legacyRing, key: moved }))).toBeInstanceOf(IntegrityError);
  });
});

describe('envelope v2 as a stream (bases)', () => {
  const plain = randomBytes(1000);

  it('round-trips through odd chunk sizes', async () => {
    const sealed = await sealedStream(plain, ring, baseKey);
    expect(await openStream(sealed, ring, baseKey)).toEqual(plain);
    // The stream and the buffer form are one format.
    expect(openObject(sealed, ring, baseKey, 'x').plain).toEqual(plain);
  });

  it('refuses a plaintext dump whatever the manifest says, a moved one, and a truncated one', async () => {
    await expect(openStream(plain, ring, baseKey)).rejects.toThrow(/not encrypted, but an encryption key is configured/);
    const sealed = await sealedStream(plain, ring, baseKey);
    await expect(openStream(sealed, ring, `${ARCHIVE}/bases/0000000009000028/base.dump`)).rejects.toBeInstanceOf(IntegrityError);
    await expect(openStream(sealed, other, `cdp/other/bases/0000000001000028/base.dump`)).rejects.toBeInstanceOf(IntegrityError);
    await expect(openStream(sealed.subarray(0, sealed.length - 3), ring, baseKey)).rejects.toBeInstanceOf(IntegrityError);
  });

  it('a v1 base (header in its manifest) needs acceptLegacy', async () => {
    const v1 = sealV1Base(plain, master);
    expect(() => openBaseStream(ring, baseKey, v1.encryption, 'base')).toThrow(/acceptLegacyEnvelopes/);
    expect(await openStream(v1.bytes, legacyRing, baseKey, v1.encryption)).toEqual(plain);
    const bad = Buffer.from(v1.bytes);
    bad[10]! ^= 1;
    await expect(openStream(bad, legacyRing, baseKey, v1.encryption)).rejects.toBeInstanceOf(IntegrityError);
  });
});
