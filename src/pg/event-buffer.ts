// The replication stream's buffer between the socket and the consumer, with back-pressure (G4,
// DESIGN.md section 2; replication-stream.ts): when `highWaterMark` events, or `highWaterBytes`
// bytes of CopyData payload, wait for the consumer, the feed is paused (the socket: TCP flow
// control stops the walsender, and the slot keeps the WAL). Reading resumes once both are below
// half. The byte bound is what makes memory independent of row size: a count alone lets 4,000
// rows of 50 MB hold 200 GB.

/** What the buffer pauses and resumes (the replication socket). */
export interface FlowControl {
  pause(): void;
  resume(): void;
}

export class EventBuffer<T> {
  private readonly lowWaterMark: number;
  private readonly lowWaterBytes: number;

  // An array consumed from `head`, compacted now and then (no O(n) shift per event). `sizes` runs
  // beside it: the CopyData payload size of each queued event, summed in `total`.
  private queue: (T | undefined)[] = [];
  private sizes: number[] = [];
  private head = 0;
  private total = 0;
  private held = false;
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | null = null;

  /** The limits are checked by the caller: highWaterMark >= 1, highWaterBytes >= 1. */
  constructor(
    private readonly highWaterMark: number,
    private readonly highWaterBytes: number,
    private readonly flow: FlowControl,
  ) {
    this.lowWaterMark = Math.floor(highWaterMark / 2);
    this.lowWaterBytes = Math.floor(highWaterBytes / 2);
  }

  /** Events waiting for the consumer. */
  get length(): number {
    return this.queue.length - this.head;
  }

  /** Sizes (CopyData payload bytes) of the events waiting for the consumer. */
  get bytes(): number {
    return this.total;
  }

  /** True while back-pressure holds the feed (the buffer reached highWaterMark or highWaterBytes). */
  get paused(): boolean {
    return this.held;
  }

  /** True while a consumer waits in wait(). */
  get waiting(): boolean {
    return this.waiter !== null;
  }

  /** The oldest event; only when length > 0. Resumes the feed once both counts are at or below half. */
  take(): T {
    const q = this.queue;
    const ev = q[this.head]!;
    q[this.head] = undefined;
    this.total -= this.sizes[this.head++]!;
    if (this.head === q.length) {
      q.length = 0;
      this.sizes.length = 0;
      this.head = 0;
    } else if (this.head >= 4096 && this.head * 2 >= q.length) {
      q.splice(0, this.head);
      this.sizes.splice(0, this.head);
      this.head = 0;
    }
    if (this.held && q.length - this.head <= this.lowWaterMark && this.total <= this.lowWaterBytes) {
      this.held = false;
      this.flow.resume();
    }
    return ev;
  }

  /** Hands `ev` to a waiting consumer, or queues it (pausing the feed at either high-water mark). */
  push(ev: T, size: number): void {
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      w.resolve({ value: ev, done: false });
      return;
    }
    this.queue.push(ev);
    this.sizes.push(size);
    this.total += size;
    if (!this.held && (this.queue.length - this.head >= this.highWaterMark || this.total >= this.highWaterBytes)) {
      this.held = true;
      this.flow.pause();
    }
  }

  /** The next pushed event, for a consumer that found the buffer empty; one waiter at a time (see waiting). */
  wait(): Promise<IteratorResult<T>> {
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** Settles a waiting consumer once nothing more will come: with `failure`, else as done. */
  wake(failure: Error | null): void {
    const w = this.waiter;
    if (w === null) return;
    this.waiter = null;
    if (failure) w.reject(failure);
    else w.resolve({ value: undefined, done: true });
  }

  /** Drops every queued event (the consumer will not take them). The feed stays as it is. */
  clear(): void {
    this.queue = [];
    this.sizes = [];
    this.head = 0;
    this.total = 0;
  }

  /** Resumes a paused feed whatever the buffer holds (closing: the server's last messages must get through). */
  unpause(): void {
    if (!this.held) return;
    this.held = false;
    this.flow.resume();
  }
}
