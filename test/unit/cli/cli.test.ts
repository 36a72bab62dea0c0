import { spawnSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// The CLI as users meet it: the installed bin entry, a real process, its exit status and stderr.
// Every case fails before touching any service, so this stays in the unit tier.
const bin = new URL('../../../bin/cdp.mjs', import.meta.url).pathname;

function cdp(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.trim() };
}

describe('cdp command line', () => {
  it('--help lists the commands and exits 0', () => {
    const r = cdp(['--help']);
    expect(r.status).toBe(0);
    for (const c of ['setup', 'capture', 'archive', 'run', 'basebackup', 'restore', 'status', 'verify', 'prune', 'replicate']) {
      expect(r.stdout).toContain(c);
    }
  });

  it('runs as an executable with the node flags of its shebang', () => {
    // The young-generation flag (bin/cdp.mjs) only applies when the file itself is executed:
    // `env -S` must split the shebang and node must accept the flag, or nothing starts.
    const dir = mkdtempSync(join(tmpdir(), 'cdp-cli-'));
    const probe = join(dir, 'probe.mjs');
    writeFileSync(probe, "process.on('exit', () => process.stderr.write('execArgv=' + JSON.stringify(process.execArgv) + '\\n'));\n");
    const r = spawnSync(bin, ['--version'], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', NODE_OPTIONS: `--import=${probe}` },
      timeout: 60_000,
    });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect(r.stderr).toContain('execArgv=["--max-semi-space-size=64"]');
  });

  it('an unknown flag: one clear line, exit 2', () => {
    const r = cdp(['status', '--bogus']);
    expect(r.status).toBe(2);
    expect(r.stderr.split('\n')[0]).toMatch(/unknown option '--bogus'/);
  });

  it('a bad URL: names the field, exit 2', () => {
    const r = cdp(['status', '--source-url', 'http://not-postgres']);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('cdp: error: source.url: must be a postgres:// URL');
  });

  it('a bad URL from the environment: exit 2', () => {
    const r = cdp(['status'], { CDP_S3_ENDPOINT: '::nope' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^cdp: error: s3\.endpoint: /);
  });

  it('an unknown config key: names it, exit 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cdp-cli-'));
    const f = join(dir, 'cdp.yaml');
    writeFileSync(f, 'archive:\n  segmentMaxAge: 5\n');
    const r = cdp(['status', '--config', f]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^cdp: error: archive\.segmentMaxAge: unknown configuration key/);
    expect(r.stderr.split('\n')).toHaveLength(1);
  });

  it('restore without a target, or with two: exit 2', () => {
    const none = cdp(['restore', '--into', 'postgres://x@127.0.0.1:1/db']);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/exactly one of --time, --lsn, --xid, --latest/);
    const two = cdp(['restore', '--into', 'postgres://x@127.0.0.1:1/db', '--latest', '--lsn', '0/1']);
    expect(two.status).toBe(2);
    expect(two.stderr).toMatch(/got --lsn, --latest/);
  });

  it('contradictory restore flags: exit 2', () => {
    const r = cdp(['restore', '--into', 'postgres://x@127.0.0.1:1/db', '--latest', '--dry-run', '--sql', '/tmp/x.sql']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--dry-run and --sql contradict/);
  });
});
