import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { advancePartitionState } from '../../../src/archive/catalog.js';
import { loadKeyring } from '../../../src/archive/crypto.js';
import { archiveManifestKey, baseManifestKey, segmentKey, type ArchiveManifest, type SegmentName } from '../../../src/archive/layout.js';
import { SegmentWriter } from '../../../src/archive/segment.js';
import { storeSegment } from '../../../src/archive/upload.js';
import type { BaseManifestExt } from '../../../src/base/basebackup.js';
import { emptyEvent, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import { sequencesSql } from '../../../src/restore/apply.js';
import { listBaseManifests } from '../../../src/restore/base-restore.js';
import { createStore, getObject, putOnce, sha256, type Store } from '../../../src/s3/client.js';
import { lsnKey } from '../../../src/util/lsn.js';
import { adminUrl, createDatabase, dropDatabase, rand, runCli, silentLog, stackEnvironment, testConfig, withClient, type CliResult } from './helpers.js';

// Issue 13, as an attacker with write access to the bucket (but not the key) and as an unlucky
// operator would try it, on the real stack: a real base taken by `cdp basebackup` from a source
// reached through a role WITH a password, an encrypted archive of segments written by the
// archive's SegmentWriter after it, and `cdp restore` / `cdp verify` run as the CLI.
//
// pg_dump and pg_restore are run through recording wrappers (a shell script that appends its
// argv and PGPASSWORD to a log, then execs the real program): what the children received is
// asserted, and a /proc poller looks at every process's command line while the CLI runs.

const id = rand();
const SRC = `cdp_tr_src_${id}`;
const ROLE = `cdp_tr_role_${id}`;
const SECRET = `Pw${randomBytes(9).toString('hex')}`;
const PREFIX = `test-trust-${id}`;
const ROOT = `${PREFIX}/${SRC}`;
const PARTITIONS = 2;
const TXNS = 40;
const REL: RelationInfo = { oid: 1, replicaIdentity: 'd', columns: ['id', 'v'], types: ['bigint', 'text'], key: [0] };
const dir = mkdtempSync(join(tmpdir(), 'cdp-trust-'));
const cfgFile = join(dir, 'cdp.json');

function withPassword(db: string): string {
  const u = new URL(adminUrl(db));
  u.username = ROLE;
  u.password = SECRET;
  return u.toString();
}

const env: Record<string, string> = {
  CDP_S3_PREFIX: PREFIX,
  CDP_ENCRYPTION_KEY_ENV: 'CDP_TR_KEY',
  CDP_TR_KEY: randomBytes(32).toString('hex'),
  CDP_LOG_FORMAT: 'json',
};

function wrapper(name: string): string {
  const real = execFileSync('bash', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
  const path = join(dir, name);
  const log = join(dir, `${name}.log`);
  writeFileSync(
    path,
    `#!/bin/sh\n{ printf 'ARGV'; for a in "$@"; do printf ' %s' "$a"; done; printf '\\nPGPASSWORD=%s\\n' "$PGPASSWORD"; } >> '${log}'\nexec '${real}' "$@"\n`,
  );
  chmodSync(path, 0o755);
  return path;
}

function childLog(name: string): { argv: string[]; passwords: string[] } {
  const text = readFileSync(join(dir, `${name}.log`), 'utf8');
  const lines = text.split('\n');
  return { argv: lines.filter((l) => l.startsWith('ARGV')), passwords: lines.filter((l) => l.startsWith('PGPASSWORD=')).map((l) => l.slice(11)) };
}

/** Every command line on the machine holding the secret, but the CLI's own (its --into). */
function pollCommandLines(): { stop: () => string[] } {
  const seen = new Set<string>();
  const timer = setInterval(() => {
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      let cmd: string;
      try {
        cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0/g, ' ');
      } catch {
        continue;
      }
      if (cmd.includes(SECRET) && !cmd.includes('bin/cdp.mjs')) seen.add(cmd);
    }
  }, 5);
  return {
    stop: () => {
      clearInterval(timer);
      return [...seen];
    },
  };
}

async function cli(args: string[], extra: Record<string, string> = {}): Promise<CliResult> {
  return runCli(['--config', cfgFile, ...args], { ...env, ...extra });
}

interface Written {
  key: string;
  events: Array<[ChangeEvent, string]>;
  name: SegmentName;
}

/** Transactions inserting ids 101.., spread over the partitions, a few segments per partition. */
async function writeArchive(store: Store, baseLsn: number): Promise<Written[]> {
  const keyring = loadKeyring(testConfig(env), env)!;
  const out: Written[] = [];
  const parts = Array.from({ length: PARTITIONS }, (_, p) => ({
    w: new SegmentWriter({ partition: p, codec: 'zstandard' }),
    events: [] as Array<[ChangeEvent, string]>,
    offset: 0,
    lastKey: '',
  }));
  const flush = async (p: number) => {
    const s = parts[p]!;
    if (s.w.count === 0) return;
    const seg = s.w.finish(keyring);
    const key = segmentKey(ROOT, seg.name);
    await storeSegment(store, key, seg.bytes, seg.name.sha256);
    out.push({ key, events: s.events, name: seg.name });
    s.lastKey = key;
    s.w = new SegmentWriter({ partition: p, codec: 'zstandard' });
    s.events = [];
  };
  const put = (ev: ChangeEvent, p: number) => {
    const s = parts[p]!;
    const offset = String(s.offset++);
    s.w.appendEvent(ev, offset);
    s.events.push([ev, offset]);
  };
  const t0 = Date.now() * 1000;
  let lsn = baseLsn;
  for (let x = 1; x <= TXNS; x++) {
    lsn += 100;
    const p = x % PARTITIONS;
    put(
      emptyEvent({
        op: 'INSERT',
        database: SRC,
        schema: 'public',
        table: 't',
        relation: REL,
        commitLsn: lsn,
        xid: 5000 + x,
        commitTime: t0 + x,
        position: 0,
        new: [String(100 + x), `x${x}`],
      }),
      p,
    );
    put(emptyEvent({ op: 'COMMIT', database: SRC, commitLsn: lsn, xid: 5000 + x, commitTime: t0 + x, position: 1, endLsn: lsn + 50 }), p);
    if (x % 10 === 0) await flush(p);
  }
  for (let p = 0; p < PARTITIONS; p++) {
    put(emptyEvent({ op: 'WATERMARK', database: SRC, commitLsn: lsn, commitTime: t0 + TXNS, content: JSON.stringify({ partition: p }) }), p);
    const lastOffset = String(parts[p]!.offset - 1);
    await flush(p);
    await advancePartitionState(store, ROOT, { partition: p, watermarkLsn: lsn, watermarkTime: t0 + TXNS, lastOffset, lastKey: parts[p]!.lastKey });
  }
  const m: ArchiveManifest = { version: 1, database: SRC, systemId: 'test', topic: 'none', partitions: PARTITIONS, createdAt: new Date().toISOString() };
  await putOnce(store, archiveManifestKey(ROOT), Buffer.from(JSON.stringify(m)));
  return out;
}

async function del(store: Store, key: string): Promise<void> {
  await store.client.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: key }));
}

/** Puts `bytes` at `key` in place of whatever is there (write-once objects: delete first). */
async function replace(store: Store, key: string, bytes: Buffer): Promise<void> {
  await del(store, key);
  await putOnce(store, key, bytes);
}

async function rowCount(url: string): Promise<number> {
  return withClient(url, async (c) => (await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n as number);
}

async function hasCursor(url: string): Promise<boolean> {
  return withClient(url, async (c) => (await c.query(`SELECT 1 FROM pg_namespace WHERE nspname = '_cdp_restore'`)).rowCount === 1);
}

describe('trust: encryption binding, passwords, restore input checks (issue 13)', () => {
  const targets: string[] = [];
  let store: Store;
  let segments: Written[] = [];
  let base: BaseManifestExt;

  const target = async () => {
    const name = `cdp_tr_t_${rand()}`;
    targets.push(name);
    await createDatabase(name);
    return withPassword(name);
  };

  beforeAll(async () => {
    stackEnvironment();
    writeFileSync(cfgFile, JSON.stringify({ basebackup: { pgDumpPath: wrapper('pg_dump'), pgRestorePath: wrapper('pg_restore') } }));
    // Local auth is trust: the password is not checked, only carried (the point is where it travels).
    await withClient(adminUrl(), (c) => c.query(`CREATE ROLE ${ROLE} LOGIN SUPERUSER PASSWORD '${SECRET}'`));
    await createDatabase(SRC);
    env.CDP_SOURCE_URL = withPassword(SRC);
    await withClient(env.CDP_SOURCE_URL, async (c) => {
      await c.query('CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL)');
      await c.query(`INSERT INTO t SELECT g, 'base' || g FROM generate_series(1, 10) g`);
    });
    store = createStore(testConfig(env), silentLog);
  });

  afterAll(async () => {
    for (const t of targets) await dropDatabase(t);
    await dropDatabase(SRC);
    await withClient(adminUrl(), (c) => c.query(`DROP ROLE IF EXISTS ${ROLE}`)).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });

  it('no password in the argv of pg_dump and pg_restore during a base and a restore (it travels as PGPASSWORD)', async () => {
    const poll = pollCommandLines();
    const b = await cli(['basebackup']);
    expect(b.code, b.stderr).toBe(0);
    base = (await listBaseManifests(store, ROOT, loadKeyring(testConfig(env), env)))[0]!;
    expect(base.encryption).toMatchObject({ envelope: 2 });
    segments = await writeArchive(store, base.lsn);
    expect(segments.filter((s) => s.name.partition === 0).length).toBeGreaterThanOrEqual(2);

    const into = await target();
    const r = await cli(['restore', '--into', into, '--latest']);
    const leaked = poll.stop();
    expect(r.code, r.stderr).toBe(0);
    expect(await rowCount(into)).toBe(10 + TXNS);

    for (const name of ['pg_dump', 'pg_restore']) {
      const log = childLog(name);
      expect(log.argv.length).toBeGreaterThan(0);
      for (const a of log.argv) expect(a).not.toContain(SECRET);
      // The password did reach the child, through its environment.
      expect(log.passwords.filter((p) => p !== '')).toContain(SECRET);
    }
    expect(childLog('pg_dump').argv.join('\n')).toContain(`--dbname=postgres://${ROLE}@`);
    expect(leaked).toEqual([]);

    const v = await cli(['verify']);
    expect(v.code, v.stdout + v.stderr).toBe(0);
  });

  it('a plaintext segment put in place of an encrypted one: restore and verify exit 3', async () => {
    const victim = segments.find((s) => s.name.partition === 0)!;
    // The attacker writes the same records (one value changed) as a plain segment, with a name
    // that carries its own SHA-256 at the victim's place.
    const w = new SegmentWriter({ partition: 0, codec: 'zstandard' });
    for (const [ev, offset] of victim.events) w.appendEvent(ev.op === 'INSERT' ? { ...ev, new: [ev.new![0]!, 'forged'] } : ev, offset);
    const forged = w.finish();
    const forgedKey = segmentKey(ROOT, forged.name);
    const original = await getObject(store, victim.key);
    await del(store, victim.key);
    await putOnce(store, forgedKey, forged.bytes);
    try {
      const into = await target();
      const r = await cli(['restore', '--into', into, '--latest']);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toMatch(/not encrypted, but an encryption key is configured/);
      const v = await cli(['verify']);
      expect(v.code).toBe(3);
      expect(v.stdout).toContain(forgedKey);
    } finally {
      await del(store, forgedKey);
      await putOnce(store, victim.key, original);
    }
  });

  it("an encrypted segment copied to another segment's place: restore and verify exit 3", async () => {
    const [first, second] = segments.filter((s) => s.name.partition === 0);
    const bytes = await getObject(store, first!.key);
    const secondBytes = await getObject(store, second!.key);
    // Same bytes (so the SHA-256 in the name is right), at the second segment's offsets and LSN.
    const copyKey = segmentKey(ROOT, { ...second!.name, sha256: sha256(bytes) });
    await del(store, second!.key);
    await putOnce(store, copyKey, bytes);
    try {
      const into = await target();
      const r = await cli(['restore', '--into', into, '--latest']);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toMatch(/moved, renamed or copied/);
      const v = await cli(['verify']);
      expect(v.code).toBe(3);
      expect(v.stdout).toContain(copyKey);
    } finally {
      await del(store, copyKey);
      await putOnce(store, second!.key, secondBytes);
    }
  });

  it('a manifest forged under a later LSN, naming the genuine sealed dump: restore and verify exit 3, never a restore that skips the changes in between', async () => {
    // Bucket write access, no key: a new folder whose manifest points at the original dump (which
    // opens, as it is sealed for its own name), claiming a later LSN.
    const lastLsn = Math.max(...segments.flatMap((s) => s.events.map(([e]) => e.commitLsn)));
    const lsn = lastLsn - 100 * 20;
    const forgedManifest = `${ROOT}/bases/${lsnKey(lsn)}/manifest.json`;
    const withMac = JSON.parse((await getObject(store, baseManifestKey(ROOT, base.lsn))).toString('utf8')) as Record<string, unknown>;
    expect(withMac.mac).toBeDefined();
    for (const forged of [
      { ...withMac, lsn, lsnText: 'forged' },
      { ...withMac, lsn, lsnText: 'forged', key: `${ROOT}/bases/${lsnKey(lsn)}/base.dump` },
    ]) {
      await putOnce(store, forgedManifest, Buffer.from(JSON.stringify(forged)));
      try {
        const into = await target();
        const r = await cli(['restore', '--into', into, '--latest']);
        expect(r.code, r.stderr).toBe(3);
        expect(r.stderr).toMatch(/not written by cdp for the base it sits beside/);
        expect(await hasCursor(into)).toBe(false);
        const v = await cli(['verify']);
        expect(v.code).toBe(3);
        expect(v.stdout).toContain(forgedManifest);
      } finally {
        await del(store, forgedManifest);
      }
    }
  });

  it('a plaintext base in place of the sealed one: restore and verify exit 3, the target is left untouched and the same command works once the base is back', async () => {
    const sealed = await getObject(store, base.key);
    const manifestKey = baseManifestKey(ROOT, base.lsn);
    const manifestBytes = await getObject(store, manifestKey);
    // A real pg_dump of a database the attacker chose, in clear; the manifest rewritten to match.
    const plain = execFileSync('pg_dump', ['--format=custom', `--dbname=${adminUrl(SRC)}`], { maxBuffer: 64 << 20 });
    await replace(store, base.key, plain);
    await replace(store, manifestKey, Buffer.from(JSON.stringify({ ...base, encryption: null, sha256: sha256(plain), size: plain.length })));
    const into = await target();
    try {
      const r = await cli(['restore', '--into', into, '--latest']);
      expect(r.code, r.stderr).toBe(3);
      // The rewritten manifest cannot carry a valid MAC (src/base/manifest.ts): refused before the dump is read.
      expect(r.stderr).toMatch(/carries no MAC/);
      const v = await cli(['verify']);
      expect(v.code).toBe(3);
      expect(v.stdout).toContain(manifestKey);
      // Nothing was written: no half-loaded base, no cursor asking to drop the database.
      expect(await hasCursor(into)).toBe(false);
    } finally {
      await replace(store, base.key, sealed);
      await replace(store, manifestKey, manifestBytes);
    }
    const again = await cli(['restore', '--into', into, '--latest']);
    expect(again.code, again.stderr).toBe(0);
    expect(await rowCount(into)).toBe(10 + TXNS);
  });

  it("a sealed base copied under another base's name: restore and verify exit 3", async () => {
    const lsn = base.lsn + 8;
    const key = `${ROOT}/bases/${lsnKey(lsn)}/base.dump`;
    await putOnce(store, key, await getObject(store, base.key));
    // The manifest carries the original's MAC, which covers the LSN and the dump's name.
    const withMac = JSON.parse((await getObject(store, baseManifestKey(ROOT, base.lsn))).toString('utf8')) as Record<string, unknown>;
    await putOnce(store, baseManifestKey(ROOT, lsn), Buffer.from(JSON.stringify({ ...withMac, lsn, key })));
    try {
      const into = await target();
      const r = await cli(['restore', '--into', into, '--latest']);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toMatch(/fails its MAC/);
      const v = await cli(['verify']);
      expect(v.code).toBe(3);
      expect(v.stdout).toContain(baseManifestKey(ROOT, lsn));
    } finally {
      await del(store, key);
      await del(store, baseManifestKey(ROOT, lsn));
    }
  });

  it('--sql writes a 0600 file', async () => {
    const file = join(dir, 'replay.sql');
    const r = await cli(['restore', '--into', withPassword('unused'), '--latest', '--sql', file]);
    expect(r.code, r.stderr).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8')).toContain('INSERT INTO');
  });

  it('a missing bucket is named as such (exit 2), not as a missing archive.json', async () => {
    const r = await cli(['restore', '--into', withPassword('unused'), '--latest'], { CDP_S3_BUCKET: `no-such-bucket-${id}` });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`bucket no-such-bucket-${id} does not exist`));
    expect(r.stderr).not.toMatch(/archive\.json missing/);
    // verify probes the bucket at start-up (src/ops/preflight.ts): a configuration problem, exit 2.
    const v = await cli(['verify'], { CDP_S3_BUCKET: `no-such-bucket-${id}` });
    expect(v.code).toBe(2);
    expect(v.stderr).toMatch(new RegExp(`bucket no-such-bucket-${id} does not exist`));
  });

  it('--time 2026-02-30 is refused with exit 2', async () => {
    const r = await cli(['restore', '--into', withPassword('unused'), '--time', '2026-02-30T10:00:00Z']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/day 30 \(2026-02 has 28 days\) does not exist/);
  });

  it('a sequence named x$cdp$y does not break the final sequence step', async () => {
    const into = await target();
    await withClient(into, async (c) => {
      await c.query('CREATE SEQUENCE "x$cdp$y"');
      await c.query(sequencesSql({ 'public.x$cdp$y': 42 }));
      expect((await c.query('SELECT last_value::int AS v FROM "x$cdp$y"')).rows[0].v).toBe(42);
    });
  });
});
