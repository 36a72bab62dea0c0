import { createHash } from 'node:crypto';
import { GetObjectCommand, HeadBucketCommand, ListObjectsV2Command, PutObjectCommand, S3Client, type PutObjectCommandInput } from '@aws-sdk/client-s3';
import type { Config } from '../config/config.js';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import type { Logger } from '../util/log.js';
import { withRetry } from '../util/retry.js';

// The S3 edge. Every other module goes through these few calls, so that retries, checksums,
// write-once semantics and server-side encryption headers are decided in one place.

export interface Store {
  client: S3Client;
  bucket: string;
  log: Logger;
  signal?: AbortSignal;
  sse?: Pick<PutObjectCommandInput, 'ServerSideEncryption' | 'SSEKMSKeyId'>;
  /** Give up a single operation after this long; undefined = keep retrying (daemons). */
  maxElapsedMs?: number;
}

export function createS3Client(cfg: Config): S3Client {
  return new S3Client({
    region: cfg.s3.region,
    endpoint: cfg.s3.endpoint,
    forcePathStyle: cfg.s3.forcePathStyle || cfg.s3.endpoint !== undefined,
    // Our own loop (withRetry) waits out long outages; the SDK retries quick blips.
    maxAttempts: 3,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

export function createStore(cfg: Config, log: Logger, opts: { signal?: AbortSignal; maxElapsedMs?: number } = {}): Store {
  return {
    client: createS3Client(cfg),
    bucket: cfg.s3.bucket,
    log,
    signal: opts.signal,
    maxElapsedMs: opts.maxElapsedMs,
    sse: cfg.s3.serverSideEncryption ? { ServerSideEncryption: cfg.s3.serverSideEncryption, SSEKMSKeyId: cfg.s3.kmsKeyId } : undefined,
  };
}

interface AwsLikeError {
  name?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
  message?: string;
}

export function s3Status(err: unknown): number | undefined {
  return (err as AwsLikeError)?.$metadata?.httpStatusCode;
}

export function isNotFound(err: unknown): boolean {
  const e = err as AwsLikeError;
  return s3Status(err) === 404 || e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.name === 'NoSuchBucket';
}

function isPermanent(err: unknown): boolean {
  const status = s3Status(err);
  const name = (err as AwsLikeError)?.name;
  if (status === 412 || status === 404) return true;
  if (name === 'AccessDenied' || name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch' || name === 'NoSuchBucket') return true;
  if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429) return true;
  return false;
}

export function s3Error(what: string, err: unknown): CdpError {
  const e = err as AwsLikeError;
  return new CdpError(ErrorCodes.S3, `${what}: ${e?.name ?? 'error'}${e?.message ? ` (${e.message})` : ''}`, {
    cause: err,
    canRetry: !isPermanent(err),
    details: { s3Code: e?.name ?? e?.Code, httpStatus: s3Status(err) },
  });
}

async function retrying<T>(store: Store, what: string, fn: () => Promise<T>): Promise<T> {
  return withRetry(
    async () => {
      try {
        return await fn();
      } catch (err) {
        throw err instanceof CdpError ? err : s3Error(what, err);
      }
    },
    { what, log: store.log, signal: store.signal, maxElapsedMs: store.maxElapsedMs },
  );
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Writes an object once (G5: write-once, compatible with Object Lock). `If-None-Match: *` makes the
 * server refuse an existing key; then the existing object must be byte-identical (same SHA-256),
 * which is what a deterministic retry after a crash produces. Anything else is an integrity problem.
 */
export async function putOnce(
  store: Store,
  key: string,
  body: Uint8Array,
  opts: { contentType?: string; metadata?: Record<string, string> } = {},
): Promise<'created' | 'exists'> {
  const digest = sha256(body);
  const checksum = Buffer.from(digest, 'hex').toString('base64');
  return retrying(store, `put s3://${store.bucket}/${key}`, async () => {
    try {
      await store.client.send(
        new PutObjectCommand({
          Bucket: store.bucket,
          Key: key,
          Body: body,
          IfNoneMatch: '*',
          ChecksumSHA256: checksum,
          ContentType: opts.contentType ?? 'application/octet-stream',
          Metadata: { ...opts.metadata, 'cdp-sha256': digest },
          ...store.sse,
        }),
        { abortSignal: store.signal },
      );
      return 'created';
    } catch (err) {
      if (s3Status(err) !== 412 && (err as AwsLikeError)?.name !== 'PreconditionFailed') throw err;
      const existing = await getObject(store, key);
      if (sha256(existing) !== digest) {
        throw new CdpError(
          ErrorCodes.INTEGRITY,
          `s3://${store.bucket}/${key} already exists with different content; objects are write-once, refusing to overwrite`,
          { details: { key } },
        );
      }
      return 'exists';
    }
  });
}

/** Overwrites a small mutable pointer object (status, cursors). Never used for segments or bases. */
export async function putMutable(store: Store, key: string, body: Uint8Array, contentType = 'application/json'): Promise<void> {
  await retrying(store, `put s3://${store.bucket}/${key}`, () =>
    store.client.send(new PutObjectCommand({ Bucket: store.bucket, Key: key, Body: body, ContentType: contentType, ...store.sse }), {
      abortSignal: store.signal,
    }),
  );
}

export async function getObject(store: Store, key: string): Promise<Buffer> {
  return retrying(store, `get s3://${store.bucket}/${key}`, async () => {
    const out = await store.client.send(new GetObjectCommand({ Bucket: store.bucket, Key: key }), { abortSignal: store.signal });
    return Buffer.from(await out.Body!.transformToByteArray());
  });
}

/** Like getObject, but undefined when the key does not exist. */
export async function getObjectIfExists(store: Store, key: string): Promise<Buffer | undefined> {
  try {
    return await getObject(store, key);
  } catch (err) {
    if (isNotFound((err as CdpError).cause ?? err)) return undefined;
    throw err;
  }
}

export interface ListedObject {
  key: string;
  size: number;
  /** Milliseconds since the epoch, when the server says. */
  lastModified?: number;
}

/** Lists keys under a prefix in lexicographic order, starting after `startAfter` (S3 ListObjectsV2). */
export async function* listObjects(store: Store, prefix: string, startAfter?: string): AsyncGenerator<ListedObject> {
  let token: string | undefined;
  do {
    const page = await retrying(store, `list s3://${store.bucket}/${prefix}`, () =>
      store.client.send(
        new ListObjectsV2Command({ Bucket: store.bucket, Prefix: prefix, StartAfter: token ? undefined : startAfter, ContinuationToken: token }),
        { abortSignal: store.signal },
      ),
    );
    for (const o of page.Contents ?? []) yield { key: o.Key!, size: o.Size ?? 0, lastModified: o.LastModified?.getTime() };
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

/** Checks that the bucket exists and is reachable; a clear error otherwise. */
/**
 * When an expected object is missing: a USAGE error saying the bucket itself does not exist (and
 * how to fix it), or undefined when the bucket is there. Other failures of the check are thrown.
 */
export async function missingBucketError(store: Store): Promise<CdpError | undefined> {
  try {
    await store.client.send(new HeadBucketCommand({ Bucket: store.bucket }), { abortSignal: store.signal });
    return undefined;
  } catch (err) {
    if (s3Status(err) !== 404) throw s3Error(`head bucket ${store.bucket}`, err);
    return new CdpError(
      ErrorCodes.USAGE,
      `bucket ${store.bucket} does not exist on this S3 endpoint: set s3.bucket / CDP_S3_BUCKET (and s3.endpoint / CDP_S3_ENDPOINT) to where the archive is, or create the bucket and run cdp setup`,
      { cause: err, details: { bucket: store.bucket } },
    );
  }
}

export async function checkBucket(store: Store): Promise<void> {
  try {
    await store.client.send(new HeadBucketCommand({ Bucket: store.bucket }), { abortSignal: store.signal });
  } catch (err) {
    const status = s3Status(err);
    const hint =
      status === 404
        ? 'create it, or set s3.bucket / CDP_S3_BUCKET'
        : status === 403
          ? 'check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy'
          : 'check s3.endpoint / CDP_S3_ENDPOINT and that the server is up';
    throw new CdpError(ErrorCodes.S3, `bucket ${store.bucket} is not usable (${(err as AwsLikeError)?.name ?? toError(err).message}): ${hint}`, {
      cause: err,
      details: { httpStatus: status },
    });
  }
}
