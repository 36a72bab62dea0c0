import { CdpError, ErrorCodes, toError } from '../errors.js';
import type { AckTracker } from './ack-tracker.js';
import type { OutRecord } from '../kafka/producer.js';

// The produce pipeline: one batch accumulating while one request is in flight.
//
// kafkajs's cost is per request as much as per message, so records are sent many at a time
// (bounded by batchMaxRecords / batchMaxBytes). The idempotent producer needs one request in
// flight per connection (kafkajs assigns producer sequence numbers when a request completes), and a
// single in-flight send is also what makes acknowledgement simple: Kafka acknowledges batches in
// the order they were sent, so one counter says what is durable (ack-tracker.ts). Encoding of the
// next batch overlaps the request in flight; when that batch is full the reader waits, which
// stops reading the replication stream, which pauses its socket: back-pressure down to the slot.
//
// On a failed send nothing more is sent (a later batch landing after a lost one would leave a gap
// inside a partition): the pipeline keeps the error and the capture session restarts from the
// slot's confirmed position.

export interface PipelineOptions {
  /** Sends one batch with acks=all, in order per partition; rejects if any record was not stored. */
  send: (records: OutRecord[]) => Promise<void>;
  topic: string;
  tracker: AckTracker;
  maxRecords: number;
  maxBytes: number;
  /** Linger: how long a first record waits for company when nothing is in flight. */
  maxAgeMs: number;
  /** Called after each acknowledged batch (records, data records, value bytes, seconds). */
  onAcked: (info: { records: number; dataRecords: number; bytes: number; seconds: number }) => void;
  /** Called once when a send fails. */
  onError: (err: CdpError) => void;
}

export class ProducePipeline {
  private batch: OutRecord[] = [];
  private bytes = 0;
  private dataRecords = 0;
  private lastSeq = 0;
  private inflight: Promise<void> | null = null;
  private linger: NodeJS.Timeout | null = null;
  private failure: CdpError | null = null;
  private closed = false;

  constructor(private readonly o: PipelineOptions) {}

  get error(): CdpError | null {
    return this.failure;
  }

  /** Records waiting in the accumulating batch. */
  get pendingRecords(): number {
    return this.batch.length;
  }

  get busy(): boolean {
    return this.inflight !== null || this.batch.length > 0;
  }

  get full(): boolean {
    return this.batch.length >= this.o.maxRecords || this.bytes >= this.o.maxBytes;
  }

  /**
   * True when a record of `size` bytes (key + value) can join the accumulating batch without
   * taking it past maxBytes. An empty batch takes any record: a row larger than maxBytes goes
   * alone, as a batch of one, instead of swelling a batch that is already nearly full (the broker
   * compares each partition's record batch with the topic's max.message.bytes).
   */
  fits(size: number): boolean {
    return this.batch.length === 0 || this.bytes + size <= this.o.maxBytes;
  }

  /**
   * Adds one encoded record. Synchronous; the caller checks `full` and then awaits room().
   * @param partition explicit partition (watermarks), -1: the key decides (murmur2, as Java).
   */
  add(key: Buffer, value: Buffer, data: boolean, partition = -1): void {
    if (this.failure) throw this.failure;
    if (this.closed) throw new CdpError(ErrorCodes.INTERNAL, 'produce pipeline is closed');
    this.batch.push({ key, value, partition });
    this.bytes += value.length + key.length;
    if (data) this.dataRecords++;
    this.lastSeq = this.o.tracker.produce();
    if (this.inflight === null) {
      if (this.full) this.sendNow();
      else if (this.linger === null) {
        this.linger = setTimeout(() => {
          this.linger = null;
          if (this.inflight === null) this.sendNow();
        }, this.o.maxAgeMs);
      }
    }
  }

  /** Waits until the accumulating batch has room again, for `size` more bytes (or throws the send error). */
  async room(size = 0): Promise<void> {
    while (this.full || !this.fits(size)) {
      if (this.failure) throw this.failure;
      if (this.inflight) await this.inflight;
      else this.sendNow();
    }
    if (this.failure) throw this.failure;
  }

  /** Sends everything accumulated and waits until Kafka acknowledged it all. */
  async flush(): Promise<void> {
    while (this.busy) {
      if (this.failure) throw this.failure;
      if (this.inflight) await this.inflight;
      else this.sendNow();
    }
    if (this.failure) throw this.failure;
  }

  /** Stops sending; records not yet acknowledged stay unacknowledged (the slot keeps them). */
  close(): void {
    this.closed = true;
    if (this.linger) clearTimeout(this.linger);
    this.linger = null;
    this.batch = [];
  }

  private sendNow(): void {
    if (this.inflight || this.batch.length === 0 || this.failure || this.closed) return;
    if (this.linger) {
      clearTimeout(this.linger);
      this.linger = null;
    }
    const messages = this.batch;
    const seq = this.lastSeq;
    const records = messages.length;
    const dataRecords = this.dataRecords;
    const bytes = this.bytes;
    this.batch = [];
    this.bytes = 0;
    this.dataRecords = 0;
    const started = process.hrtime.bigint();
    this.inflight = this.o.send(messages).then(
      () => {
        this.inflight = null;
        if (this.closed) return;
        this.o.tracker.ack(seq);
        this.o.onAcked({ records, dataRecords, bytes, seconds: Number(process.hrtime.bigint() - started) / 1e9 });
        // Whatever accumulated meanwhile has waited long enough: send it now (adaptive batching).
        this.sendNow();
      },
      (raw: unknown) => {
        this.inflight = null;
        const err = toError(raw);
        // MESSAGE_TOO_LARGE comes back on every retry of the same data: not retryable, the
        // operator must raise the topic's max.message.bytes (the message says so).
        const tooLarge = (err as { type?: string }).type === 'MESSAGE_TOO_LARGE' || (err instanceof CdpError && err.details.kafkaError === 'MESSAGE_TOO_LARGE');
        this.failure = new CdpError(ErrorCodes.KAFKA, `producing to Kafka topic ${this.o.topic} failed: ${err.message}`, {
          cause: err,
          canRetry: !tooLarge,
          details: { kafkaError: tooLarge ? 'MESSAGE_TOO_LARGE' : err.name, retriable: (err as { retriable?: boolean }).retriable },
        });
        this.batch = [];
        this.o.onError(this.failure);
      },
    );
  }
}
