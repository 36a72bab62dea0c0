import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  adminUrl,
  createDatabase,
  dropDatabase,
  fingerprint,
  pipelineEnv,
  rand,
  runCli,
  stackEnvironment,
  startRun,
  withClient,
  type CliResult,
} from '../restore/helpers.js';
import { stopDaemon, waitRestorablePast, walPosition } from './pipeline.js';

// Issue 14 item 10: every Kafka client of the engine over secured listeners of the local broker
// (deploy/local/stack.sh): SASL_SSL (TLS with the stack's CA, then SCRAM-SHA-512) and SSL with a
// client certificate required (mutual TLS). Those listeners accept nothing else, so setup (kafkajs
// admin: topic), capture (the engine's own producer connections), archive (kafkajs consumer
// group) and status (kafkajs admin) all succeeding through them, and the restore equalling the
// source table for table, is the proof. Then the failures an operator meets first: a wrong
// password, an untrusted broker, no client certificate - exit 2 in seconds with one line.

const env0 = stackEnvironment();
const sasl = env0.CDP_STACK_KAFKA_SASL_SSL_BROKERS;
const mtls = env0.CDP_STACK_KAFKA_MTLS_BROKERS;
const ca = env0.CDP_STACK_KAFKA_CA_FILE;
const ready = Boolean(sasl && mtls && ca && existsSync(ca));

const scramEnv = (): Record<string, string> => ({
  CDP_KAFKA_BROKERS: sasl!,
  CDP_KAFKA_TLS_CA_FILE: ca!,
  CDP_KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512',
  CDP_KAFKA_SASL_USERNAME: env0.CDP_STACK_KAFKA_SASL_USERNAME!,
  CDP_KAFKA_SASL_PASSWORD_FILE: env0.CDP_STACK_KAFKA_SASL_PASSWORD_FILE!,
});

const mtlsEnv = (): Record<string, string> => ({
  CDP_KAFKA_BROKERS: mtls!,
  CDP_KAFKA_TLS_CA_FILE: ca!,
  CDP_KAFKA_TLS_CERT_FILE: env0.CDP_STACK_KAFKA_CLIENT_CERT_FILE!,
  CDP_KAFKA_TLS_KEY_FILE: env0.CDP_STACK_KAFKA_CLIENT_KEY_FILE!,
});

function expectOneLine(r: CliResult) {
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

async function roundTrip(label: string, kafka: Record<string, string>) {
  const name = `ktls_${label}_${rand()}`;
  const env = { ...pipelineEnv(name, adminUrl(name), 'test-kafka-tls'), ...kafka };
  let run: ChildProcess | undefined;
  const target = `${name}_r`;
  await createDatabase(name);
  try {
    await withClient(adminUrl(name), async (c) => {
      await c.query(`CREATE TABLE items (id int PRIMARY KEY, note text, amount numeric(10,2))`);
      await c.query(`CREATE TABLE events (id bigint PRIMARY KEY, payload jsonb)`);
      await c.query(`INSERT INTO items SELECT g, 'base ' || g, g / 7.0 FROM generate_series(1, 300) g`);
    });
    const setup = await runCli(['setup'], env);
    expect(setup.code, setup.stderr).toBe(0);
    run = startRun(env);
    let stderr = '';
    run.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    await withClient(adminUrl(name), async (c) => {
      await c.query(`INSERT INTO items SELECT g, 'stream ' || g, g / 3.0 FROM generate_series(301, 2300) g`);
      await c.query(`INSERT INTO events SELECT g, jsonb_build_object('n', g, 's', repeat('x', g % 50)) FROM generate_series(1, 1500) g`);
      await c.query(`UPDATE items SET note = note || ' updated' WHERE id % 7 = 0`);
      await c.query(`DELETE FROM items WHERE id % 11 = 0`);
      await c.query(`DELETE FROM events WHERE id % 5 = 0`);
    });
    await waitRestorablePast(env, await walPosition(adminUrl(name)), 'the restorable point past the changes');
    await stopDaemon(run);
    expect(run.exitCode, stderr.slice(-2000)).toBe(0);

    await createDatabase(target);
    const restore = await runCli(['restore', '--into', adminUrl(target), '--latest'], env);
    expect(restore.code, restore.stderr).toBe(0);
    const [want, got] = await Promise.all([withClient(adminUrl(name), fingerprint), withClient(adminUrl(target), fingerprint)]);
    expect(Object.keys(want)).toEqual(['public.events', 'public.items']);
    expect(got).toEqual(want);
  } finally {
    if (run && run.exitCode === null) run.kill('SIGKILL');
    await dropDatabase(target).catch(() => undefined);
    await dropDatabase(name).catch(() => undefined);
  }
}

describe.skipIf(!ready)('secured Kafka (SASL_SSL with SCRAM-SHA-512, mutual TLS)', () => {
  beforeAll(() => {
    stackEnvironment();
  });

  it('setup, run (capture + archive), status and restore through SASL_SSL with SCRAM-SHA-512: the restore equals the source', async () => {
    await roundTrip('scram', scramEnv());
  }, 400_000);

  it('the same through the mutual-TLS listener with a client certificate', async () => {
    await roundTrip('mtls', mtlsEnv());
  }, 400_000);

  it('a wrong SASL password: exit 2 within 10 s, one line naming the settings, for capture and archive', async () => {
    for (const cmd of ['capture', 'archive']) {
      const t = Date.now();
      const r = await runCli(
        [cmd],
        { ...scramEnv(), CDP_KAFKA_SASL_PASSWORD_FILE: '', CDP_KAFKA_SASL_PASSWORD_ENV: 'KTLS_TEST_PASSWORD', KTLS_TEST_PASSWORD: 'not-the-password' },
        60_000,
      );
      expect(r.code, `${cmd}: ${r.stderr}`).toBe(2);
      expect(Date.now() - t, cmd).toBeLessThan(10_000);
      expectOneLine(r);
      expect(r.stderr).toMatch(/SASL authentication failed .*SCRAM-SHA-512.*kafka\.sasl\.username/);
    }
  }, 120_000);

  it('an untrusted broker (no CA given) and a missing client certificate: exit 2, one line each', async () => {
    const noCa = await runCli(['capture'], { ...scramEnv(), CDP_KAFKA_TLS_CA_FILE: '', CDP_KAFKA_TLS: 'true' }, 60_000);
    expect(noCa.code, noCa.stderr).toBe(2);
    expectOneLine(noCa);
    expect(noCa.stderr).toMatch(/not trusted.*kafka\.tls\.caFile/);
    const noCert = await runCli(['capture'], { ...mtlsEnv(), CDP_KAFKA_TLS_CERT_FILE: '', CDP_KAFKA_TLS_KEY_FILE: '' }, 60_000);
    expect(noCert.code, noCert.stderr).toBe(2);
    expectOneLine(noCert);
    expect(noCert.stderr).toMatch(/client certificate.*kafka\.tls\.certFile/);
  }, 120_000);

  it('the logged configuration names where secrets are, never the secrets', async () => {
    const secret = `s3cr3t-${rand()}`;
    const r = await runCli(
      ['capture'],
      {
        ...scramEnv(),
        CDP_LOG_LEVEL: 'debug',
        CDP_SOURCE_URL: `postgres://postgres:${secret}-pg@127.0.0.1:5432/postgres`,
        CDP_KAFKA_SASL_PASSWORD_FILE: '',
        CDP_KAFKA_SASL_PASSWORD_ENV: 'KTLS_TEST_PASSWORD',
        KTLS_TEST_PASSWORD: secret,
      },
      60_000,
    );
    expect(r.code, r.stderr).toBe(2);
    const config = r.stderr.split('\n').find((l) => l.includes('"msg":"configuration"'));
    expect(config, r.stderr).toBeDefined();
    expect(config).toContain('"passwordEnv":"KTLS_TEST_PASSWORD"');
    expect(config).toContain('postgres:***@127.0.0.1');
    expect(r.stderr + r.stdout).not.toContain(secret);
  }, 60_000);
});
