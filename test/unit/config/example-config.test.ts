import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../../src/config/config.js';

// Issue 14: the sample configuration is valid, and what it shows as defaults are the defaults.

const FILE = new URL('../../../deploy/cdp.example.yaml', import.meta.url).pathname;

describe('deploy/cdp.example.yaml', () => {
  it('passes the validator (unknown keys would be refused)', () => {
    const cfg = loadConfig({ file: FILE, env: {}, flags: {} });
    expect(cfg.source.url).toBe('postgres://cdp@db.example.internal:5432/shop');
    expect(cfg.source.tls).toEqual({ mode: 'verify-full', rootCertFile: '/etc/cdp/pg-ca.pem' });
    expect(cfg.kafka.brokers).toHaveLength(2);
    expect(cfg.watchdog.stallSeconds).toBe(600);
  });

  it('every value it shows outside source, kafka.brokers and s3 equals the built-in default', () => {
    const file = parseYaml(readFileSync(FILE, 'utf8')) as Record<string, Record<string, unknown>>;
    const defaults = loadConfig({ env: {}, flags: {} }) as unknown as Record<string, Record<string, unknown>>;
    for (const [section, values] of Object.entries(file)) {
      if (section === 'source') continue;
      for (const [k, v] of Object.entries(values)) {
        if (section === 'kafka' && k === 'brokers') continue;
        expect(defaults[section]![k], `${section}.${k}`).toEqual(v);
      }
    }
  });
});
