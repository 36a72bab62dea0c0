import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { redactUrl } from '../util/redact.js';
import { SSL_MODES } from '../pg/tls.js';

// Configuration (DESIGN.md section 6): defaults < file (--config, YAML or JSON) < CDP_* environment
// < flags, validated once. Unknown keys are rejected and every error names the field.

const url = (what: string) =>
  z.string().refine(
    (s) => {
      try {
        const u = new URL(s);
        return what === 'postgres' ? /^postgres(ql)?:$/.test(u.protocol) : /^https?:$/.test(u.protocol);
      } catch {
        return false;
      }
    },
    { message: what === 'postgres' ? 'must be a postgres:// URL' : 'must be an http(s):// URL' },
  );

const identifier = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier (letters, digits, _; at most 63)');

const hostPort = z.string().regex(/^[^\s:,]+:\d{1,5}$/, 'must be host:port');

/** The NAME of an environment variable holding a secret (so that a secret pasted here by mistake is refused, not logged). */
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be the name of an environment variable (letters, digits, _), not the secret itself');

/** TLS of a PostgreSQL connection (src/pg/tls.ts): libpq's sslmode words and files. */
const pgTls = z
  .strictObject({
    mode: z.enum(SSL_MODES).optional(),
    /** The CA certificate(s) the server certificate must chain to (libpq sslrootcert). */
    rootCertFile: z.string().min(1).optional(),
    /** Client certificate and key (libpq sslcert, sslkey), for `hostssl ... cert` in pg_hba.conf. */
    certFile: z.string().min(1).optional(),
    keyFile: z.string().min(1).optional(),
    /** The password of an encrypted key: in a file, or in the environment variable named here. */
    keyPasswordFile: z.string().min(1).optional(),
    keyPasswordEnv: z.string().min(1).optional(),
  })
  .optional();

export const ConfigSchema = z.strictObject({
  source: z
    .strictObject({
      url: url('postgres').default('postgres://postgres@127.0.0.1:5432/postgres'),
      slot: identifier.default('katya_cdp'),
      /** PostgreSQL 17+: create the slot with failover = true, so standbys with sync_replication_slots keep a copy (capture/failover.ts). */
      failoverSlot: z.boolean().default(false),
      publication: identifier.default('katya_cdp'),
      /** Publish only these schemas (FOR TABLES IN SCHEMA); empty = FOR ALL TABLES. */
      schemas: z.array(z.string().min(1)).default([]),
      /** Publish only these tables (schema.table); empty = FOR ALL TABLES. */
      tables: z.array(z.string().min(1)).default([]),
      /**
       * Published tables with no primary key or replica identity: their UPDATE and DELETE fail on
       * the source once published. 'refuse': setup stops (exit 2) listing them; 'full': setup sets
       * REPLICA IDENTITY FULL on them (also `cdp setup --replica-identity-full`).
       */
      keylessTables: z.enum(['refuse', 'full']).default('refuse'),
      /**
       * Tables created later without a key: 'full' (the DDL trigger sets REPLICA IDENTITY FULL so a
       * CREATE TABLE never breaks writes) or 'leave' (as PostgreSQL does: their UPDATE/DELETE fail).
       */
      newKeylessTables: z.enum(['full', 'leave']).default('full'),
      /** TLS for every connection to the source (capture, setup, basebackup and its pg_dump, status, verify). */
      tls: pgTls,
    })
    .prefault({}),
  kafka: z
    .strictObject({
      brokers: z.array(hostPort).min(1).default(['127.0.0.1:9092']),
      /** Defaults to cdp.<database>. */
      topic: z
        .string()
        .regex(/^[A-Za-z0-9._-]{1,249}$/, 'must be a valid Kafka topic name')
        .optional(),
      partitions: z.number().int().min(1).max(10_000).default(6),
      /** -1 = the broker's default.replication.factor. */
      replicationFactor: z.number().int().min(-1).max(32).default(-1),
      /** Kafka keeps records this long after they are archived; the archive is on S3. */
      retentionMs: z
        .number()
        .int()
        .min(60_000)
        .default(7 * 24 * 3600 * 1000),
      clientId: z.string().default('katya-cdp'),
      /**
       * TLS to every broker (README "Secured Kafka"). On when `enabled` is true or any file is set.
       * caFile: the CA that signed the brokers' certificates (default: the system's public roots);
       * certFile + keyFile: a client certificate (mutual TLS); the key's password, if it has one,
       * in keyPasswordFile or in the environment variable named by keyPasswordEnv.
       */
      tls: z
        .strictObject({
          enabled: z.boolean().optional(),
          caFile: z.string().min(1).optional(),
          certFile: z.string().min(1).optional(),
          keyFile: z.string().min(1).optional(),
          keyPasswordFile: z.string().min(1).optional(),
          keyPasswordEnv: envName.optional(),
          /** The name the brokers' certificates are checked against, when it is not the host in kafka.brokers. */
          serverName: z.string().min(1).optional(),
        })
        .prefault({}),
      /**
       * SASL authentication (over TLS in production). The password is never a setting: it is read
       * from passwordFile or from the environment variable NAMED by passwordEnv.
       */
      sasl: z
        .strictObject({
          mechanism: z.enum(['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512']),
          username: z.string().min(1),
          passwordFile: z.string().min(1).optional(),
          passwordEnv: envName.optional(),
        })
        .optional(),
    })
    .prefault({}),
  s3: z
    .strictObject({
      endpoint: url('http').optional(),
      bucket: z
        .string()
        .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be a valid S3 bucket name')
        .default('katya-cdp'),
      prefix: z
        .string()
        .regex(/^[A-Za-z0-9._/-]*$/, 'may hold letters, digits, . _ - and /')
        .transform((s) => s.replace(/^\/+|\/+$/g, ''))
        .default('cdp'),
      region: z.string().default('us-east-1'),
      forcePathStyle: z.boolean().default(false),
      /** Server-side encryption header for every PUT: AES256 or aws:kms. */
      serverSideEncryption: z.enum(['AES256', 'aws:kms']).optional(),
      kmsKeyId: z.string().optional(),
    })
    .prefault({}),
  capture: z
    .strictObject({
      heartbeatIntervalMs: z.number().int().min(100).default(2_000),
      /** A watermark to every partition this often when transactions were acknowledged since the last one (idle: at the heartbeat's pace). */
      watermarkIntervalMs: z.number().int().min(50).default(200),
      sequenceIntervalMs: z.number().int().min(1_000).default(30_000),
      /** Produce batch bounds: records and bytes in one Kafka request (back-pressure). */
      batchMaxRecords: z.number().int().min(1).default(5_000),
      batchMaxBytes: z
        .number()
        .int()
        .min(1024)
        .default(4 * 1024 * 1024),
      batchMaxAgeMs: z.number().int().min(1).default(20),
      /** Record batches into Kafka: zstd (level 1) or none. Readers need zstd support (Kafka 2.1+ and any current client). */
      compression: z.enum(['zstd', 'none']).default('zstd'),
      /** Which producer writes to Kafka: the engine's own record batches, or kafkajs's producer (slower per record). */
      producer: z.enum(['direct', 'kafkajs']).default('direct'),
      /** Log the process's memory use every second at warn level (diagnosing a leak). */
      debugMemory: z.boolean().default(false),
    })
    .prefault({}),
  archive: z
    .strictObject({
      groupId: z.string().optional(),
      segmentMaxBytes: z
        .number()
        .int()
        .min(1024)
        .default(64 * 1024 * 1024),
      /** A segment holding changes is stored at the latest this long after its first change (cut-policy.ts). */
      segmentMaxAgeMs: z.number().int().min(100).default(5_000),
      /**
       * A segment holding changes is stored at the first watermark after its first change is this
       * old: the busy path's batching (lower: lower commit-to-durable latency, more objects).
       */
      segmentMinAgeMs: z.number().int().min(10).default(200),
      /** A segment holding only watermarks (an idle database) is stored at most this often per partition. */
      idleSegmentMaxAgeMs: z.number().int().min(100).default(600_000),
      /** Meanwhile an idle partition's pointer (the restorable point, the RPO) follows its watermarks this often, without new objects. */
      idlePointerIntervalMs: z.number().int().min(100).default(10_000),
      codec: z.enum(['zstandard', 'deflate']).default('zstandard'),
      zstdLevel: z.number().int().min(1).max(19).default(1),
      /** Kafka consumer-group session timeout: the archiving pause after a member or broker dies. */
      sessionTimeoutMs: z.number().int().min(6_000).max(300_000).default(10_000),
      /** Client-side AES-256-GCM: a 32-byte master key, hex or base64, in a file or an env var. */
      encryptionKeyFile: z.string().optional(),
      encryptionKeyEnv: z.string().optional(),
      /**
       * Open envelope-v1 objects (written before objects were bound to their name and archive).
       * Off by default: a v1 object can be moved or replayed undetected, so it is accepted only
       * when the operator says the archive predates envelope v2.
       */
      acceptLegacyEnvelopes: z.boolean().default(false),
    })
    .prefault({}),
  basebackup: z
    .strictObject({
      /** `cdp run` takes a base this often; 0 disables the schedule. */
      intervalHours: z.number().min(0).default(24),
      pgDumpPath: z.string().default('pg_dump'),
      pgRestorePath: z.string().default('pg_restore'),
    })
    .prefault({}),
  compact: z
    .strictObject({
      /** `cdp run` builds a synthetic base this often (cdp compact); 0 disables the schedule. */
      intervalMinutes: z.number().min(0).default(0),
      /** Skip a compaction when fewer archived segment bytes than this follow the newest base. */
      minSegmentBytes: z.number().int().min(0).default(0),
      /** A PostgreSQL server of the source's major to restore into, instead of the embedded one cdp starts. */
      scratchUrl: url('postgres').optional(),
      /** Folder for the embedded server's programs and scratch clusters: private (0700, ours); default /var/lib/katya-cdp/compact as root, else $XDG_CACHE_HOME/katya-cdp/compact. */
      scratchDir: z.string().optional(),
      /** A synthetic base folder without manifest (a compaction that died) is removed once it is this old. */
      debrisGraceMinutes: z.number().min(0).default(360),
    })
    .prefault({}),
  restore: z
    .strictObject({
      jobs: z.number().int().min(1).max(64).default(2),
      /**
       * Net effect per key (restore/coalesce.ts): a target transaction spans source transactions
       * while its coalescing buffer holds rows, up to this many changes (then it commits at the next
       * source commit) and this many estimated bytes of buffered rows (then the buffer is written
       * out). Larger: more of a bulk load's later updates and deletes fold into its rows, but the
       * target waits while the buffer fills (bench/restore.ts measured 4,000,000 / 512 MiB slower
       * than these defaults on 2 cores); smaller: less memory, finer resume points.
       */
      coalesceMaxChanges: z.number().int().min(1).default(20_000),
      coalesceMaxBytes: z
        .number()
        .int()
        .min(1024 * 1024)
        .default(64 * 1024 * 1024),
      /** TLS for the restore target (--into), for this process and pg_restore/psql. */
      tls: pgTls,
    })
    .prefault({}),
  status: z
    .strictObject({
      /** `status --check` exits 4 when the restorable point is older than this. */
      rpoSeconds: z.number().min(1).default(900),
      /** `status --check` exits 4 when restoring the restorable point is estimated to take longer (Tier 1: 1 hour). */
      rtoSeconds: z.number().min(1).default(3600),
      /**
       * Rates of the RTO estimate: bytes of base dump pg_restore loads per second, and bytes of
       * (compressed) segments restore replays per second. Defaults are conservative figures from
       * bench/restore.ts on a 2-core machine (1.7 M changes, about 60 MB of segments, in about 10 s);
       * measure your own and set them.
       */
      restoreBaseBytesPerSecond: z
        .number()
        .min(1)
        .default(10 * 1024 * 1024),
      replaySegmentBytesPerSecond: z
        .number()
        .min(1)
        .default(4 * 1024 * 1024),
    })
    .prefault({}),
  retention: z
    .strictObject({
      /** Keep every base (and the segments after it) younger than this; Tier 1 asks for a year. */
      days: z.number().positive().default(365),
    })
    .prefault({}),
  watchdog: z
    .strictObject({
      /**
       * A daemon (capture, archive, run) whose components report no progress for this long exits 1
       * so that its supervisor notices and restarts it (ops/watchdog.ts); 0 = never.
       */
      stallSeconds: z.number().min(0).default(600),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      /** 0 disables the HTTP server for /metrics and /healthz. */
      port: z.number().int().min(0).max(65535).default(9464),
      host: z.string().default('127.0.0.1'),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      /** auto: readable lines on a terminal, JSON otherwise; json: always JSON. */
      format: z.enum(['auto', 'json']).default('auto'),
    })
    .prefault({}),
});

export type Config = z.infer<typeof ConfigSchema>;
type Plain = Record<string, unknown>;

/** Environment variables and the config path each one sets. */
export const ENV_MAP: Record<string, { path: string; kind: 'string' | 'list' | 'int' | 'number' | 'bool' }> = {
  CDP_SOURCE_URL: { path: 'source.url', kind: 'string' },
  CDP_SLOT: { path: 'source.slot', kind: 'string' },
  CDP_FAILOVER_SLOT: { path: 'source.failoverSlot', kind: 'bool' },
  CDP_PUBLICATION: { path: 'source.publication', kind: 'string' },
  CDP_KEYLESS_TABLES: { path: 'source.keylessTables', kind: 'string' },
  CDP_NEW_KEYLESS_TABLES: { path: 'source.newKeylessTables', kind: 'string' },
  CDP_SOURCE_SSLMODE: { path: 'source.tls.mode', kind: 'string' },
  CDP_SOURCE_SSLROOTCERT: { path: 'source.tls.rootCertFile', kind: 'string' },
  CDP_SOURCE_SSLCERT: { path: 'source.tls.certFile', kind: 'string' },
  CDP_SOURCE_SSLKEY: { path: 'source.tls.keyFile', kind: 'string' },
  CDP_SOURCE_SSLKEY_PASSWORD_FILE: { path: 'source.tls.keyPasswordFile', kind: 'string' },
  CDP_SOURCE_SSLKEY_PASSWORD_ENV: { path: 'source.tls.keyPasswordEnv', kind: 'string' },
  CDP_TARGET_SSLMODE: { path: 'restore.tls.mode', kind: 'string' },
  CDP_TARGET_SSLROOTCERT: { path: 'restore.tls.rootCertFile', kind: 'string' },
  CDP_TARGET_SSLCERT: { path: 'restore.tls.certFile', kind: 'string' },
  CDP_TARGET_SSLKEY: { path: 'restore.tls.keyFile', kind: 'string' },
  CDP_TARGET_SSLKEY_PASSWORD_FILE: { path: 'restore.tls.keyPasswordFile', kind: 'string' },
  CDP_TARGET_SSLKEY_PASSWORD_ENV: { path: 'restore.tls.keyPasswordEnv', kind: 'string' },
  CDP_KAFKA_BROKERS: { path: 'kafka.brokers', kind: 'list' },
  CDP_TOPIC: { path: 'kafka.topic', kind: 'string' },
  CDP_KAFKA_PARTITIONS: { path: 'kafka.partitions', kind: 'int' },
  CDP_KAFKA_REPLICATION_FACTOR: { path: 'kafka.replicationFactor', kind: 'int' },
  CDP_KAFKA_TLS: { path: 'kafka.tls.enabled', kind: 'bool' },
  CDP_KAFKA_TLS_CA_FILE: { path: 'kafka.tls.caFile', kind: 'string' },
  CDP_KAFKA_TLS_CERT_FILE: { path: 'kafka.tls.certFile', kind: 'string' },
  CDP_KAFKA_TLS_KEY_FILE: { path: 'kafka.tls.keyFile', kind: 'string' },
  CDP_KAFKA_TLS_KEY_PASSWORD_FILE: { path: 'kafka.tls.keyPasswordFile', kind: 'string' },
  CDP_KAFKA_TLS_KEY_PASSWORD_ENV: { path: 'kafka.tls.keyPasswordEnv', kind: 'string' },
  CDP_KAFKA_TLS_SERVER_NAME: { path: 'kafka.tls.serverName', kind: 'string' },
  CDP_KAFKA_SASL_MECHANISM: { path: 'kafka.sasl.mechanism', kind: 'string' },
  CDP_KAFKA_SASL_USERNAME: { path: 'kafka.sasl.username', kind: 'string' },
  CDP_KAFKA_SASL_PASSWORD_FILE: { path: 'kafka.sasl.passwordFile', kind: 'string' },
  CDP_KAFKA_SASL_PASSWORD_ENV: { path: 'kafka.sasl.passwordEnv', kind: 'string' },
  CDP_S3_ENDPOINT: { path: 's3.endpoint', kind: 'string' },
  CDP_S3_BUCKET: { path: 's3.bucket', kind: 'string' },
  CDP_S3_PREFIX: { path: 's3.prefix', kind: 'string' },
  CDP_S3_REGION: { path: 's3.region', kind: 'string' },
  CDP_S3_FORCE_PATH_STYLE: { path: 's3.forcePathStyle', kind: 'bool' },
  CDP_S3_SSE: { path: 's3.serverSideEncryption', kind: 'string' },
  CDP_ARCHIVE_GROUP_ID: { path: 'archive.groupId', kind: 'string' },
  CDP_RESTORE_COALESCE_MAX_CHANGES: { path: 'restore.coalesceMaxChanges', kind: 'int' },
  CDP_RESTORE_COALESCE_MAX_BYTES: { path: 'restore.coalesceMaxBytes', kind: 'int' },
  CDP_SEGMENT_MAX_BYTES: { path: 'archive.segmentMaxBytes', kind: 'int' },
  CDP_SEGMENT_MAX_AGE_MS: { path: 'archive.segmentMaxAgeMs', kind: 'int' },
  CDP_SEGMENT_MIN_AGE_MS: { path: 'archive.segmentMinAgeMs', kind: 'int' },
  CDP_IDLE_SEGMENT_MAX_AGE_MS: { path: 'archive.idleSegmentMaxAgeMs', kind: 'int' },
  CDP_IDLE_POINTER_INTERVAL_MS: { path: 'archive.idlePointerIntervalMs', kind: 'int' },
  CDP_ENCRYPTION_KEY_FILE: { path: 'archive.encryptionKeyFile', kind: 'string' },
  CDP_ENCRYPTION_KEY_ENV: { path: 'archive.encryptionKeyEnv', kind: 'string' },
  CDP_ACCEPT_LEGACY_ENVELOPES: { path: 'archive.acceptLegacyEnvelopes', kind: 'bool' },
  CDP_HEARTBEAT_INTERVAL_MS: { path: 'capture.heartbeatIntervalMs', kind: 'int' },
  CDP_CAPTURE_COMPRESSION: { path: 'capture.compression', kind: 'string' },
  CDP_CAPTURE_PRODUCER: { path: 'capture.producer', kind: 'string' },
  CDP_CAPTURE_DEBUG_MEMORY: { path: 'capture.debugMemory', kind: 'bool' },
  CDP_BASEBACKUP_INTERVAL_HOURS: { path: 'basebackup.intervalHours', kind: 'number' },
  CDP_COMPACT_INTERVAL_MINUTES: { path: 'compact.intervalMinutes', kind: 'number' },
  CDP_COMPACT_SCRATCH_URL: { path: 'compact.scratchUrl', kind: 'string' },
  CDP_COMPACT_DEBRIS_GRACE_MINUTES: { path: 'compact.debrisGraceMinutes', kind: 'number' },
  CDP_RETENTION_DAYS: { path: 'retention.days', kind: 'number' },
  CDP_RPO_SECONDS: { path: 'status.rpoSeconds', kind: 'number' },
  CDP_RTO_SECONDS: { path: 'status.rtoSeconds', kind: 'number' },
  CDP_STATUS_REPLAY_BYTES_PER_SECOND: { path: 'status.replaySegmentBytesPerSecond', kind: 'number' },
  CDP_STALL_SECONDS: { path: 'watchdog.stallSeconds', kind: 'number' },
  CDP_METRICS_PORT: { path: 'metrics.port', kind: 'int' },
  CDP_METRICS_HOST: { path: 'metrics.host', kind: 'string' },
  CDP_LOG_LEVEL: { path: 'log.level', kind: 'string' },
  CDP_LOG_FORMAT: { path: 'log.format', kind: 'string' },
};

function coerce(name: string, kind: string, raw: string): unknown {
  switch (kind) {
    case 'list':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    case 'int':
    case 'number': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n) || (kind === 'int' && !Number.isInteger(n))) {
        throw new ConfigError(`must be ${kind === 'int' ? 'an integer' : 'a number'}, got ${JSON.stringify(raw)}`, name);
      }
      return n;
    }
    case 'bool':
      if (/^(1|true|yes|on)$/i.test(raw)) return true;
      if (/^(0|false|no|off)$/i.test(raw)) return false;
      throw new ConfigError(`must be true or false, got ${JSON.stringify(raw)}`, name);
    default:
      return raw;
  }
}

function setPath(target: Plain, path: string, value: unknown): void {
  const parts = path.split('.');
  let node = target;
  for (const p of parts.slice(0, -1)) {
    const next = node[p];
    if (next === undefined || next === null || typeof next !== 'object') node[p] = {};
    node = node[p] as Plain;
  }
  node[parts[parts.length - 1]!] = value;
}

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

export function envLayer(env: NodeJS.ProcessEnv): Plain {
  const layer: Plain = {};
  for (const [name, { path, kind }] of Object.entries(ENV_MAP)) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    setPath(layer, path, coerce(name, kind, raw));
  }
  return layer;
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
