import { connect as tcpConnect } from 'node:net';
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import type { Config } from '../config/config.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { redactUrl } from '../util/redact.js';
import { pgConnection } from '../pg/tls.js';
import { KafkaConnection } from '../kafka/connection.js';
import { kafkaClientOptions, kafkaTlsEnabled } from '../kafka/security.js';

// Fail fast on what cannot fix itself (issue 14). Each command's FIRST contact with the source,
// Kafka and S3 is one short probe per component, in parallel, bounded by PROBE_TIMEOUT_MS. A probe
// refused (connection refused, no route, unknown host) or rejected (authentication, missing
// bucket, no credentials) is a configuration problem: exit 2 with one line naming the setting.
// A probe that times out or meets a server error (S3 503, PostgreSQL starting up) says nothing
// certain, and the command goes on as before: what fails after this point (a broker restart, an S3
// outage, a Postgres restart) is retried with bounded, logged backoff. A process that has worked
// once never exits 2 on a connection failure: only start-up is judged this way.

/** Per probe; the probes run in parallel, so start-up waits at most this long for all of them. */
export const PROBE_TIMEOUT_MS = 5_000;

export type Component = 'source' | 'kafka' | 's3';

/**
 * `config`: cannot fix itself (auth, unknown host, missing bucket, no credentials).
 * `refused`: nothing answers at that address (refused, no route): wrong address or stopped server.
 * `unknown`: a timeout or a server-side error; retried by the commands.
 */
export type ProbeResult = { ok: true } | { ok: false; kind: 'config' | 'refused' | 'unknown'; message: string };

const REFUSED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'EADDRNOTAVAIL']);
const UNKNOWN_HOST = new Set(['ENOTFOUND']);

/** The system error code of an error, looking into AggregateError (happy eyeballs) and causes. */
function sysCode(err: unknown, depth = 0): string | undefined {
  if (!err || typeof err !== 'object' || depth > 4) return undefined;
  const e = err as { code?: unknown; errors?: unknown[]; cause?: unknown; originalError?: unknown; message?: unknown };
  if (typeof e.code === 'string' && /^E[A-Z_]+$/.test(e.code)) return e.code;
  for (const inner of e.errors ?? []) {
    const c = sysCode(inner, depth + 1);
    if (c) return c;
  }
  const c = sysCode(e.cause, depth + 1) ?? sysCode(e.originalError, depth + 1);
  if (c) return c;
  const m = /\b(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL)\b/.exec(String(e.message ?? ''));
  return m?.[1];
}

/** Node's certificate-check codes (tls.TLSSocket#authorizationError, docs "x509 certificate error codes"). */
const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|SELF_SIGNED_|DEPTH_ZERO_|HOSTNAME_MISMATCH|INVALID_CA|ERR_OSSL_)/;

/** Why a connection failed in TLS, or undefined when it did not. */
export function tlsProblem(err: unknown): string | undefined {
  const e = err as { code?: unknown; message?: unknown };
  const msg = String(e?.message ?? '');
  if (typeof e?.code === 'string' && TLS_CODES.test(e.code)) return `${e.code}: ${msg}`;
  if (/server does not support SSL/i.test(msg)) return 'the server does not support TLS (ssl = off)';
  return undefined;
}

function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((resolve) => (timer = setTimeout(() => resolve(onTimeout()), ms)))]).finally(() => clearTimeout(timer));
}

export async function probeSource(cfg: Config, timeoutMs = PROBE_TIMEOUT_MS): Promise<ProbeResult> {
  const where = redactUrl(cfg.source.url);
  const client = new pg.Client({ ...pgConnection(cfg.source.url, cfg.source.tls), connectionTimeoutMillis: timeoutMs });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { ok: true };
  } catch (raw) {
    const err = raw as Error & { code?: string };
    const code = sysCode(err);
    const fix = 'check source.url / CDP_SOURCE_URL';
    // TLS (source.tls, pg/tls.ts): a certificate the configured CA does not vouch for, a name that
    // does not match, a server without TLS, or a client certificate the server refuses.
    const tlsWhy = tlsProblem(err);
    if (tlsWhy)
      return {
        ok: false,
        kind: 'config',
        message: `source ${where}: TLS failed (${tlsWhy}): check source.tls (rootCertFile, mode; CDP_SOURCE_SSLROOTCERT, CDP_SOURCE_SSLMODE) against the server's certificate`,
      };
    if ((err.code === '28000' || err.code === '28P01') && /certificate/i.test(err.message)) {
      return {
        ok: false,
        kind: 'config',
        message: `source ${where}: the server refused the client certificate (${err.message}): check source.tls.certFile / keyFile (CDP_SOURCE_SSLCERT, CDP_SOURCE_SSLKEY): the certificate's CN must be the role name, signed by the CA of the server's ssl_ca_file`,
      };
    }
    if (err.code === '28P01' || err.code === '28000')
      return {
        ok: false,
        kind: 'config',
        message: `source ${where}: authentication failed (${err.message}): ${fix} (user, password, PGPASSWORD or ~/.pgpass) and pg_hba.conf`,
      };
    if (err.code === '3D000') return { ok: false, kind: 'config', message: `source ${where}: ${err.message}: ${fix}` };
    if (code && UNKNOWN_HOST.has(code)) return { ok: false, kind: 'config', message: `source ${where}: unknown host (${code}): ${fix}` };
    if (code && REFUSED.has(code))
      return { ok: false, kind: 'refused', message: `source ${where}: connection refused (${code}): ${fix} (host, port) and that PostgreSQL is up` };
    return { ok: false, kind: 'unknown', message: `source ${where}: ${toError(raw).message}` };
  } finally {
    await client.end().catch(() => {});
  }
}

function probeBroker(broker: string, timeoutMs: number): Promise<ProbeResult> {
  const i = broker.lastIndexOf(':');
  const host = i > 0 ? broker.slice(0, i).replace(/^\[|\]$/g, '') : broker;
  const port = i > 0 ? Number(broker.slice(i + 1)) : NaN;
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    return Promise.resolve({ ok: false, kind: 'config', message: `Kafka broker ${JSON.stringify(broker)} is not host:port` });
  }
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port });
    const done = (r: ProbeResult) => {
      socket.destroy();
      resolve(r);
    };
    socket.setTimeout(timeoutMs, () => done({ ok: false, kind: 'unknown', message: `${broker}: no answer within ${timeoutMs} ms` }));
    socket.once('connect', () => done({ ok: true }));
    socket.once('error', (err) => {
      const code = sysCode(err);
      if (code && UNKNOWN_HOST.has(code)) done({ ok: false, kind: 'config', message: `${broker}: unknown host (${code})` });
      else if (code && REFUSED.has(code)) done({ ok: false, kind: 'refused', message: `${broker}: connection refused (${code})` });
      else done({ ok: false, kind: 'unknown', message: `${broker}: ${err.message}` });
    });
  });
}

/**
 * A secured broker (kafka.tls / kafka.sasl): the whole handshake the clients will do - TLS with
 * the configured CA and client certificate, ApiVersions, SASL - so a wrong password, an untrusted
 * certificate or a missing client certificate is a one-line exit 2 in seconds, not retries.
 */
async function probeSecuredBroker(cfg: Config, broker: string, timeoutMs: number): Promise<ProbeResult> {
  const i = broker.lastIndexOf(':');
  const { connection } = kafkaClientOptions(cfg, 'probe');
  try {
    const conn = await KafkaConnection.open({
      ...connection,
      host: broker.slice(0, i),
      port: Number(broker.slice(i + 1)),
      connectTimeoutMs: timeoutMs,
      requestTimeoutMs: timeoutMs,
    });
    conn.close();
    return { ok: true };
  } catch (raw) {
    const err = raw instanceof CdpError ? raw : toError(raw);
    const code = sysCode(err);
    if (err instanceof CdpError && !err.canRetry) return { ok: false, kind: 'config', message: err.message };
    if (code && UNKNOWN_HOST.has(code)) return { ok: false, kind: 'config', message: `${broker}: unknown host (${code})` };
    if (code && REFUSED.has(code)) return { ok: false, kind: 'refused', message: `${broker}: connection refused (${code})` };
    return { ok: false, kind: 'unknown', message: err.message };
  }
}

/** Kafka: a TCP connection (or, when secured, a full handshake) to each bootstrap broker; it fails only when no broker accepts one. */
export async function probeKafka(cfg: Config, timeoutMs = PROBE_TIMEOUT_MS): Promise<ProbeResult> {
  const secured = kafkaTlsEnabled(cfg) || cfg.kafka.sasl !== undefined;
  const results = await Promise.all(cfg.kafka.brokers.map((b) => (secured ? probeSecuredBroker(cfg, b, timeoutMs) : probeBroker(b, timeoutMs))));
  if (results.some((r) => r.ok)) return { ok: true };
  const failures = results as Array<Extract<ProbeResult, { ok: false }>>;
  const kind = failures.some((r) => r.kind === 'unknown') ? 'unknown' : failures.some((r) => r.kind === 'refused') ? 'refused' : 'config';
  // Credentials and certificates: the messages name the settings to check themselves.
  if (secured && kind === 'config') return { ok: false, kind, message: [...new Set(failures.map((r) => r.message))].join('; ') };
  return {
    ok: false,
    kind,
    message: `no Kafka broker reachable (${failures.map((r) => r.message).join('; ')}): check kafka.brokers / CDP_KAFKA_BROKERS and that Kafka is up`,
  };
}

/** S3: one HeadBucket, one attempt (the SDK's own retries would hide a refused endpoint for seconds). */
export async function probeS3(cfg: Config, timeoutMs = PROBE_TIMEOUT_MS): Promise<ProbeResult> {
  const client = new S3Client({
    region: cfg.s3.region,
    endpoint: cfg.s3.endpoint,
    forcePathStyle: cfg.s3.forcePathStyle || cfg.s3.endpoint !== undefined,
    maxAttempts: 1,
  });
  const where = `s3://${cfg.s3.bucket} at ${cfg.s3.endpoint ?? 'AWS'}`;
  try {
    await client.send(new HeadBucketCommand({ Bucket: cfg.s3.bucket }), { abortSignal: AbortSignal.timeout(timeoutMs) });
    return { ok: true };
  } catch (raw) {
    const err = raw as Error & { $metadata?: { httpStatusCode?: number } };
    const status = err.$metadata?.httpStatusCode;
    const code = sysCode(err);
    if (status === 404 || err.name === 'NoSuchBucket' || err.name === 'NotFound') {
      return {
        ok: false,
        kind: 'config',
        message: `bucket ${cfg.s3.bucket} does not exist at ${cfg.s3.endpoint ?? 'AWS'}: set s3.bucket / CDP_S3_BUCKET (and s3.endpoint / CDP_S3_ENDPOINT) to where the archive is, or create the bucket and run cdp setup`,
      };
    }
    if (
      status === 403 ||
      status === 401 ||
      err.name === 'CredentialsProviderError' ||
      err.name === 'InvalidAccessKeyId' ||
      err.name === 'SignatureDoesNotMatch'
    ) {
      return {
        ok: false,
        kind: 'config',
        message: `${where}: access denied (${err.name}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the AWS profile) and the bucket policy`,
      };
    }
    if (code && UNKNOWN_HOST.has(code)) return { ok: false, kind: 'config', message: `${where}: unknown host (${code}): check s3.endpoint / CDP_S3_ENDPOINT` };
    if (code && REFUSED.has(code))
      return { ok: false, kind: 'refused', message: `${where}: connection refused (${code}): check s3.endpoint / CDP_S3_ENDPOINT and that the server is up` };
    return { ok: false, kind: 'unknown', message: `${where}: ${err.name}${err.message ? ` (${err.message})` : ''}` };
  } finally {
    client.destroy();
  }
}

const PROBES: Record<Component, (cfg: Config, timeoutMs: number) => Promise<ProbeResult>> = { source: probeSource, kafka: probeKafka, s3: probeS3 };

/** Probes components in parallel; each answer within timeoutMs (a late one counts as `unknown`). */
export async function probe(cfg: Config, components: Component[], timeoutMs = PROBE_TIMEOUT_MS): Promise<Map<Component, ProbeResult>> {
  const results = await Promise.all(
    components.map(async (c) => {
      const r = await withTimeout(
        PROBES[c](cfg, timeoutMs).catch((err: unknown): ProbeResult => ({ ok: false, kind: 'unknown', message: `${c}: ${toError(err).message}` })),
        timeoutMs + 1_000,
        (): ProbeResult => ({ ok: false, kind: 'unknown', message: `${c}: no answer within ${timeoutMs} ms` }),
      );
      return [c, r] as const;
    }),
  );
  return new Map(results);
}

/**
 * A command's start: throws a USAGE error (exit 2, one line) when a component it needs is
 * refused or rejects it; goes on when all answer, or when one only timed out (retried later).
 */
export async function preflight(cfg: Config, components: Component[]): Promise<void> {
  // Unreadable certificate or key files are configuration errors of their own (exit 2, naming the field).
  if (components.includes('source')) pgConnection(cfg.source.url, cfg.source.tls);
  if (components.includes('kafka')) kafkaClientOptions(cfg);
  const results = await probe(cfg, components);
  const bad: string[] = [];
  for (const c of components) {
    const r = results.get(c)!;
    if (!r.ok && (r.kind === 'config' || r.kind === 'refused')) bad.push(r.message);
  }
  if (bad.length > 0) throw new CdpError(ErrorCodes.USAGE, bad.join('; '), { details: { preflight: true } });
}
