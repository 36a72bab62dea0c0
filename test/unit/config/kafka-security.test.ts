import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, redactedConfig } from '../../../src/config/config.js';
import { kafkaClientOptions, kafkajsSecurity, kafkaTlsEnabled } from '../../../src/kafka/security.js';

// kafka.tls / kafka.sasl: the layers (file, environment, flags), the contradictions refused with
// the field named, and the secrets read only when a client is built, never kept in the config.

const dir = mkdtempSync(join(tmpdir(), 'cdp-kafka-sec-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

describe('kafka.tls and kafka.sasl settings', () => {
  it('come from the environment, and the password from the file named', () => {
    const pw = file('pw', 'hunter2\n');
    const ca = file('ca.pem', 'CA');
    const cfg = loadConfig({
      env: { CDP_KAFKA_TLS_CA_FILE: ca, CDP_KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512', CDP_KAFKA_SASL_USERNAME: 'cdp', CDP_KAFKA_SASL_PASSWORD_FILE: pw },
    });
    expect(kafkaTlsEnabled(cfg)).toBe(true);
    expect(JSON.stringify(cfg)).not.toContain('hunter2');
    const o = kafkaClientOptions(cfg, 'capture');
    expect(o.connection.sasl).toEqual({ mechanism: 'SCRAM-SHA-512', username: 'cdp', password: 'hunter2' });
    expect(o.connection.tls?.ca).toEqual(Buffer.from('CA'));
    expect(o.connection.tls?.rejectUnauthorized).toBe(true);
    expect(kafkajsSecurity(cfg).sasl).toEqual({ mechanism: 'scram-sha-512', username: 'cdp', password: 'hunter2' });
  });

  it('take flags over the environment', () => {
    const cfg = loadConfig({
      env: { CDP_KAFKA_SASL_MECHANISM: 'PLAIN' },
      flags: { 'kafka.sasl.mechanism': 'SCRAM-SHA-256', 'kafka.sasl.username': 'u', 'kafka.sasl.passwordEnv': 'PW', 'kafka.tls.enabled': true },
    });
    expect(cfg.kafka.sasl?.mechanism).toBe('SCRAM-SHA-256');
    expect(kafkaTlsEnabled(cfg)).toBe(true);
  });

  it('read the password from the variable named, and say which one is missing', () => {
    const cfg = loadConfig({
      env: { CDP_KAFKA_SASL_MECHANISM: 'PLAIN', CDP_KAFKA_SASL_USERNAME: 'u', CDP_KAFKA_SASL_PASSWORD_ENV: 'CDP_TEST_KAFKA_PW_UNSET' },
    });
    expect(() => kafkaClientOptions(cfg)).toThrow(/kafka\.sasl\.passwordEnv: the environment variable CDP_TEST_KAFKA_PW_UNSET .* is not set/);
  });

  it('refuse contradictions and gaps, naming the field', () => {
    const bad: Array<[Record<string, string>, RegExp]> = [
      [{ CDP_KAFKA_SASL_MECHANISM: 'PLAIN', CDP_KAFKA_SASL_USERNAME: 'u' }, /kafka\.sasl\.passwordFile: SASL needs a password/],
      [
        { CDP_KAFKA_SASL_MECHANISM: 'PLAIN', CDP_KAFKA_SASL_USERNAME: 'u', CDP_KAFKA_SASL_PASSWORD_FILE: 'a', CDP_KAFKA_SASL_PASSWORD_ENV: 'B' },
        /kafka\.sasl\.passwordEnv: set either/,
      ],
      [{ CDP_KAFKA_SASL_MECHANISM: 'GSSAPI', CDP_KAFKA_SASL_USERNAME: 'u', CDP_KAFKA_SASL_PASSWORD_ENV: 'B' }, /kafka\.sasl\.mechanism/],
      [
        { CDP_KAFKA_SASL_MECHANISM: 'PLAIN', CDP_KAFKA_SASL_USERNAME: 'u', CDP_KAFKA_SASL_PASSWORD_ENV: 'p@ss w0rd!' },
        /kafka\.sasl\.passwordEnv: must be the name of an environment variable/,
      ],
      [{ CDP_KAFKA_TLS_CERT_FILE: 'c.pem' }, /kafka\.tls\.keyFile: a client certificate needs both/],
      [{ CDP_KAFKA_TLS: 'false', CDP_KAFKA_TLS_CA_FILE: 'ca.pem' }, /kafka\.tls\.enabled/],
    ];
    for (const [env, says] of bad) expect(() => loadConfig({ env }), JSON.stringify(env)).toThrow(says);
  });

  it('an unreadable certificate file is a configuration error naming the field', () => {
    const cfg = loadConfig({ env: { CDP_KAFKA_TLS_CA_FILE: join(dir, 'missing.pem') } });
    expect(() => kafkaClientOptions(cfg)).toThrow(/kafka\.tls\.caFile: cannot read the Kafka CA certificate file/);
  });

  it('plain Kafka stays plain: no tls, no sasl', () => {
    const cfg = loadConfig({ env: {} });
    expect(kafkaTlsEnabled(cfg)).toBe(false);
    expect(kafkaClientOptions(cfg).connection).not.toHaveProperty('tls');
    expect(kafkajsSecurity(cfg)).toEqual({});
  });
});

describe('redactedConfig (what the debug log shows)', () => {
  it('masks URL passwords and keeps where the secrets are', () => {
    const cfg = loadConfig({
      env: {
        CDP_SOURCE_URL: 'postgres://cdp:topsecret@db:5432/shop',
        CDP_KAFKA_SASL_MECHANISM: 'PLAIN',
        CDP_KAFKA_SASL_USERNAME: 'u',
        CDP_KAFKA_SASL_PASSWORD_ENV: 'KAFKA_PW',
      },
    });
    const shown = JSON.stringify(redactedConfig(cfg));
    expect(shown).not.toContain('topsecret');
    expect(shown).toContain('postgres://cdp:***@db:5432/shop');
    expect(shown).toContain('"passwordEnv":"KAFKA_PW"');
    expect(cfg.source.url).toContain('topsecret'); // the configuration itself is not changed
  });
});
