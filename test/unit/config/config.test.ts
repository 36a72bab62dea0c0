import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { archiveRoot, loadConfig, sourceDatabase, topicName } from '../../../src/config/config.js';
import { ConfigError } from '../../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'cdp-config-'));
function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('configuration layers: defaults < file < env < flags', () => {
  it('applies each layer over the previous one', () => {
    const f = file('a.yaml', 'source:\n  slot: from_file\n  publication: from_file\nkafka:\n  partitions: 3\n');
    const cfg = loadConfig({
      file: f,
      env: { CDP_SLOT: 'from_env', CDP_KAFKA_BROKERS: 'k1:9092, k2:9092' },
      flags: { 'source.slot': 'from_flag' },
    });
    expect(cfg.source.slot).toBe('from_flag');
    expect(cfg.source.publication).toBe('from_file');
    expect(cfg.kafka.partitions).toBe(3);
    expect(cfg.kafka.brokers).toEqual(['k1:9092', 'k2:9092']);
    expect(cfg.archive.segmentMaxAgeMs).toBe(5000);
  });

  it('reads JSON files too', () => {
    const cfg = loadConfig({ file: file('b.json', '{"s3": {"bucket": "my-bucket", "prefix": "/x/y/"}}'), env: {} });
    expect(cfg.s3.bucket).toBe('my-bucket');
    expect(cfg.s3.prefix).toBe('x/y');
  });

  it('derives names from the source database', () => {
    const cfg = loadConfig({ env: { CDP_SOURCE_URL: 'postgres://u@h:5432/shop', CDP_S3_PREFIX: 'p' } });
    expect(sourceDatabase(cfg)).toBe('shop');
    expect(topicName(cfg)).toBe('cdp.shop');
    expect(archiveRoot(cfg)).toBe('p/shop');
  });
});

describe('bad configuration names the field', () => {
  const cases: Array<[string, () => unknown, RegExp]> = [
    ['unknown key in a file', () => loadConfig({ file: file('c.yaml', 'kafka:\n  brokerz: [a:1]\n'), env: {} }), /^kafka\.brokerz: unknown configuration key/],
    ['unknown top-level key', () => loadConfig({ file: file('d.yaml', 'sauce: 1\n'), env: {} }), /^sauce: unknown/],
    ['a URL of the wrong kind', () => loadConfig({ env: { CDP_SOURCE_URL: 'mysql://x' } }), /^source\.url: must be a postgres:\/\/ URL/],
    ['not a URL at all', () => loadConfig({ env: { CDP_S3_ENDPOINT: 'not a url' } }), /^s3\.endpoint: must be an http/],
    ['a non-integer in the environment', () => loadConfig({ env: { CDP_KAFKA_PARTITIONS: 'six' } }), /^CDP_KAFKA_PARTITIONS: must be an integer/],
    ['a bad broker list', () => loadConfig({ env: { CDP_KAFKA_BROKERS: 'localhost' } }), /^kafka\.brokers\.0: must be host:port/],
    [
      'contradictory settings',
      () => loadConfig({ file: file('e.yaml', 'source:\n  schemas: [a]\n  tables: [b.c]\n'), env: {} }),
      /^source\.tables: set either/,
    ],
    ['a file that is not YAML', () => loadConfig({ file: file('f.yaml', 'a: [1\n'), env: {} }), /^--config: config file .* is not valid YAML/],
    ['a missing file', () => loadConfig({ file: join(dir, 'missing.yaml'), env: {} }), /^--config: cannot read config file/],
  ];
  for (const [name, fn, re] of cases) {
    it(name, () => {
      let caught: unknown;
      try {
        fn();
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ConfigError);
      expect((caught as ConfigError).message).toMatch(re);
      expect((caught as ConfigError).exitCode).toBe(2);
    });
  }
});
