import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, dropDatabase, pipelineEnv, rand, REPO, runCli, stackEnvironment, waitFor, withClient } from '../restore/helpers.js';

// Issue 14: what a supervisor must see. A second capture on a busy slot ends at once with one line
// and exit 2 (it used to warn forever); a daemon that cannot make progress (here: a "broker" that
// accepts connections and never answers, so the start-up probe passes and nothing is ever
// acknowledged) exits 1 after watchdog.stallSeconds with one line saying why.

describe('supervision', () => {
  const name = `sup_${rand()}`;
  let url: string;
  let env: Record<string, string>;
  const children: ChildProcess[] = [];
  let blackhole: Server | undefined;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    stackEnvironment();
    url = await createDatabase(name);
    env = pipelineEnv(name, url, 'test-supervision');
    await withClient(url, (c) => c.query('CREATE TABLE t (id int PRIMARY KEY)'));
    expect((await runCli(['setup', '--no-basebackup'], env)).code).toBe(0);
  }, 120_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    for (const s of sockets) s.destroy();
    blackhole?.close();
    await dropDatabase(name);
  }, 60_000);

  it('a second capture on the same slot: exit 2, one line naming the slot, no stack trace', async () => {
    const first = spawn(process.execPath, [`${REPO}bin/cdp.mjs`, 'capture'], {
      env: { ...process.env, ...env, CDP_METRICS_PORT: '0' },
      stdio: ['ignore', 'ignore', 'ignore'],
    });
    children.push(first);
    await withClient(url, (c) =>
      waitFor(
        'the first capture streaming',
        async () => (await c.query(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [name])).rows[0]?.active === true,
        60_000,
      ),
    );
    const t = Date.now();
    const second = await runCli(['capture'], env, 60_000);
    const ms = Date.now() - t;
    console.log(`second capture: exit ${second.code} after ${ms} ms: ${second.stderr.trim()}`);
    expect(second.code, second.stderr).toBe(2);
    const lines = second.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('cdp: '));
    expect(lines, second.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`replication slot ${name} is in use by PID \\d+: another cdp capture`));
    expect(second.stderr).not.toMatch(/\n\s+at /);
    expect(ms).toBeLessThan(30_000);
    first.kill('SIGTERM');
    await new Promise((r) => first.once('exit', r));
  }, 120_000);

  it('a daemon that cannot make progress exits 1 after watchdog.stallSeconds, saying why', async () => {
    blackhole = createServer((s) => {
      sockets.push(s);
      s.on('error', () => {});
    });
    await new Promise<void>((r) => blackhole!.listen(0, '127.0.0.1', () => r()));
    const port = (blackhole.address() as { port: number }).port;
    const t = Date.now();
    const r = await runCli(['capture'], { ...env, CDP_KAFKA_BROKERS: `127.0.0.1:${port}`, CDP_STALL_SECONDS: '5' }, 120_000);
    const ms = Date.now() - t;
    const line = r.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('cdp: '))
      .join('\n');
    console.log(`stalled capture: exit ${r.code} after ${ms} ms: ${line}`);
    expect(r.code, r.stderr.slice(-3000)).toBe(1);
    expect(line).toMatch(/no progress for \d+ s: capture .*watchdog\.stallSeconds/);
    expect(ms).toBeLessThan(60_000);
  }, 180_000);
});
