import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { sealStream, type Keyring } from '../archive/crypto.js';
import { CdpError, ErrorCodes } from '../errors.js';
import type { childConnection } from '../pg/child-conn.js';
import { MULTIPART_PART_SIZE, uploadMultipart } from '../s3/multipart.js';
import type { Store } from '../s3/client.js';
import { hashMeter } from '../util/hash-meter.js';

// pg_dump's output streamed to S3 (basebackup.ts): from pg_dump's stdout through a SHA-256 (and,
// with a key, the envelope: crypto.ts) into a multipart upload (8 MiB parts, each checksummed by
// the server with x-amz-checksum-sha256), so that memory stays at queueSize * partSize whatever
// the database size. The caller writes the manifest after it, last.

export interface DumpToS3 {
  store: Store;
  /** The dump's object key; the envelope is sealed for it. */
  key: string;
  keyring: Keyring | undefined;
  pgDumpPath: string;
  args: string[];
  /** The connection's environment for pg_dump (password, TLS files), cleaned up when it exits. */
  conn: ReturnType<typeof childConnection>;
  signal: AbortSignal;
  /** Appended to the error when pg_dump fails: what is left behind. */
  incomplete: string;
}

/** Runs pg_dump into the upload; resolves with the stored object's size and SHA-256 once both ended well. */
export async function dumpToS3(d: DumpToS3): Promise<{ size: number; sha256: string }> {
  const child = spawn(d.pgDumpPath, d.args, { stdio: ['ignore', 'pipe', 'pipe'], env: d.conn.env });
  child.on('close', () => d.conn.cleanup?.());
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    stderr += b.toString();
    if (stderr.length > 64_000) stderr = stderr.slice(-32_000);
  });
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', (err) =>
      reject(
        new CdpError(ErrorCodes.SOURCE_NOT_READY, `cannot run ${d.pgDumpPath}: ${err.message}; install the PostgreSQL client or set basebackup.pgDumpPath`, {
          cause: err,
        }),
      ),
    );
    child.on('close', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
  });
  const onAbort = () => child.kill('SIGTERM');
  d.signal.addEventListener('abort', onAbort, { once: true });

  const meter = hashMeter();
  // Sealed for its object key in this archive (envelope v2, crypto.ts).
  const seal = d.keyring ? sealStream(d.keyring, d.key) : undefined;
  const body = new PassThrough({ highWaterMark: MULTIPART_PART_SIZE });
  (seal ? child.stdout.pipe(seal).pipe(meter.stream) : child.stdout.pipe(meter.stream)).pipe(body);
  const upload = uploadStream(d.store, d.key, body);
  let code: number;
  try {
    [code] = await Promise.all([exited, upload]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    d.signal.removeEventListener('abort', onAbort);
  }
  if (d.signal.aborted) throw d.signal.reason ?? new CdpError(ErrorCodes.SHUTDOWN, 'base backup aborted');
  if (code !== 0) {
    throw new CdpError(ErrorCodes.PG_ERROR, `pg_dump failed (exit ${code}): ${stderr.trim().split('\n').slice(-5).join(' | ')}; ${d.incomplete}`);
  }
  return { size: meter.size(), sha256: meter.digest() };
}

async function uploadStream(store: Store, key: string, body: PassThrough): Promise<void> {
  try {
    await uploadMultipart(store, key, body, { contentType: 'application/octet-stream', metadata: { 'cdp-kind': 'base' } });
  } catch (err) {
    body.resume();
    throw err;
  }
}
