import { chmod, copyFile, rm } from 'node:fs/promises';
import { createWriteStream, type WriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import copyStreams from 'pg-copy-streams';
import type { BaseManifestExt } from '../base/basebackup.js';
import { pgError, toError } from '../errors.js';
import type { SqlSink, TableFilter } from './apply.js';
import { downloadBase, writeBaseList } from './base-restore.js';
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

/** A live session: SQL text as simple queries, two in flight so JS builds while Postgres executes. */
class PgSink implements SqlSink {
  private inflight: Array<Promise<void>> = [];
  private error: Error | undefined;
  constructor(private readonly client: pg.Client) {}
  private track(p: Promise<unknown>): void {
    this.inflight.push(
      p.then(
        () => undefined,
        (err: unknown) => {
          this.error ??= toError(err);
        },
      ),
    );
  }
  private async room(): Promise<void> {
    while (this.inflight.length >= 2) await this.inflight.shift();
    if (this.error) throw pgError('restore: applying a change failed', this.error);
  }
  async exec(sql: string): Promise<void> {
    await this.room();
    this.track(this.client.query(sql));
  }
  async copy(sql: string, data: string): Promise<void> {
    await this.room();
    const stream = this.client.query(copyStreams.from(sql));
    this.track(pipeline(Readable.from([Buffer.from(data)]), stream));
  }
  async drain(): Promise<void> {
    while (this.inflight.length > 0) await this.inflight.shift();
    if (this.error) throw pgError('restore: applying a change failed', this.error);
  }
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
