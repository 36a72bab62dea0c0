// The applier's outgoing SQL, in order: statement text collected into runs (one run = one
// simple-query round trip) and COPYs between them. Building is synchronous; only send() awaits,
// once per op. Split from apply.ts (issue 12 item 5).

export interface SqlSink {
  /** Queues SQL text (possibly many statements). Errors surface at the latest in drain(). */
  exec(sql: string): Promise<void>;
  /** Queues a COPY ... FROM STDIN with its text-format data. */
  copy(sql: string, data: string): Promise<void>;
  /** Waits until everything queued has been executed. */
  drain(): Promise<void>;
  /**
   * After a failure anywhere in the restore: sends nothing more of what is queued and waits for
   * the statement already sent, so that a ROLLBACK issued next ends the open group (a sink that
   * queues nothing of its own needs none).
   */
  abort?(): Promise<void>;
}

/** A run of statement text is cut into its own op once it holds this many characters. */
const SQL_BUFFER_BYTES = 1 << 20;

type Op = { sql: string; copy?: undefined; data?: undefined } | { sql?: undefined; copy: string; data: () => string };

export class SqlQueue {
  /** SQL text not yet cut into an op, and the ops (text runs and COPYs) not yet sent, in order. */
  private sql: string[] = [];
  private sqlBytes = 0;
  private ops: Op[] = [];

  constructor(
    private readonly sink: SqlSink,
    /** Counts every statement queued (ApplyStats.statements). */
    private readonly counts: { statements: number },
  ) {}

  /** Ops cut and not yet sent. */
  get queued(): number {
    return this.ops.length;
  }

  /** One statement (or a block that stands for one): counted, and sized toward the next cut. */
  statement(sql: string): void {
    if (!sql) return;
    this.counts.statements++;
    this.sql.push(sql);
    this.sqlBytes += sql.length;
  }

  /** Transaction control and the cursor update: neither counted as statements nor sized. */
  control(sql: string): void {
    this.sql.push(sql);
  }

  /**
   * A COPY: the text queued before it is cut into its own op first. Its data is built when it is
   * sent, not here: a large write-out (a kept load, restore.coalesceMaxChanges) is many COPYs, and
   * built at once their text and the rows would be held together while PostgreSQL waited for all
   * of it; built as sent, PostgreSQL starts on the first while node builds the next, and only the
   * session's queue (16 MB) and the slice being handed to it exist as text. So the rows `data`
   * reads must not change once they are queued here (RowWriter hands over rows nothing changes).
   */
  copy(sql: string, data: () => string): void {
    this.cut();
    this.counts.statements++;
    this.ops.push({ copy: sql, data });
  }

  /** Closes the current run of SQL text into one op (one simple-query round trip). */
  cut(): void {
    if (this.sql.length === 0) return;
    this.ops.push({ sql: this.sql.join('') });
    this.sql = [];
    this.sqlBytes = 0;
  }

  /** Cuts once the run has grown past SQL_BUFFER_BYTES, so Postgres starts on it while more is built. */
  cutIfLarge(): void {
    if (this.sqlBytes >= SQL_BUFFER_BYTES) this.cut();
  }

  /** Sends the ops cut so far, in order. The only await on the per-change path. */
  async send(): Promise<void> {
    this.cutIfLarge();
    const ops = this.ops;
    this.ops = [];
    for (const op of ops) {
      if (op.copy !== undefined) await this.sink.copy(op.copy, op.data());
      else await this.sink.exec(op.sql);
    }
  }

  /** Waits until the sink has executed everything sent. */
  drain(): Promise<void> {
    return this.sink.drain();
  }
}
