import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import type { PipelinedRun } from '../../../src/restore/pipelined-run.js';
import { abandonLive, openOutput } from '../../../src/restore/sink.js';

// The live sink queues statements ahead of the server (node builds the next window while
// PostgreSQL executes this one) and sends what was queued meanwhile as one message; after a
// failure nothing queued may run: a COMMIT of the failed group only rolls it back, and a later
// group's cursor update would then claim it applied.

function fakeClient(failOn: string) {
  const sent: string[] = [];
  const pending: Array<() => void> = [];
  const client = {
    query(q: string | PipelinedRun) {
      if (typeof q === 'string') {
        sent.push(q);
        return new Promise((resolve) => pending.push(() => resolve({ rows: [] })));
      }
      // The sink's messages (PipelinedRun): the server answers with an error or ReadyForQuery.
      sent.push(q.text);
      pending.push(() => (q.text.includes(failOn) ? q.handleError(new Error(`failed: ${q.text}`)) : q.handleReadyForQuery()));
      return undefined;
    },
  };
  /** Lets the server finish the oldest statement. */
  const step = async () => {
    pending.shift()?.();
    await new Promise((r) => setImmediate(r));
  };
  return { client: client as unknown as pg.Client, sent, step };
}

const open = (client: pg.Client) => openOutput({ dryRun: false }, client, undefined as never);

describe('live sink', () => {
  it('sends one message at a time, in order: what was queued meanwhile goes as one', async () => {
    const f = fakeClient('never');
    const { sink } = await open(f.client);
    for (const s of ['BEGIN; a;', 'b;', 'COMMIT;', 'BEGIN; c;']) await sink.exec(s);
    expect(f.sent).toEqual(['BEGIN; a;']);
    await f.step();
    expect(f.sent).toEqual(['BEGIN; a;', 'b;\nCOMMIT;\nBEGIN; c;']);
    await sink.copy('COPY t (a) FROM STDIN', '1\n');
    await sink.exec('d;');
    const drained = sink.drain();
    for (let i = 0; i < 2; i++) await f.step();
    await drained;
    expect(f.sent).toEqual(['BEGIN; a;', 'b;\nCOMMIT;\nBEGIN; c;', 'COPY t (a) FROM STDIN;\nd;']);
  });

  it('merges nothing after text that does not end a statement', async () => {
    const f = fakeClient('never');
    const { sink } = await open(f.client);
    for (const s of ['a;', 'SELECT 1 -- no semicolon', 'b;', 'c;']) await sink.exec(s);
    const drained = sink.drain();
    for (let i = 0; i < 3; i++) await f.step();
    await drained;
    expect(f.sent).toEqual(['a;', 'SELECT 1 -- no semicolon', 'b;\nc;']);
  });

  it('sends nothing queued after a failure, and reports it', async () => {
    const f = fakeClient('bad');
    const { sink } = await open(f.client);
    for (const s of ['BEGIN; bad;', 'UPDATE cursor; COMMIT;', 'BEGIN; next group;', 'UPDATE cursor; COMMIT;']) await sink.exec(s);
    const drained = expect(sink.drain()).rejects.toThrow(/applying a change failed/);
    await f.step();
    await drained;
    expect(f.sent).toEqual(['BEGIN; bad;']);
    await expect(sink.exec('more;')).rejects.toThrow(/applying a change failed/);
    expect(f.sent).toEqual(['BEGIN; bad;']);
  });

  it('a restore failing elsewhere: the queued rest of the group is never sent, the ROLLBACK comes after the statement on the wire', async () => {
    const f = fakeClient('never');
    const { sink } = await open(f.client);
    for (const s of ['BEGIN; row 1;', 'row 2; cursor; COMMIT;']) await sink.exec(s);
    expect(f.sent).toEqual(['BEGIN; row 1;']);
    // The applier throws (a corrupt segment, a refused DDL) while 'row 2; cursor; COMMIT;' waits here.
    const abandoned = abandonLive(sink, f.client);
    await new Promise((r) => setImmediate(r));
    expect(f.sent).toEqual(['BEGIN; row 1;']);
    await f.step();
    await f.step();
    await abandoned;
    expect(f.sent).toEqual(['BEGIN; row 1;', 'ROLLBACK']);
  });
});
