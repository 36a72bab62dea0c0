// The harness's "compaction" measurement (bench/compact.ts) in results.md and compaction.svg:
// restore of the latest point against minutes of history, one pipeline compacting every step and
// one never. One run (not repeated): each point is one restore.
import type { CompactPoint } from '../compact.js';
import { lineChart } from './svg.js';

export interface CompactionResults {
  steps: number;
  stepSeconds: number;
  rate: number;
  note: string;
  points: CompactPoint[];
}

const s1 = (n: number) => `${n.toFixed(1)} s`;
const k = (n: number) => (n >= 1000 ? `${(n / 1000).toFixed(1)}k` : String(n));

/** What the measurement is, for results.md and the README. */
export function compactionNote(o: { steps: number; stepSeconds: number; rate: number }): string {
  return `One source under a steady ${o.rate} transactions/s (3 changes each), two pipelines on it: one runs \`cdp compact\` every ${o.stepSeconds} s (${o.steps} times), the other never. After each compaction both restore their latest point into an empty database. The load goes on meanwhile, so the compacted pipeline replays what came after its newest base: one step plus the compaction's own time (which grows with the machine's load). One run, not repeated: each point is one restore.`;
}

/** The results.md section (lines). */
export function compactionMarkdown(c: CompactionResults): string[] {
  const L = ['', '## Restore of the latest point against history, with and without compaction', '', c.note, ''];
  L.push(
    '| history (min) | source transactions | without: restore (replay), transactions replayed | with `cdp compact`: restore (replay), replayed, base | compaction |',
    '|---|---|---|---|---|',
  );
  for (const p of c.points) {
    L.push(
      `| ${p.minutes.toFixed(1)} | ${p.sourceTransactions.toLocaleString('en')} | ${s1(p.without.seconds)} (${s1(p.without.replaySeconds)}), ${k(p.without.transactions)} | ${s1(p.with.seconds)} (${s1(p.with.replaySeconds)}), ${k(p.with.transactions)}, ${p.with.synthetic ? 'synthetic' : 'source'} | ${s1(p.compactSeconds)}${p.compactTransactions === null ? '' : `, ${k(p.compactTransactions)} transactions`} |`,
    );
  }
  return L;
}

/** compaction.svg: restore seconds of the latest point against minutes of history, two lines. */
export function compactionChart(c: CompactionResults, note: string): string {
  const line = (name: string, f: (p: CompactPoint) => number, dashed = false) => ({
    name,
    dashed,
    points: c.points.map((p) => ({ x: p.minutes, y: f(p) })),
  });
  return lineChart({
    title: 'Restore of the latest point against history since the source base',
    xLabel: 'minutes of history',
    yLabel: 'restore seconds',
    series: [line('without compaction', (p) => p.without.seconds, true), line(`with cdp compact every ${c.stepSeconds} s`, (p) => p.with.seconds)],
    note: `${c.rate} tx/s of 3 changes, one run; ${note}`,
  });
}

/** The README Measured row: the first and the last point. */
export function compactionRow(c: CompactionResults): string | undefined {
  const first = c.points[0];
  const last = c.points[c.points.length - 1];
  if (!first || !last) return undefined;
  const at = (p: CompactPoint, f: (p: CompactPoint) => { seconds: number; transactions: number }) =>
    `${p.minutes.toFixed(1)} min: ${s1(f(p).seconds)} (${k(f(p).transactions)} transactions replayed)`;
  return `| restore of the latest point vs history, \`cdp compact\` every ${c.stepSeconds} s at ${c.rate} tx/s (one run) | with compaction: ${at(first, (p) => p.with)}; ${at(last, (p) => p.with)} | without compaction: ${at(first, (p) => p.without)}; ${at(last, (p) => p.without)} | ${last.with.seconds > 0 ? `${(last.without.seconds / last.with.seconds).toFixed(2)}x faster with compaction at ${last.minutes.toFixed(1)} min` : ''} |`;
}
