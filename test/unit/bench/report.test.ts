// The benchmark harness's pure parts: summaries, the SVG writer, and the README section rendered
// from a results file. Nothing here times anything (the harness itself is not a test).
import { describe, expect, it } from 'vitest';
import { END, renderMeasured, replaceMeasured, START } from '../../../bench/lib/measured.js';
import { pairedRatio, spread, summarize } from '../../../bench/lib/stats.js';
import { barChart, lineChart, niceMax } from '../../../bench/lib/svg.js';

describe('bench summaries', () => {
  it('median, min and max of the finite values; even counts average the middle two', () => {
    expect(summarize([3, 1, 2])).toEqual({ n: 3, median: 2, min: 1, max: 3 });
    expect(summarize([4, 1, 3, 2])).toEqual({ n: 4, median: 2.5, min: 1, max: 4 });
    expect(summarize([NaN, 5])).toEqual({ n: 1, median: 5, min: 5, max: 5 });
    expect(summarize([NaN])).toBeUndefined();
  });
  it('ratios are taken inside each run, then summarized', () => {
    // Run 1: 100 vs 50 (2x), run 2: 90 vs 90 (1x), run 3: the anchor failed (skipped).
    expect(pairedRatio([100, 90, 80], [50, 90, NaN])).toEqual({ n: 2, median: 1.5, min: 1, max: 2 });
    expect(spread(summarize([118_000, 116_000, 117_000]))).toBe('117k (116k-118k)');
  });
});

describe('bench SVG writer', () => {
  it('bars carry their median, min and max; the axis reaches the largest max', () => {
    const svg = barChart({
      title: 'T <x>',
      yLabel: 'changes/s',
      groups: ['bulk', 'oltp'],
      series: [{ name: 'a', values: [{ median: 10, min: 8, max: 12 }, undefined] }],
    });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('T &lt;x&gt;');
    expect(svg).toContain('a, bulk: median 10 (min 8, max 12)');
    expect(svg.match(/<rect x=/g)).toHaveLength(2); // one bar + one legend swatch: no bar for the missing value
    expect(niceMax(12)).toBe(20);
    expect(niceMax(118_000)).toBe(200_000);
  });
  it('lines are drawn through points sorted by x', () => {
    const svg = lineChart({
      title: 't',
      xLabel: 'x',
      yLabel: 'y',
      series: [
        {
          name: 's',
          points: [
            { x: 2, y: 1 },
            { x: 1, y: 2 },
          ],
        },
      ],
    });
    const pts = /points="([^"]+)"/
      .exec(svg)![1]!
      .split(' ')
      .map((p) => Number(p.split(',')[0]));
    expect(pts[0]).toBeLessThan(pts[1]!);
  });
});

describe('README Measured section from a results file', () => {
  const results = {
    mode: 'quick',
    runs: 2,
    startedAt: '2026-11-29T17:00:00Z',
    commit: 'abcdef0123456789',
    machine: { cpus: 2, memoryGiB: 23, postgres: 'PostgreSQL 15.14', kafka: '4.4.0', node: 'v20', debezium: '3.6.1.Final' },
    load: { start: [5.5, 5, 5], end: [6, 5, 5] },
    capture: [
      {
        workload: 'bulk',
        changes: 170_000,
        runs: [
          {
            readers: {
              pg_recvlogical: { changesPerSecond: 120_000 },
              debezium: { changesPerSecond: 40_000 },
              capture: { changesPerSecond: 120_000, peakRssMb: 200 },
            },
          },
          {
            readers: {
              pg_recvlogical: { changesPerSecond: 100_000 },
              debezium: { changesPerSecond: 50_000 },
              capture: { changesPerSecond: 110_000, peakRssMb: 210 },
            },
          },
        ],
      },
    ],
    restore: [
      {
        workload: 'oltp',
        runs: [
          { changes: 60_000, ratio: 1.1, identical: { ours: true, native: true }, native: { changesPerSecond: 100_000 }, ours: { changesPerSecond: 110_000 } },
        ],
      },
    ],
  };
  it('renders each anchor beside ours with per-run ratios', () => {
    const s = renderMeasured(results, 'bench/results/x/results.json');
    expect(s).toContain('`bench/results/x/results.json`');
    expect(s).toContain(
      '| capture into Kafka, bulk (170,000 changes) | 115k (110k-120k) changes/s | `pg_recvlogical` 110k (100k-120k)/s; Debezium 3.6.1.Final embedded 45k (40k-50k)/s | 1.05x (1.00x-1.10x) of pg_recvlogical; **2.60x (2.20x-3.00x)** Debezium |',
    );
    expect(s).toContain('| restore, oltp (60,000 changes) | 110k changes/s, tables identical to the source | native logical apply 100k/s | 1.10x |');
  });
  it('replaces only what lies between the markers, and refuses a README without them', () => {
    const readme = `# x\n## Measured\n${START}\nold table\n${END}\n## Limits\n`;
    const out = replaceMeasured(readme, 'new table');
    expect(out).toBe(`# x\n## Measured\n${START}\nnew table\n${END}\n## Limits\n`);
    expect(replaceMeasured(out, 'new table')).toBe(out);
    expect(() => replaceMeasured('# no markers', 'x')).toThrow(/markers/);
  });
});
