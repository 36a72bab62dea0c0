import { chmod, copyFile, rm } from 'node:fs/promises';
import { createWriteStream, type WriteStream } from 'node:fs';
import type pg from 'pg';
import type { BaseManifestExt } from '../base/basebackup.js';
import { pgError, toError } from '../errors.js';
import type { SqlSink, TableFilter } from './apply.js';
import { downloadBase, writeBaseList } from './base-restore.js';
import { endsStatement, PipelinedRun, submitRun, type CopyPart } from './pipelined-run.js';
import { SESSION_SETTINGS } from './ddl-replay.js';
import type { ArchiveAccess } from './stream.js';

// Where restore's statements go: the target database (a live restore), the --sql file (with the
// base beside it), or nowhere (--dry-run counts only).

/** Text for a -- comment line: no line break or other control character can end the comment. */
function oneLine(s: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return s.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, '?');
}

/**
 * The --sql file's header. client_encoding: the file is written in UTF-8, and psql would otherwise
 * send it in its own client encoding (PGCLIENTENCODING, the locale), garbling non-ASCII text.
 */
export function sqlFileHeader(base: { lsnText: string; time: string; key: string }, targetText: string, baseFile = 'base.dump'): string {
  return (
    // Fields of the (unauthenticated) base manifest: one comment line each, whatever they hold.
    `-- Katya CDP replay: base ${oneLine(base.lsnText)} (${oneLine(base.time)}, ${oneLine(base.key)}) to ${oneLine(targetText)}\n` +
    `-- Restore the base first, keeping owners (DDL below runs as the role that ran it): pg_restore --exit-on-error -d <target> ${oneLine(baseFile)}\n` +
    `\\set ON_ERROR_STOP on\n${SESSION_SETTINGS}\n`
  );
}

/**
 * What a live session may have queued and not yet seen executed: about one coalescing window of
 * statements (10,000 rows of SQL text or COPY data is 1-6 MB). Node builds the next window while
 * PostgreSQL executes this one; with two ops in flight (before) node waited for all but the last
 * two statements of each window, then PostgreSQL idled while node built the next.
 */
const MAX_QUEUED_CHARS = 16 * 1024 * 1024;
const MAX_QUEUED_OPS = 64;
/** Ops queued when the previous message finished go out as one message of at most this many characters (PipelinedRun). */
const MAX_MESSAGE_CHARS = 8 * 1024 * 1024;

/**
 * A live session: SQL text and COPYs, queued up to the bounds above and sent in order, the ops
 * queued when the previous message finished as one message (PipelinedRun), each once the previous
 * one has succeeded. After a failure nothing queued is sent: a COMMIT of the failed transaction
 * only rolls it back, and a later group (its cursor update included) must never commit after an
 * earlier one was lost.
 */
class PgSink implements SqlSink {
  private readonly queue: Array<{ part: string | CopyPart; chars: number }> = [];
  private chars = 0;
  private busy = false;
  private error: Error | undefined;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly client: pg.Client) {}

  private pump(): void {
    for (const w of this.waiting.splice(0)) w();
    if (this.error || this.queue.length === 0) {
      this.busy = false;
      return;
    }
    const parts: Array<string | CopyPart> = [];
    let chars = 0;
    for (let next = this.queue[0]; next; next = this.queue[0]) {
      if (parts.length > 0) {
        const last = parts[parts.length - 1]!;
        // A run is merged only after a complete statement; a message never outgrows the cap.
        if ((typeof last === 'string' && !endsStatement(last)) || chars + next.chars > MAX_MESSAGE_CHARS) break;
      }
      this.queue.shift();
      parts.push(next.part);
      chars += next.chars;
    }
    this.busy = true;
    submitRun(this.client, new PipelinedRun(parts)).then(
      () => {
        this.chars -= chars;
        this.pump();
      },
      (err: unknown) => {
        this.error ??= toError(err);
        this.queue.length = 0;
        this.chars = 0;
        this.pump();
      },
    );
  }

  private enqueue(part: string | CopyPart, chars: number): void {
    this.queue.push({ part, chars });
    this.chars += chars;
    if (!this.busy) this.pump();
  }

  /** Resolves when an op finishes (or fails). */
  private progress(): Promise<void> {
    return new Promise<void>((r) => this.waiting.push(r));
  }

  private async room(): Promise<void> {
    while (!this.error && (this.queue.length >= MAX_QUEUED_OPS || this.chars >= MAX_QUEUED_CHARS)) await this.progress();
    if (this.error) throw pgError('restore: applying a change failed', this.error);
  }
  async exec(sql: string): Promise<void> {
    await this.room();
    this.enqueue(sql, sql.length);
  }
  async copy(sql: string, data: string): Promise<void> {
    await this.room();
    this.enqueue({ copy: sql, data }, data.length);
  }
  async drain(): Promise<void> {
    while (!this.error && this.busy) await this.progress();
    if (this.error) throw pgError('restore: applying a change failed', this.error);
  }
  async abort(): Promise<void> {
    this.error ??= new Error('restore stopped');
    this.queue.length = 0;
    this.chars = 0;
    while (this.busy) await this.progress();
  }
}

/**
 * Ends a live restore that failed: nothing more of the queue is sent, then the open group is rolled
 * back. A ROLLBACK sent while ops were still queued here would run before them, and the rest of the
 * group (its cursor update too) would then commit on its own: a resume that skips or repeats changes.
 */
export async function abandonLive(sink: SqlSink, client: pg.Client): Promise<void> {
  await sink.abort?.();
  await client.query('ROLLBACK').catch(() => {});
}

/** The --sql file: the same statements, COPY data inline as psql reads it. */
class FileSink implements SqlSink {
  constructor(private readonly out: WriteStream) {}
  private async write(s: string): Promise<void> {
    if (!this.out.write(s)) await new Promise<void>((r) => this.out.once('drain', () => r()));
  }
  async exec(sql: string): Promise<void> {
    await this.write(sql);
  }
  async copy(sql: string, data: string): Promise<void> {
    await this.write(`${sql};\n${data}\\.\n`);
  }
  async drain(): Promise<void> {}
}

/** Counts without applying (--dry-run). */
class NullSink implements SqlSink {
  async exec(): Promise<void> {}
  async copy(): Promise<void> {}
  async drain(): Promise<void> {}
}

/** Where a restore writes: the sink, and for --sql the open file and the base written beside it. */
export interface RestoreOutput {
  sink: SqlSink;
  file: WriteStream | undefined;
  baseFile: string | undefined;
}

/**
 * Opens the restore's output: nothing for --dry-run, the --sql file (the base fetched beside it,
 * the header written) or the live session on `client`.
 */
export async function openOutput(
  mode: { dryRun: boolean; sqlFile?: string },
  client: pg.Client | undefined,
  src: { archive: ArchiveAccess; base: BaseManifestExt; targetText: string; filter: TableFilter | undefined; pgRestorePath: string; signal: AbortSignal },
): Promise<RestoreOutput> {
  if (mode.dryRun) return { sink: new NullSink(), file: undefined, baseFile: undefined };
  if (!mode.sqlFile) return { sink: new PgSink(client!), file: undefined, baseFile: undefined };
  const sqlFile = mode.sqlFile;
  const { base } = src;
  // The file holds the data: readable by its owner only (an existing file is narrowed first).
  await chmod(sqlFile, 0o600).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  // The base beside it (issue 14: --sql used to leave fetching the base to the operator): the
  // stored dump, checked against its SHA-256 and decrypted, as <file>.base.dump.
  const baseFile = `${sqlFile}.base.dump`;
  const fetched = await downloadBase(src.archive.store, base, src.archive.keyring);
  try {
    await copyFile(fetched.file, baseFile);
    await chmod(baseFile, 0o600);
    await writeBaseList(src.pgRestorePath, baseFile, `${sqlFile}.base.list`, src.filter, src.signal);
  } finally {
    await rm(fetched.dir, { recursive: true, force: true });
  }
  const file = createWriteStream(sqlFile, { mode: 0o600 });
  const sink = new FileSink(file);
  await sink.exec(sqlFileHeader(base, src.targetText, `--use-list=${sqlFile}.base.list ${baseFile}`));
  return { sink, file, baseFile };
}
