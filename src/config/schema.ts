import { z } from 'zod';

// The configuration's shape (DESIGN.md section 6): every key, its type, bounds and default. Unknown
// keys are rejected. Loading and merging the layers is src/config/config.ts; the CDP_* variables
// are src/config/env.ts.

/** libpq's sslmode words (docs 34.19, table 34.1) that the engine gives one meaning (src/pg/tls.ts). */
export const SSL_MODES = ['disable', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

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
       * Net effect per key (restore/coalesce.ts). Above 20,000 (the target transaction's usual
       * size), a coalescing buffer that is nearly all inserts (a load) is kept past its 10,000-row
       * window, so that the load's later updates and deletes fold into its rows
       * (restore/row-writer.ts RowWriter.retaining): the target transaction then spans source
       * transactions up to coalesceMaxChanges changes (and 30 s; then it commits at the next
       * source commit), and the buffer holds up to coalesceMaxBytes estimated bytes of rows (then
       * it is written out; never more than an eighth of node's heap limit: the heap reaches about
       * twice the estimate while a kept load is written out, four times for text beyond
       * Latin-1). Off by default: the target idles while a load is held, so a load nothing later
       * touches restores slower (README, Limits).
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
