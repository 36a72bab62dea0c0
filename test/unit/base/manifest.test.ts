import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { keyringOf, parseMasterKey } from '../../../src/archive/crypto.js';
import { IntegrityError } from '../../../src/errors.js';
import { encodeManifest, parseManifest } from '../../../src/base/manifest.js';
import type { BaseManifestExt } from '../../../src/base/basebackup.js';

const ROOT = 'cdp/shop';
const key1 = parseMasterKey(randomBytes(32).toString('hex'), 'test');
const key2 = parseMasterKey(randomBytes(32).toString('hex'), 'test');
const ring = keyringOf(key1, { archive: ROOT });

function manifest(lsn: number, folder = `${ROOT}/bases/${lsn.toString(16).toUpperCase().padStart(16, '0')}/`): { m: BaseManifestExt; at: string } {
  const m = {
    version: 1,
    database: 'shop',
    lsn,
    lsnText: 'x',
    time: '2026-11-29T00:00:00.000000Z',
    timeMicros: 1_795_000_000_000_000,
    key: `${folder}base.dump`,
    size: 10,
    sha256: '0'.repeat(64),
    serverVersion: '15',
    serverVersionNum: 150000,
    pgDumpVersion: 'pg_dump 15',
    encryption: { keyId: key1.id, envelope: 2 },
  } as BaseManifestExt;
  return { m, at: `${folder}manifest.json` };
}

describe('base manifests are bound to their folder and, with a key, authenticated', () => {
  it('round-trips with and without a keyring, and the MAC field is not part of what is returned', () => {
    const { m, at } = manifest(0x1000);
    expect(parseManifest(at, encodeManifest(m, at, ring), ring)).toEqual(m);
    expect(parseManifest(at, encodeManifest(m, at, undefined), undefined)).toEqual(m);
    const rotated = keyringOf([key2, key1], { archive: ROOT });
    expect(parseManifest(at, encodeManifest(m, at, ring), rotated)).toEqual(m);
  });

  it("refuses a manifest naming a dump outside its folder, an LSN other than its folder's, or a synthetic claim that does not match the folder", () => {
    const { m, at } = manifest(0x1000);
    const later = manifest(0x2000).at;
    expect(() => parseManifest(later, encodeManifest(m, later, undefined), undefined)).toThrow(/names the dump/);
    expect(() => parseManifest(at, encodeManifest({ ...m, lsn: 0x2000 }, at, undefined), undefined)).toThrow(/its folder is for another LSN/);
    expect(() => parseManifest(at, encodeManifest({ ...m, synthetic: {} as never }, at, undefined), undefined)).toThrow(/says it is synthetic/);
    const synth = manifest(0x1000, `${ROOT}/bases/0000000000001000-synthetic-abc/`);
    expect(() => parseManifest(synth.at, encodeManifest(synth.m, synth.at, undefined), undefined)).toThrow(/does not say it is synthetic/);
    expect(() => parseManifest(at, Buffer.from('{'), undefined)).toThrow(IntegrityError);
  });

  it('with a keyring: any changed field, a MAC made for another name, another archive or an unknown key fails; no MAC needs acceptLegacyEnvelopes', () => {
    const { m, at } = manifest(0x1000);
    const sealed = JSON.parse(encodeManifest(m, at, ring).toString('utf8')) as Record<string, unknown>;
    for (const change of [{ timeMicros: 1 }, { sha256: '1'.repeat(64) }, { size: 11 }, { encryption: null }, { synthetic: undefined, extra: 1 }]) {
      expect(() => parseManifest(at, Buffer.from(JSON.stringify({ ...sealed, ...change })), ring)).toThrow(/fails its MAC/);
    }
    expect(() => parseManifest(at, encodeManifest(m, at, keyringOf(key1, { archive: 'cdp' })), ring)).toThrow(/fails its MAC/);
    expect(() => parseManifest(at, encodeManifest(m, at, keyringOf(key2, { archive: ROOT })), ring)).toThrow(/not in the configured keyring/);
    const plain = encodeManifest(m, at, undefined);
    expect(() => parseManifest(at, plain, ring)).toThrow(/carries no MAC/);
    expect(parseManifest(at, plain, keyringOf(key1, { archive: ROOT, acceptLegacy: true }))).toEqual(m);
  });
});
