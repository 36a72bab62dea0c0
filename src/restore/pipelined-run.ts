import type pg from 'pg';

// One simple-query message holding several of restore's ops (statement runs and COPY ... FROM
// STDIN), with every COPY's data written right behind it: PostgreSQL reads a COPY's CopyData when
// its statement comes up in the message, whether it arrived before or after the CopyInResponse
// (docs, "Message Flow", COPY Operations). node-postgres sends a query only once it has read the
// previous one's ReadyForQuery, and a COPY's data only once it has read the CopyInResponse; both
// are socket events that wait while node builds the next coalescing window, so PostgreSQL sat
// idle in transaction between ops for about a third of an OLTP replay (pg_stat_activity, sampled
// every 5 ms). Sent as one message, the ops queued when the last one finished run back to back.
//
// Errors keep their meaning: a failing statement ends the message ("the rest of that message is
// discarded"), PostgreSQL drops the CopyData and CopyDone still arriving ("any subsequent CopyData,
// CopyDone, or CopyFail messages issued by the frontend will simply be dropped"), and the open
// transaction is aborted as it was when each op was a query of its own. One difference: the server
// converts a whole message from the client encoding and parses all of it before it runs any of it,
// so a character the target's encoding cannot hold, or a syntax error, in one op now also stops
// the groups merged in front of it from committing. The cursor still says where the target stands
// (it commits with its group): a resume replays more, and the restore fails at the same op.

/** A COPY ... FROM STDIN statement and its text-format data. */
export interface CopyPart {
  copy: string;
  data: string;
}

/** PostgreSQL frontend message types (docs, "Message Formats"). */
const QUERY = 0x51;
const COPY_DATA = 0x64;
const COPY_DONE = Buffer.from([0x63, 0, 0, 0, 4]);

/** A Query message of `texts` joined by newlines, encoded straight into one buffer (no joined string first). */
function queryMessage(texts: readonly string[]): Buffer {
  let n = texts.length - 1;
  for (const t of texts) n += Buffer.byteLength(t, 'utf8');
  const b = Buffer.allocUnsafe(1 + 4 + n + 1);
  b[0] = QUERY;
  b.writeUInt32BE(4 + n + 1, 1);
  let at = 5;
  for (let i = 0; i < texts.length; i++) {
    if (i > 0) b[at++] = 0x0a;
    at += b.write(texts[i]!, at, 'utf8');
  }
  b[at] = 0;
  return b;
}

/** A CopyData message of `data`, then CopyDone. */
function copyMessages(data: string): Buffer {
  const n = Buffer.byteLength(data, 'utf8');
  const b = Buffer.allocUnsafe(5 + n + COPY_DONE.length);
  b[0] = COPY_DATA;
  b.writeUInt32BE(4 + n, 1);
  b.write(data, 5, 'utf8');
  COPY_DONE.copy(b, 5 + n);
  return b;
}

/** Whether `sql` ends with a semicolon (trailing white space aside): another statement may follow it. */
export function endsStatement(sql: string): boolean {
  let i = sql.length - 1;
  while (i >= 0 && (sql[i] === ' ' || sql[i] === '\n' || sql[i] === '\t' || sql[i] === '\r')) i--;
  return i >= 0 && sql[i] === ';';
}

/**
 * The message text of `parts` in order: statement runs as they are, a COPY as its statement. Every
 * run but the last must end with a semicolon (endsStatement): the caller merges no other.
 */
export function runText(parts: ReadonlyArray<string | CopyPart>): string {
  return statementTexts(parts).join('\n');
}

function statementTexts(parts: ReadonlyArray<string | CopyPart>): string[] {
  return parts.map((p) => (typeof p === 'string' ? p : `${p.copy};`));
}

/**
 * A node-postgres "submittable" (as pg-copy-streams is): client.query(run) queues it like a query;
 * `done` settles at its ReadyForQuery, or at the first error (node-postgres then clears its active
 * query itself, and the ReadyForQuery that follows finds none).
 */
export class PipelinedRun {
  readonly done: Promise<void>;
  private settle!: (err?: Error) => void;

  constructor(private readonly parts: ReadonlyArray<string | CopyPart>) {
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = (err) => {
        // node-postgres's query_timeout timer is cleared through the callback it wraps.
        this.callback(err ?? null);
        if (err) reject(err);
        else resolve();
      };
    });
  }

  /** The message's text, COPY data apart (for tests and messages). */
  get text(): string {
    return runText(this.parts);
  }

  /** node-postgres wraps this to clear its query_timeout timer (settle calls it); nothing else is done with it. */
  callback(_err: Error | null): void {}

  /**
   * Writes the Query message, then every COPY's data and CopyDone, to node-postgres's socket. An
   * error is returned, not thrown: node-postgres then reports it through handleError.
   */
  submit(connection: PgConnection): Error | undefined {
    try {
      const s = connection.stream;
      s.write(queryMessage(statementTexts(this.parts)));
      for (const p of this.parts) if (typeof p !== 'string') s.write(copyMessages(p.data));
      return undefined;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  // What the backend answers for the statements of the message: nothing to keep (restore's ops
  // return no rows it reads), and the data of every COPY is already on its way.
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handlePortalSuspended(): void {}
  handleEmptyQuery(): void {}
  handleCommandComplete(): void {}
  handleParseComplete(): void {}
  handleCopyInResponse(): void {}
  handleCopyData(): void {}

  handleError(err: Error): void {
    this.settle(err);
  }

  handleReadyForQuery(): void {
    this.settle();
  }
}

/** What PipelinedRun uses of node-postgres's Connection (not in its type declarations). */
interface PgConnection {
  stream: { write(b: Buffer): boolean };
}

/** Queues `run` on `client` (a submittable; pg's typings know only pg-cursor-like ones). */
export function submitRun(client: pg.Client, run: PipelinedRun): Promise<void> {
  client.query(run as unknown as pg.Submittable);
  return run.done;
}
