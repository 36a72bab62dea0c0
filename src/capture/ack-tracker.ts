import type { Lsn } from '../util/lsn.js';

// Which LSN may be confirmed to the slot (DESIGN.md G1): the end LSN of a transaction once every
// record produced for it, and for every transaction before it, has been acknowledged by Kafka.
//
// Records get a sequence number in production order. Batches are sent to Kafka one at a time and
// in order (the idempotent producer allows one request in flight per connection), so "Kafka
// acknowledged record s" implies it acknowledged every record before s: a single counter `acked`
// is the whole acknowledgement state. A transaction is complete when `acked` reaches the sequence
// of its last record (its COMMIT marker, or the last record produced before its commit when it had
// no data records: heartbeat-only or unpublished transactions).
//
// Pure and synchronous: the capture loop feeds it, unit tests drive it directly.

export interface AckedTransaction {
  commitLsn: Lsn;
  endLsn: Lsn;
  /** Microseconds since the Unix epoch. */
  commitTime: number;
}

interface Pending extends AckedTransaction {
  /** Sequence of the transaction's last record (or of the last record before it). */
  seq: number;
}

export class AckTracker {
  /** Sequence of the last record handed to the producer. */
  private produced = 0;
  /** Every record with sequence <= acked is acknowledged by Kafka. */
  private acked = 0;
  /** Committed transactions waiting for their records' acknowledgement, in commit order. */
  private pending: Pending[] = [];
  private head = 0;
  private confirmedLsn: Lsn;
  private last: AckedTransaction | null = null;

  /** @param confirmed the slot's confirmed_flush_lsn when streaming started */
  constructor(confirmed: Lsn = 0) {
    this.confirmedLsn = confirmed;
  }

  /** Registers one record handed to the producer; returns its sequence number. */
  produce(): number {
    return ++this.produced;
  }

  get producedSeq(): number {
    return this.produced;
  }

  get ackedSeq(): number {
    return this.acked;
  }

  /**
   * A transaction's Commit arrived; all its records (if any) were produced before this call.
   * Returns true when this moved the confirmable LSN.
   */
  commit(tx: AckedTransaction): boolean {
    this.pending.push({ ...tx, seq: this.produced });
    return this.drain();
  }

  /** Kafka acknowledged every record up to and including `seq`. Returns true when the confirmable LSN moved. */
  ack(seq: number): boolean {
    if (seq > this.produced) throw new Error(`acknowledged sequence ${seq} was never produced (last ${this.produced})`);
    if (seq <= this.acked) return false;
    this.acked = seq;
    return this.drain();
  }

  /** Nothing produced is waiting for Kafka and no committed transaction awaits confirmation. */
  idle(): boolean {
    return this.acked === this.produced && this.head === this.pending.length;
  }

  /**
   * A keepalive's walEnd when idle and outside a transaction: the walsender sends WAL in order and
   * everything before walEnd has been decoded and sent already, so nothing before it is waiting
   * for us. The caller guarantees idle() and that no transaction is open.
   */
  confirmIdle(walEnd: Lsn): boolean {
    if (!this.idle()) throw new Error('confirmIdle called while records are in flight');
    if (walEnd <= this.confirmedLsn) return false;
    this.confirmedLsn = walEnd;
    return true;
  }

  /** The LSN the slot may be confirmed to (never moves back). */
  get confirmed(): Lsn {
    return this.confirmedLsn;
  }

  /** The last transaction fully acknowledged (for watermarks), or null before the first. */
  get lastAcked(): AckedTransaction | null {
    return this.last;
  }

  /** Transactions committed but not yet acknowledged. */
  get pendingCount(): number {
    return this.pending.length - this.head;
  }

  private drain(): boolean {
    const start = this.head;
    while (this.head < this.pending.length && this.pending[this.head]!.seq <= this.acked) {
      const tx = this.pending[this.head++]!;
      if (tx.endLsn > this.confirmedLsn) this.confirmedLsn = tx.endLsn;
      this.last = { commitLsn: tx.commitLsn, endLsn: tx.endLsn, commitTime: tx.commitTime };
    }
    // Compact now and then so the queue does not grow with the number of transactions seen.
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    return this.head !== start;
  }
}
