import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';
import { redactUrl } from '../util/redact.js';
import { ConfigSchema, type Config } from './schema.js';
import { envLayer, setPath } from './env.js';

// Configuration (DESIGN.md section 6): defaults < file (--config, YAML or JSON) < CDP_* environment
// < flags, validated once. Unknown keys are rejected and every error names the field. The schema
// is in schema.ts, the environment variables in env.ts; this module is the entry the rest imports.

export { ConfigSchema, SSL_MODES, type Config, type SslMode } from './schema.js';
export { ENV_MAP, envLayer, splitList } from './env.js';

type Plain = Record<string, unknown>;

function deepMerge(base: Plain, over: Plain): Plain {
  const out: Plain = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b) ? deepMerge(b as Plain, v as Plain) : v;
  }
  return out;
}

export function readConfigFile(path: string): Plain {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`, '--config', { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid ${/\.json$/i.test(path) ? 'JSON' : 'YAML'}: ${(err as Error).message}`, '--config', { cause: err });
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(`config file ${path} must hold a mapping at the top level`, '--config');
  }
  return parsed as Plain;
}

export interface LoadOptions {
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Flag values already mapped to config paths ('source.url' -> value). */
  flags?: Record<string, unknown>;
}

export function loadConfig(opts: LoadOptions = {}): Config {
  let merged: Plain = {};
  if (opts.file) merged = deepMerge(merged, readConfigFile(opts.file));
  merged = deepMerge(merged, envLayer(opts.env ?? process.env));
  const flagLayer: Plain = {};
  for (const [path, value] of Object.entries(opts.flags ?? {})) if (value !== undefined) setPath(flagLayer, path, value);
  merged = deepMerge(merged, flagLayer);
  const result = ConfigSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const keys = issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys : [];
    const field = [...issue.path, ...keys.slice(0, 1)].join('.') || '(top level)';
    const msg = issue.code === 'unrecognized_keys' ? `unknown configuration key (known keys: see README, Configuration)` : issue.message;
    throw new ConfigError(msg, field);
  }
  const cfg = result.data;
  if (cfg.source.schemas.length > 0 && cfg.source.tables.length > 0) {
    throw new ConfigError('set either source.schemas or source.tables, not both', 'source.tables');
  }
  for (const [field, tls] of [
    ['source.tls', cfg.source.tls],
    ['restore.tls', cfg.restore.tls],
  ] as const) {
    if (tls?.keyPasswordFile && tls.keyPasswordEnv) throw new ConfigError('set either keyPasswordFile or keyPasswordEnv, not both', `${field}.keyPasswordEnv`);
  }
  checkKafkaSecurity(cfg);
  if (cfg.archive.encryptionKeyFile && cfg.archive.encryptionKeyEnv) {
    throw new ConfigError('set either archive.encryptionKeyFile or archive.encryptionKeyEnv, not both', 'archive.encryptionKeyEnv');
  }
  return cfg;
}

/** The source database name, from the URL path (defaults to the user name, as libpq does). */
export function sourceDatabase(cfg: Config): string {
  const u = new URL(cfg.source.url);
  const db = decodeURIComponent(u.pathname.replace(/^\//, ''));
  return db || decodeURIComponent(u.username) || 'postgres';
}

export function topicName(cfg: Config): string {
  return cfg.kafka.topic ?? `cdp.${sourceDatabase(cfg)}`;
}

/** Every object of one source database lives under <prefix>/<database>/. */
export function archiveRoot(cfg: Config): string {
  const db = sourceDatabase(cfg);
  return cfg.s3.prefix ? `${cfg.s3.prefix}/${db}` : db;
}

/** Contradictory or incomplete kafka.tls / kafka.sasl settings, each error naming its field. */
function checkKafkaSecurity(cfg: Config): void {
  const { tls, sasl } = cfg.kafka;
  const files = tls.caFile ?? tls.certFile ?? tls.keyFile;
  if (tls.enabled === false && files !== undefined)
    throw new ConfigError('kafka.tls.enabled is false but a TLS file is set: remove one of them', 'kafka.tls.enabled');
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    throw new ConfigError(
      'a client certificate needs both kafka.tls.certFile and kafka.tls.keyFile',
      tls.certFile === undefined ? 'kafka.tls.certFile' : 'kafka.tls.keyFile',
    );
  }
  if (tls.keyPasswordFile && tls.keyPasswordEnv)
    throw new ConfigError('set either kafka.tls.keyPasswordFile or kafka.tls.keyPasswordEnv, not both', 'kafka.tls.keyPasswordEnv');
  if (sasl) {
    if (sasl.passwordFile && sasl.passwordEnv)
      throw new ConfigError('set either kafka.sasl.passwordFile or kafka.sasl.passwordEnv, not both', 'kafka.sasl.passwordEnv');
    if (!sasl.passwordFile && !sasl.passwordEnv)
      throw new ConfigError(
        'SASL needs a password: set kafka.sasl.passwordFile or kafka.sasl.passwordEnv (the name of an environment variable)',
        'kafka.sasl.passwordFile',
      );
  }
}

/**
 * The configuration as it may be logged: passwords in URLs masked. Secrets themselves never enter
 * the configuration (kafka.sasl, kafka.tls, archive keys: only a file path or a variable name).
 */
export function redactedConfig(cfg: Config): Config {
  const mask = (u: string | undefined) => (u === undefined ? u : redactUrl(u));
  const copy = structuredClone(cfg);
  copy.source.url = mask(copy.source.url)!;
  const compact = (copy as { compact?: { scratchUrl?: string } }).compact;
  if (compact?.scratchUrl !== undefined) compact.scratchUrl = mask(compact.scratchUrl);
  return copy;
}
