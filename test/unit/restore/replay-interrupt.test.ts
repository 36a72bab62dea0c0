import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { CdpError, ErrorCodes } from '../../../src/errors.js';
import { replay, type ReplayRun } from '../../../src/restore/replay.js';
import { Applier, type SqlSink } from '../../../src/restore/apply.js';
import { Progress } from '../../../src/restore/progress.js';
import type { ReplayItem } from '../../../src/restore/merge.js';

// SIGTERM aborts the command's signal with the shutdown error (exit 0 for a daemon). A restore
// whose stream is waiting on an S3 GET then sees that error from the stream itself, not between
// batches: it must still end as an interrupted restore (exit 1, resumable), never as exit 0.

describe('replay stopped while the stream waits for a segment', () => {
  it('ends as INTERRUPTED, not as the shutdown error', async () => {
    const ac = new AbortController();
    const sink: SqlSink = { exec: async () => {}, copy: async () => {}, drain: async () => {} };
    const batches: AsyncIterable<ReplayItem[]> = {
      [Symbol.asyncIterator]: () => ({
        next: () => {
          ac.abort(new CdpError(ErrorCodes.SHUTDOWN, 'stopped by SIGTERM'));
          return Promise.reject(ac.signal.reason as Error);
        },
      }),
    };
    const progress = new Progress({ log: () => {} });
    const run = {
      plan: { target: { kind: 'lsn' } },
      stream: { batches, position: { lsn: 0, time: 0 } },
      applier: new Applier(sink, { cursor: false }),
      sink,
      client: undefined,
      dryRun: true,
      progress,
      fraction: () => undefined,
      signal: ac.signal,
      groupDelayMs: 0,
      log: pino({ level: 'silent' }),
    } as unknown as ReplayRun;
    const err: unknown = await replay(run).then(
      () => undefined,
      (e: unknown) => e,
    );
    progress.end();
    expect(err).toBeInstanceOf(CdpError);
    expect((err as CdpError).code).toBe(ErrorCodes.INTERRUPTED);
  });
});
