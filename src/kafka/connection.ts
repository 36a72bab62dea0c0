import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions as TlsOptions } from 'node:tls';
import { CdpError, ErrorCodes, toError } from '../errors.js';
import { ApiVersions } from './protocol/api-versions.js';
import { requestPrefix, RESPONSE_HEADER_V0 } from './protocol/header.js';
import { kafkaErrorName } from './protocol/errors.js';
import { Reader, type Api } from './protocol/primitives.js';
import { SaslAuthenticate } from './protocol/sasl-authenticate.js';
import { SaslHandshake } from './protocol/sasl-handshake.js';
import { plainMessage, ScramClient, type SaslCredentials } from './sasl.js';

// One connection to one broker, for the requests the engine encodes itself (protocol/): a TCP or
// TLS socket, size-prefixed frames (protocol guide, "Common Request and Response Structure"),
// correlation ids matching answers to requests, a timeout per request, then ApiVersions and, when
// configured, the SASL exchange (guide, "SASL Authentication Sequence": SaslHandshake v1, then
// SaslAuthenticate requests) before anything else is sent.
//
// Errors are CdpErrors with code CDP_KAFKA: `canRetry` false for what no retry fixes (wrong
// password, unsupported mechanism, certificate not trusted, no client certificate), true for a
// refused, reset or silent connection.

export interface ConnectionOptions {
  host: string;
  port: number;
  clientId: string;
  /** Present = TLS (node:tls options: ca, cert, key, servername, rejectUnauthorized). */
  tls?: TlsOptions;
  sasl?: SaslCredentials;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
}

interface Pending {
  api: Api<unknown, unknown>;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** TLS verification failures (node:tls error codes): a configuration problem, never retried. */
const TLS_TRUST = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME|HOSTNAME|DEPTH_ZERO/;

export class KafkaConnection {
  private correlationId = 0;
  private readonly pending = new Map<number, Pending>();
  private readonly frames = new FrameReader();
  private closedError: Error | null = null;
  /** The broker's version range per API key (ApiVersions), known once open() returns. */
  apis = new Map<number, { min: number; max: number }>();
  /** When the SASL session expires (KIP-368), ms since the epoch; 0 = never. */
  sessionExpiresAt = 0;

  private constructor(
    private readonly socket: Socket,
    readonly opts: ConnectionOptions,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.shut(this.describe(err)));
    socket.on('close', () => this.shut(new CdpError(ErrorCodes.KAFKA, `Kafka ${this.where}: connection closed by the broker`, { canRetry: true })));
  }

  get where(): string {
    return `${this.opts.host}:${this.opts.port}`;
  }

  get closed(): boolean {
    return this.closedError !== null;
  }

  /** Connects, negotiates versions and authenticates; the returned connection is ready for requests. */
  static async open(opts: ConnectionOptions): Promise<KafkaConnection> {
    const socket = await connectSocket(opts);
    const conn = new KafkaConnection(socket, opts);
    try {
      const versions = await conn.send(ApiVersions, undefined);
      if (versions.errorCode !== 0)
        throw new CdpError(ErrorCodes.KAFKA, `Kafka ${conn.where}: ApiVersions failed (${kafkaErrorName(versions.errorCode)})`, { canRetry: true });
      conn.apis = versions.apis;
      if (opts.sasl) await conn.authenticate(opts.sasl);
      return conn;
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  /** Sends one request and resolves with its decoded answer. */
  send<Req, Res>(api: Api<Req, Res>, req: Req, timeoutMs = this.opts.requestTimeoutMs ?? 30_000): Promise<Res> {
    if (this.closedError) return Promise.reject(this.closedError);
    const range = this.apis.get(api.apiKey);
    if (this.apis.size > 0 && (!range || api.version < range.min || api.version > range.max)) {
      return Promise.reject(
        new CdpError(
          ErrorCodes.UNSUPPORTED,
          `Kafka ${this.where} does not accept ${api.name} v${api.version} (${range ? `it accepts v${range.min}-v${range.max}` : 'not offered at all'}): the engine needs Kafka 2.1 or newer`,
        ),
      );
    }
    const body = api.encode(req);
    const id = this.correlationId;
    this.correlationId = (this.correlationId + 1) & 0x7fffffff;
    return new Promise<Res>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        const e = new CdpError(ErrorCodes.KAFKA, `Kafka ${this.where}: no answer to ${api.name} within ${timeoutMs} ms`, { canRetry: true });
        reject(e);
        // A late answer would be matched to nothing; a connection that lost a request is not trusted again.
        this.shut(e);
      }, timeoutMs);
      this.pending.set(id, { api: api as Api<unknown, unknown>, resolve: resolve as (v: unknown) => void, reject, timer });
      const prefix = requestPrefix(api.apiKey, api.version, id, this.opts.clientId, body.length);
      // Two writes, one segment: the body (a produce request can be megabytes) is not copied again.
      this.socket.cork();
      this.socket.write(prefix);
      this.socket.write(body);
      process.nextTick(() => this.socket.uncork());
    });
  }

  close(): void {
    this.shut(new CdpError(ErrorCodes.KAFKA, `Kafka ${this.where}: connection closed`, { canRetry: true }));
  }

  private shut(err: Error): void {
    if (!this.closedError) this.closedError = err;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(this.closedError);
    }
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let frames: Buffer[];
    try {
      frames = this.frames.push(chunk);
    } catch (err) {
      const e = err instanceof CdpError ? err : new CdpError(ErrorCodes.PROTOCOL, toError(err).message, { cause: err });
      return this.shut(new CdpError(e.code, `Kafka ${this.where}: ${e.message}`, { cause: e }));
    }
    for (const frame of frames) this.onFrame(frame);
  }

  private onFrame(frame: Buffer): void {
    if (frame.length < RESPONSE_HEADER_V0) return this.shut(new CdpError(ErrorCodes.PROTOCOL, `Kafka ${this.where}: a response shorter than its header`));
    const id = frame.readInt32BE(0);
    const p = this.pending.get(id);
    if (!p) return this.shut(new CdpError(ErrorCodes.PROTOCOL, `Kafka ${this.where}: an answer to no request (correlation id ${id})`));
    this.pending.delete(id);
    clearTimeout(p.timer);
    try {
      p.resolve(p.api.decode(new Reader(frame.subarray(RESPONSE_HEADER_V0))));
    } catch (err) {
      p.reject(toError(err));
    }
  }

  private async authenticate(sasl: SaslCredentials): Promise<void> {
    const who = `user ${JSON.stringify(sasl.username)}, ${sasl.mechanism}`;
    const hs = await this.send(SaslHandshake, sasl.mechanism);
    if (hs.errorCode !== 0) {
      throw new CdpError(
        ErrorCodes.KAFKA,
        `Kafka ${this.where}: SASL mechanism ${sasl.mechanism} is not enabled on this listener (${kafkaErrorName(hs.errorCode)}; it offers ${hs.mechanisms.join(', ') || 'none'}): check kafka.sasl.mechanism and kafka.brokers`,
        { canRetry: false, details: { kafkaError: kafkaErrorName(hs.errorCode) } },
      );
    }
    const step = async (bytes: Buffer): Promise<Buffer> => {
      const r = await this.send(SaslAuthenticate, bytes);
      if (r.errorCode !== 0) {
        throw new CdpError(
          ErrorCodes.KAFKA,
          `Kafka ${this.where}: SASL authentication failed (${who}): ${r.errorMessage ?? kafkaErrorName(r.errorCode)}; check kafka.sasl.username and the password (kafka.sasl.passwordFile / passwordEnv)`,
          { canRetry: false, details: { kafkaError: kafkaErrorName(r.errorCode) } },
        );
      }
      if (r.sessionLifetimeMs > 0n) this.sessionExpiresAt = Date.now() + Number(r.sessionLifetimeMs);
      return r.authBytes;
    };
    if (sasl.mechanism === 'PLAIN') {
      await step(plainMessage(sasl.username, sasl.password));
      return;
    }
    const scram = new ScramClient(sasl.mechanism, sasl.username, sasl.password);
    const serverFirst = await step(scram.clientFirst());
    const serverFinal = await step(scram.clientFinal(serverFirst));
    scram.verifyServerFinal(serverFinal);
  }

  /** A socket error as one line that says what to check. */
  private describe(err: Error & { code?: string }): CdpError {
    return describeSocketError(err, this.where, this.opts.tls !== undefined);
  }
}

export function describeSocketError(err: Error & { code?: string }, where: string, tls: boolean): CdpError {
  const code = err.code ?? '';
  // One line: OpenSSL messages carry the library's file and line after a newline.
  const text = err.message.split('\n')[0]!.replace(/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:[^:]*:/, '');
  // Alerts the broker sent (it refused us) before failures of our own verification (we refused it).
  if (tls && /CERTIFICATE_REQUIRED|ALERT_BAD_CERTIFICATE|ALERT_UNKNOWN_CA|HANDSHAKE_FAILURE/i.test(`${code} ${err.message}`)) {
    return new CdpError(
      ErrorCodes.KAFKA,
      `Kafka ${where}: the broker refused the TLS client (${code || err.message}): it wants a client certificate its CA signed (kafka.tls.certFile, kafka.tls.keyFile)`,
      {
        cause: err,
        canRetry: false,
        details: { tls: code },
      },
    );
  }
  if (tls && TLS_TRUST.test(code)) {
    return new CdpError(
      ErrorCodes.KAFKA,
      `Kafka ${where}: the broker's TLS certificate is not trusted (${code}: ${text}): check kafka.tls.caFile and that kafka.brokers names the host the certificate is for`,
      {
        cause: err,
        canRetry: false,
        details: { tls: code },
      },
    );
  }
  if (tls && /WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG/i.test(`${code} ${err.message}`)) {
    return new CdpError(
      ErrorCodes.KAFKA,
      `Kafka ${where}: this listener does not speak TLS (${code}): remove kafka.tls or point kafka.brokers at the TLS listener`,
      { cause: err, canRetry: false, details: { tls: code } },
    );
  }
  return new CdpError(ErrorCodes.KAFKA, `Kafka ${where}: ${text}`, { cause: err, canRetry: true, details: code ? { errno: code } : {} });
}

/**
 * Splits a byte stream into size-prefixed frames (INT32 size, then the frame). A partial frame
 * waits for more bytes; whole frames in one chunk are returned without copying.
 */
/**
 * The largest response frame accepted: the broker's own default cap on a request
 * (socket.request.max.bytes, 100 MiB) is far above any response this client asks for (produce,
 * metadata). A larger or negative size is a broken or hostile peer, not something to buffer.
 */
export const MAX_FRAME_BYTES = 100 * 1024 * 1024;

/**
 * Splits the byte stream into size-prefixed frames ("Size => INT32" before every response).
 * Chunks are kept in a list until a whole frame is there, so a large frame costs one copy, not
 * one per chunk. Throws CdpError(PROTOCOL) on a size below 0 or above MAX_FRAME_BYTES.
 */
export class FrameReader {
  private parts: Buffer[] = [];
  private have = 0;
  private need = -1;

  push(chunk: Buffer): Buffer[] {
    if (chunk.length > 0) {
      this.parts.push(chunk);
      this.have += chunk.length;
    }
    const out: Buffer[] = [];
    for (;;) {
      if (this.need < 0) {
        if (this.have < 4) break;
        const size = this.take(4).readInt32BE(0);
        if (size < 0 || size > MAX_FRAME_BYTES) {
          throw new CdpError(
            ErrorCodes.PROTOCOL,
            `a response frame of ${size} bytes (allowed 0 to ${MAX_FRAME_BYTES}): the peer is not a Kafka broker speaking this protocol, or the stream is corrupt`,
          );
        }
        this.need = size;
      }
      if (this.have < this.need) break;
      out.push(this.take(this.need));
      this.need = -1;
    }
    return out;
  }

  /** The next n buffered bytes (n <= have). The rest of a partly used chunk is copied so a small
   * remainder does not pin a large chunk. */
  private take(n: number): Buffer {
    this.have -= n;
    const first = this.parts[0];
    if (first && first.length === n) {
      this.parts.shift();
      return first;
    }
    if (first && first.length > n) {
      this.parts[0] = Buffer.from(first.subarray(n));
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let o = 0;
    while (o < n) {
      const p = this.parts[0]!;
      const k = Math.min(p.length, n - o);
      p.copy(out, o, 0, k);
      o += k;
      if (k === p.length) this.parts.shift();
      else this.parts[0] = Buffer.from(p.subarray(k));
    }
    return out;
  }
}

function connectSocket(opts: ConnectionOptions): Promise<Socket> {
  const where = `${opts.host}:${opts.port}`;
  const timeoutMs = opts.connectTimeoutMs ?? 10_000;
  return new Promise<Socket>((resolve, reject) => {
    const tls = opts.tls;
    // SNI only for host names (RFC 6066 section 3 forbids IP literals); verification still checks IP SANs.
    const socket: Socket = tls
      ? tlsConnect({ ...tls, host: opts.host, port: opts.port, servername: tls.servername ?? (isIP(opts.host) ? undefined : opts.host) })
      : netConnect({ host: opts.host, port: opts.port });
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new CdpError(ErrorCodes.KAFKA, `Kafka ${where}: no connection within ${timeoutMs} ms`, { canRetry: true }));
    }, timeoutMs);
    socket.once(tls ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      // The 'error' listener below stays (it only rejects a settled promise now): the connection
      // adds its own in its constructor, so no error is ever without a listener.
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(describeSocketError(err, where, tls !== undefined));
    });
  });
}
