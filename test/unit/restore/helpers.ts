import { emptyEvent, type ChangeEvent, type RelationInfo } from '../../../src/format/change-event.js';
import type { SqlSink } from '../../../src/restore/apply.js';

export const REL: RelationInfo = { oid: 16384, replicaIdentity: 'd', columns: ['id', 'v'], types: ['bigint', 'text'], key: [0] };

/** Builds the events of one transaction: data records at positions 0..n-1, then its COMMIT marker. */
export function txn(commitLsn: number, xid: number, commitTime: number, changes: Array<Partial<ChangeEvent>>): ChangeEvent[] {
  const evs = changes.map((c, i) =>
    emptyEvent({ op: 'INSERT', database: 'db', schema: 'public', table: 't', relation: REL, new: ['1', 'a'], ...c, commitLsn, xid, commitTime, position: i }),
  );
  evs.push(emptyEvent({ op: 'COMMIT', database: 'db', commitLsn, xid, commitTime, position: changes.length, endLsn: commitLsn + 40 }));
  return evs;
}

export function watermark(lsn: number, partition: number): ChangeEvent {
  return emptyEvent({ op: 'WATERMARK', database: 'db', commitLsn: lsn, content: JSON.stringify({ partition }) });
}

export async function* chunks(...cs: ChangeEvent[][]): AsyncGenerator<ChangeEvent[]> {
  for (const c of cs) yield c;
}

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Records what the applier sends, as one text. COPY data is shown inline like psql would read it. */
export class RecordingSink implements SqlSink {
  text = '';
  execs = 0;
  async exec(sql: string): Promise<void> {
    this.execs++;
    this.text += sql;
  }
  async copy(sql: string, data: string): Promise<void> {
    this.text += `${sql};\n${data}\\.\n`;
  }
  async drain(): Promise<void> {}
}
