import { ConfigError } from '../errors.js';

// The CDP_* environment variables (DESIGN.md section 6): which configuration path each one sets,
// and how its text becomes a value. The layer sits between the file and the flags (config.ts).

type Plain = Record<string, unknown>;

/** A comma-separated value as a list: blanks around items and empty items dropped (also the CLI's list flags). */
export function splitList(raw: string): string[] {
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

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
      return splitList(raw);
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

/** Sets `value` at a dotted path ('source.tls.mode'), creating the objects on the way. */
export function setPath(target: Plain, path: string, value: unknown): void {
  const parts = path.split('.');
  let node = target;
  for (const p of parts.slice(0, -1)) {
    const next = node[p];
    if (next === undefined || next === null || typeof next !== 'object') node[p] = {};
    node = node[p] as Plain;
  }
  node[parts[parts.length - 1]!] = value;
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
