// The benchmark harness behind `npm run bench` (quick) and `npm run bench -- --full` (not a test;
// never part of `npm test`). Every figure is measured beside its anchor in the same run, each
// measurement is repeated (3 runs quick, 5 full) and reported as median, min and max; ratios are
// taken inside each run and then summarized.
//
//   capture throughput   4 workloads (ANCHORS.md bulk, pgbench-style OLTP, one big transaction,
//                        TOAST-heavy); pg_recvlogical, Debezium embedded and cdp capture each drain
//                        an identical slot of the same backlog (bench/capture.ts)
//   restore throughput   bulk and OLTP; PostgreSQL's native logical apply of the same changes
//                        (bench/restore.ts)
//   commit-to-durable    p50/p99 against offered load; pg_recvlogical's view of the commit as the
//                        floor (bench/latency.ts)
//   restore vs history   restore time against the changes since the newest base, no compaction;
//                        native apply of the same changes (bench/restore.ts)
//   compaction           restore of the latest point against minutes of history at a steady load,
//                        with `cdp compact` every step and without (bench/compact.ts; one run)
//
// Writes bench/results/<UTC timestamp>-<quick|full>/: results.json, results.md and SVG charts.
// `npx tsx bench/report.ts [dir]` rewrites the README's Measured section from a results.json.
// Options: --full, --runs N, --only capture,restore,latency,history,compaction, --out DIR;
// --compact-steps N, --compact-step-seconds S, --compact-rate TX override the compaction sizes;
// --render DIR writes results.md and the charts again from DIR/results.json.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { measureCapture, type CaptureRun, type Reader } from './capture.js';
import { compactBench } from './compact.js';
import { latencyBench, type LatencyRow } from './latency.js';
import { compactionChart, compactionMarkdown, compactionNote, type CompactionResults } from './lib/compaction.js';
import { buildDebezium, debeziumVersion } from './lib/debezium.js';
import { dbUrl, loadStackEnv, REPO, sql } from './lib/env.js';
import { pairedRatio, short, spread, summarize, type Summary } from './lib/stats.js';
import { loadWords } from './lib/measured.js';
import { barChart, lineChart } from './lib/svg.js';
import { bigTxn, bulk, oltp, toast, type Workload } from './lib/workloads.js';
import { restoreBench, type RestoreResult } from './restore.js';

const argv = process.argv.slice(2);
const opt = (n: string) => {
  const i = argv.indexOf(`--${n}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const FULL = argv.includes('--full');
const RUNS = Number(opt('runs') ?? (FULL ? 5 : 3));
const ONLY = new Set((opt('only') ?? 'capture,restore,latency,history,compaction').split(','));

/** Sizes. Quick mode scales every workload down (and says so in the results). */
const SIZES = FULL
  ? {
      bulk: 1_000_000,
      oltp: 100_000,
      big: 1_000_000,
      toast: 10_000,
      restoreBulk: 1_000_000,
      restoreOltp: 100_000,
      rates: [500, 1000, 2000],
      latencySeconds: 25,
      history: [25_000, 50_000, 100_000, 200_000],
      // 9 minutes of steps, plus the compactions and restores between them (the load goes on meanwhile).
      compaction: { steps: 6, stepSeconds: 90, rate: 400 },
    }
  : {
      bulk: 100_000,
      oltp: 10_000,
      big: 200_000,
      toast: 1_000,
      restoreBulk: 100_000,
      restoreOltp: 10_000,
      rates: [200, 1000],
      latencySeconds: 8,
      history: [2_500, 5_000, 10_000],
      // 45 s of steps plus the compactions and restores: about 2 minutes on a quiet machine (a guess
      // from the README's compact.ts runs, not yet timed in a quiet quick run; under load average 30
      // 2 steps of 5 s took 31 minutes). Short, but the replay without compaction grows step by step.
      compaction: { steps: 3, stepSeconds: 15, rate: 400 },
    };
const num = (n: string) => (opt(n) === undefined ? undefined : Number(opt(n)));
const COMPACTION = {
  steps: num('compact-steps') ?? SIZES.compaction.steps,
  stepSeconds: num('compact-step-seconds') ?? SIZES.compaction.stepSeconds,
  rate: num('compact-rate') ?? SIZES.compaction.rate,
};

const READERS: Reader[] = ['pg_recvlogical', 'debezium', 'capture'];
const LABEL: Record<Reader, string> = {
  pg_recvlogical: 'pg_recvlogical (ceiling)',
  debezium: `Debezium ${debeziumVersion()} embedded`,
  capture: 'cdp capture into Kafka',
};

interface Results {
  version: 1;
  mode: 'quick' | 'full';
  runs: number;
  startedAt: string;
  finishedAt?: string;
  durationSeconds?: number;
  commit: string;
  dirty: boolean;
  machine: Record<string, string | number>;
  load: { start: number[]; end?: number[] };
  scaledDown?: string;
  capture: Array<{ workload: string; describe: string; changes: number; runs: CaptureRun[] }>;
  restore: Array<{ workload: string; rows: number; runs: RestoreResult[] }>;
  latency: { rates: number[]; seconds: number; runs: LatencyRow[][] } | undefined;
  history: { compaction: false; note: string; points: Array<{ transactions: number; changes: number; runs: RestoreResult[] }> } | undefined;
  /** Absent in results written before the harness measured it. */
  compaction?: CompactionResults;
  errors: string[];
}

const sh = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
};

async function machine(): Promise<Record<string, string | number>> {
  const [{ v }] = await sql<{ v: string }>(dbUrl('postgres'), 'SELECT version() AS v');
  const stack = execFileSync('bash', ['-c', `grep -E '^KAFKA_VERSION=' ${REPO}deploy/local/stack.sh`], { encoding: 'utf8' });
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '?',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    postgres: v.split(',')[0]!,
    kafka: /KAFKA_VERSION=(\S+)/.exec(stack)?.[1] ?? '?',
    node: process.version,
    java: sh('java', ['-version']).split('\n')[0] ?? '?',
    debezium: debeziumVersion(),
    pgRecvlogical: sh('pg_recvlogical', ['--version']),
  };
}

const ratioOf = (runs: CaptureRun[], a: Reader, b: Reader) =>
  pairedRatio(
    runs.map((r) => r.readers[a]?.changesPerSecond ?? NaN),
    runs.map((r) => r.readers[b]?.changesPerSecond ?? NaN),
  );
const rateOf = (runs: CaptureRun[], r: Reader) => summarize(runs.map((x) => x.readers[r]?.changesPerSecond ?? NaN));
const x2 = (n: number) => `${n.toFixed(2)}x`;
const ms = (n: number) => (n >= 10_000 ? `${(n / 1000).toFixed(1)} s` : n < 10 ? `${n.toFixed(1)} ms` : `${Math.round(n)} ms`);
const sec = (n: number) => `${n.toFixed(n >= 10 ? 1 : 2)} s`;

function markdown(r: Results): string {
  const L: string[] = [];
  L.push(`# Benchmark results, ${r.mode} mode, ${r.startedAt}`, '');
  L.push(
    `Commit \`${r.commit.slice(0, 12)}\`${r.dirty ? ' (with uncommitted changes under src/ or bench/)' : ''}; ${r.runs} runs of each measurement; median (min-max).`,
  );
  L.push(
    `Machine: ${r.machine.cpus} cores (${r.machine.cpuModel}), ${r.machine.memoryGiB} GiB; ${r.machine.postgres}; Kafka ${r.machine.kafka}; Node ${r.machine.node}; ${r.machine.java}; Debezium ${r.machine.debezium}.`,
  );
  L.push(
    `Load average (1/5/15 min) at start ${r.load.start.map((x) => x.toFixed(1)).join('/')}, at end ${(r.load.end ?? []).map((x) => x.toFixed(1)).join('/')}: this machine is shared, the numbers were taken under other people's load. Compare ratios within this run; absolute rates from another run or day are not comparable.`,
  );
  if (r.durationSeconds) L.push(`The whole run took ${Math.round(r.durationSeconds / 60)} minutes.`);
  if (r.scaledDown) L.push('', `**Quick mode, scaled down:** ${r.scaledDown}`);
  if (r.capture.length) {
    L.push('', '## Capture throughput (changes/s), every reader drains an identical slot of the same backlog', '');
    L.push('| workload | changes | reader | changes/s | MB/s out | ratio to pg_recvlogical | ratio to Debezium |', '|---|---|---|---|---|---|---|');
    for (const c of r.capture) {
      for (const rd of READERS) {
        if (!c.runs.some((x) => x.readers[rd])) continue;
        const mb = summarize(c.runs.map((x) => x.readers[rd]?.mbPerSecond ?? NaN));
        L.push(
          `| ${c.workload} | ${c.changes.toLocaleString('en')} | ${LABEL[rd]} | ${spread(rateOf(c.runs, rd))} | ${spread(mb, (n) => n.toFixed(1))} | ${rd === 'pg_recvlogical' ? '1' : spread(ratioOf(c.runs, rd, 'pg_recvlogical'), x2)} | ${rd === 'capture' ? spread(ratioOf(c.runs, 'capture', 'debezium'), x2) : rd === 'debezium' ? '1' : spread(ratioOf(c.runs, 'pg_recvlogical', 'debezium'), x2)} |`,
        );
      }
    }
    L.push('', 'Workloads:');
    for (const c of r.capture) L.push(`- ${c.workload}: ${c.describe}.`);
    const rss = summarize(r.capture.flatMap((c) => c.runs.map((x) => x.readers.capture?.peakRssMb ?? NaN)));
    if (rss) L.push(`- cdp capture peak RSS over all capture runs: ${spread(rss, (n) => `${n.toFixed(0)} MB`)}.`);
    L.push(
      '- Timing: pg_recvlogical from process start to `--endpos`; Debezium from its task start (connected, slot opened; JVM and connector start-up excluded) to the last change converted to JSON; cdp capture from its "capture streaming" log line to its count of records acknowledged by Kafka reaching the backlog\'s changes (the slot\'s confirmed_flush_lsn follows at the next status update, within a second). Readers run one after another, their order rotating between runs, each after a CHECKPOINT.',
    );
  }
  if (r.restore.length) {
    L.push('', "## Restore throughput (changes/s): `cdp restore` replay against PostgreSQL's native logical apply of the same changes", '');
    L.push('| workload | changes | cdp restore | native apply (CREATE SUBSCRIPTION) | ratio | tables identical to source |', '|---|---|---|---|---|---|');
    for (const x of r.restore) {
      const ours = summarize(x.runs.map((y) => y.ours.changesPerSecond));
      const nat = summarize(x.runs.map((y) => y.native.changesPerSecond));
      const ok = x.runs.every((y) => y.identical.ours && y.identical.native);
      L.push(
        `| ${x.workload} | ${(x.runs[0]?.changes ?? 0).toLocaleString('en')} | ${spread(ours)} | ${spread(nat)} | ${spread(summarize(x.runs.map((y) => y.ratio)), x2)} | ${ok ? 'yes, every run' : '**NO**'} |`,
      );
    }
  }
  if (r.latency) {
    L.push('', `## Commit-to-durable latency (capture + archive in one process, restorable point polled every 100 ms; ${r.latency.seconds} s per rate)`, '');
    L.push('| offered tx/s | achieved tx/s | durable p50 | durable p99 | pg_recvlogical seen p50 | pg_recvlogical seen p99 |', '|---|---|---|---|---|---|');
    for (const rate of r.latency.rates) {
      const rows = r.latency.runs.map((run) => run.find((x) => x.offered === rate)).filter((x): x is LatencyRow => !!x);
      const d = (f: (x: LatencyRow) => number | undefined, fmt: (n: number) => string) => spread(summarize(rows.map((x) => f(x) ?? NaN)), fmt);
      L.push(
        `| ${rate} | ${d(
          (x) => x.achieved,
          (n) => n.toFixed(0),
        )} | ${d((x) => (x.exact ?? x.upper)?.p50, ms)} | ${d((x) => (x.exact ?? x.upper)?.p99, ms)} | ${d((x) => x.anchorSeen?.p50, ms)} | ${d((x) => x.anchorSeen?.p99, ms)} |`,
      );
    }
    const behind = r.latency.rates.filter((rate) => r.latency!.runs.some((run) => run.some((x) => x.offered === rate && x.achieved < 0.95 * rate)));
    if (behind.length)
      L.push(
        '',
        `At ${behind.join(', ')} tx/s offered the paced load fell behind (each of its 2 connections waits for its synchronous commit's WAL flush on a machine that also runs PostgreSQL, capture and archive): the latency is that of the achieved rate.`,
      );
  }
  if (r.history) {
    L.push('', `## Restore time against history since the newest base`, '', r.history.note, '');
    L.push('| transactions since base | changes | cdp restore replay | native apply |', '|---|---|---|---|');
    for (const p of r.history.points) {
      L.push(
        `| ${p.transactions.toLocaleString('en')} | ${p.changes.toLocaleString('en')} | ${spread(summarize(p.runs.map((y) => y.ours.replaySeconds)), sec)} | ${spread(summarize(p.runs.map((y) => y.native.seconds)), sec)} |`,
      );
    }
  }
  if (r.compaction) L.push(...compactionMarkdown(r.compaction));
  if (r.errors.length) L.push('', '## Errors', '', ...r.errors.map((e) => `- ${e.split('\n')[0]}`));
  L.push('', 'Charts: capture.svg, restore.svg, latency.svg, history.svg, compaction.svg (written by bench/harness.ts).', '');
  return L.join('\n');
}

function charts(r: Results, dir: string): string[] {
  const written: string[] = [];
  const put = (name: string, svg: string) => {
    writeFileSync(join(dir, name), svg);
    written.push(name);
  };
  const s = (x: Summary | undefined) => (x ? { median: x.median, min: x.min, max: x.max } : undefined);
  if (r.capture.length) {
    put(
      'capture.svg',
      barChart({
        title: `Capture throughput, changes/s (${r.mode}, median of ${r.runs}, whiskers min-max)`,
        yLabel: 'changes/s',
        groups: r.capture.map((c) => c.workload),
        series: READERS.map((rd) => ({ name: LABEL[rd], values: r.capture.map((c) => s(rateOf(c.runs, rd))) })),
        note: `${r.machine.cpus} cores, ${loadWords(r)}; commit ${r.commit.slice(0, 10)}; ${r.startedAt}`,
      }),
    );
  }
  if (r.restore.length) {
    put(
      'restore.svg',
      barChart({
        title: `Restore throughput, changes/s (${r.mode}, median of ${r.runs}, whiskers min-max)`,
        yLabel: 'changes/s',
        groups: r.restore.map((x) => x.workload),
        series: [
          { name: 'native logical apply (anchor)', values: r.restore.map((x) => s(summarize(x.runs.map((y) => y.native.changesPerSecond)))) },
          { name: 'cdp restore', values: r.restore.map((x) => s(summarize(x.runs.map((y) => y.ours.changesPerSecond)))) },
        ],
        note: `${r.machine.cpus} cores, ${loadWords(r)}; commit ${r.commit.slice(0, 10)}`,
      }),
    );
  }
  if (r.latency) {
    const lat = r.latency;
    const line = (name: string, f: (x: LatencyRow) => number | undefined, dashed = false) => ({
      name,
      dashed,
      points: lat.rates.flatMap((rate) => {
        const v = summarize(lat.runs.map((run) => run.find((x) => x.offered === rate)).map((x) => (x ? (f(x) ?? NaN) : NaN)));
        return v ? [{ x: rate, y: v.median, yMin: v.min, yMax: v.max }] : [];
      }),
    });
    put(
      'latency.svg',
      lineChart({
        title: 'Commit-to-durable latency against offered load',
        xLabel: 'offered transactions/s',
        yLabel: 'ms',
        series: [
          line('durable p50', (x) => (x.exact ?? x.upper)?.p50),
          line('durable p99', (x) => (x.exact ?? x.upper)?.p99),
          line('pg_recvlogical seen p50', (x) => x.anchorSeen?.p50, true),
          line('pg_recvlogical seen p99', (x) => x.anchorSeen?.p99, true),
        ],
        note: 'durable = the restorable point (what restore uses) covers the commit; median of runs, whiskers min-max',
      }),
    );
  }
  if (r.history) {
    const pts = (f: (y: RestoreResult) => number) =>
      r.history!.points.flatMap((p) => {
        const v = summarize(p.runs.map(f));
        return v ? [{ x: p.changes, y: v.median, yMin: v.min, yMax: v.max }] : [];
      });
    put(
      'history.svg',
      lineChart({
        title: 'Restore time against history since the newest base (no compaction)',
        xLabel: 'row changes since the newest base',
        yLabel: 'seconds',
        series: [
          { name: 'cdp restore replay', points: pts((y) => y.ours.replaySeconds) },
          { name: 'native logical apply', points: pts((y) => y.native.seconds), dashed: true },
        ],
        note: 'OLTP transactions of 3 changes; with `cdp compact`: compaction.svg',
      }),
    );
  }
  if (r.compaction?.points.length)
    put('compaction.svg', compactionChart(r.compaction, `${r.machine.cpus} cores, ${loadWords(r)}; commit ${r.commit.slice(0, 10)}`));
  return written;
}

/** --render DIR: writes results.md and the charts again from DIR/results.json (no measuring). */
function render(dir: string): void {
  const r = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as Results;
  const svgs = charts(r, dir);
  writeFileSync(join(dir, 'results.md'), markdown(r));
  console.log(`rendered ${join(dir, 'results.md')}, ${svgs.join(', ')}`);
}

async function main(): Promise<void> {
  if (opt('render')) return render(opt('render')!);
  loadStackEnv();
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const startedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const dir = opt('out') ?? join(REPO, 'bench/results', `${startedAt.replace(/[-:]/g, '').replace('T', '-').replace('Z', '')}-${FULL ? 'full' : 'quick'}`);
  mkdirSync(dir, { recursive: true });
  const commit = sh('git', ['-C', REPO, 'rev-parse', 'HEAD']);
  const dirty = sh('git', ['-C', REPO, 'status', '--porcelain', '--', 'src', 'bench', 'bin']).length > 0;
  const r: Results = {
    version: 1,
    mode: FULL ? 'full' : 'quick',
    runs: RUNS,
    startedAt,
    commit,
    dirty,
    machine: await machine(),
    load: { start: os.loadavg() },
    scaledDown: FULL
      ? undefined
      : `bulk ${SIZES.bulk.toLocaleString('en')} rows (ANCHORS.md: 1,000,000), OLTP ${SIZES.oltp.toLocaleString('en')} transactions, the big transaction ${SIZES.big.toLocaleString('en')} rows (not 1,000,000), TOAST ${SIZES.toast.toLocaleString('en')} rows, restore ${SIZES.restoreBulk.toLocaleString('en')} bulk rows / ${SIZES.restoreOltp.toLocaleString('en')} OLTP transactions, latency ${SIZES.latencySeconds} s per rate, compaction ${COMPACTION.steps} steps of ${COMPACTION.stepSeconds} s at ${COMPACTION.rate} tx/s. Small backlogs weigh fixed start-up costs more (Debezium especially): run --full for the ANCHORS.md sizes.`,
    capture: [],
    restore: [],
    latency: undefined,
    history: undefined,
    errors: [],
  };
  const save = () => {
    writeFileSync(join(dir, 'results.json'), JSON.stringify(r, null, 2) + '\n');
    writeFileSync(join(dir, 'results.md'), markdown(r));
  };
  // A failed measurement is retried once (the shared checkout and stack have transient trouble:
  // someone's half-saved file, a broker restart); both failures are recorded in the results.
  const attempt = async <T>(what: string, f: () => Promise<T>): Promise<T | undefined> => {
    for (let k = 1; k <= 2; k++) {
      try {
        return await f();
      } catch (e) {
        const msg = `${what}${k > 1 ? ' (retry)' : ''}: ${(e as Error).message}`;
        console.error(`[bench] FAILED ${msg}`);
        r.errors.push(msg);
      }
    }
    return undefined;
  };
  const log = (m: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${m}`);

  if (ONLY.has('capture')) {
    let readers = READERS;
    try {
      buildDebezium();
    } catch (e) {
      r.errors.push(`Debezium anchor not built, its rows are missing: ${(e as Error).message}`);
      readers = READERS.filter((x) => x !== 'debezium');
    }
    const workloads: Workload[] = [bulk(SIZES.bulk), oltp(SIZES.oltp), bigTxn(SIZES.big), toast(SIZES.toast)];
    for (const w of workloads) {
      const entry = { workload: w.name, describe: w.describe, changes: w.changes, runs: [] as CaptureRun[] };
      r.capture.push(entry);
      for (let i = 0; i < RUNS; i++) {
        // Rotate the order so that no reader always goes first (cold cache) or last.
        const order = readers.map((_, k) => readers[(k + i) % readers.length]!);
        log(`capture ${w.name} run ${i + 1}/${RUNS} (${order.join(', ')})`);
        const run = await attempt(`capture ${w.name} run ${i + 1}`, () => measureCapture(w, order));
        if (run) {
          entry.runs.push(run);
          log(
            `  ${Object.entries(run.readers)
              .map(([k, v]) => `${k} ${short(v.changesPerSecond)}/s`)
              .join(', ')}`,
          );
        }
        save();
      }
    }
  }
  if (ONLY.has('restore')) {
    for (const [workload, rows] of [
      ['bulk', SIZES.restoreBulk],
      ['oltp', SIZES.restoreOltp],
    ] as const) {
      const entry = { workload, rows, runs: [] as RestoreResult[] };
      r.restore.push(entry);
      for (let i = 0; i < RUNS; i++) {
        log(`restore ${workload} run ${i + 1}/${RUNS}`);
        const x = await attempt(`restore ${workload} run ${i + 1}`, () => restoreBench({ workload, rows }));
        if (x) {
          entry.runs.push(x);
          log(`  ours ${short(x.ours.changesPerSecond)}/s, native ${short(x.native.changesPerSecond)}/s, identical ${x.identical.ours && x.identical.native}`);
          if (!x.identical.ours || !x.identical.native)
            r.errors.push(`restore ${workload} run ${i + 1}: restored tables differ from the source (ours ${x.identical.ours}, native ${x.identical.native})`);
        }
        save();
      }
    }
  }
  if (ONLY.has('latency')) {
    r.latency = { rates: SIZES.rates, seconds: SIZES.latencySeconds, runs: [] };
    for (let i = 0; i < RUNS; i++) {
      log(`latency run ${i + 1}/${RUNS} (${SIZES.rates.join(', ')} tx/s, ${SIZES.latencySeconds} s each)`);
      const x = await attempt(`latency run ${i + 1}`, () => latencyBench({ rates: SIZES.rates, seconds: SIZES.latencySeconds }));
      if (x) r.latency.runs.push(x);
      save();
    }
  }
  if (ONLY.has('history')) {
    r.history = {
      compaction: false,
      note: 'Restore time against the length of the history since the base, without compaction (OLTP transactions of 3 changes); native apply drains the same changes from a slot. With compaction (`cdp compact`): the compaction section below.',
      points: [],
    };
    for (const t of SIZES.history) {
      const p = { transactions: t, changes: 3 * t, runs: [] as RestoreResult[] };
      r.history.points.push(p);
      // The OLTP restore measurement above is this point already: its runs are reused.
      const same = r.restore.find((x) => x.workload === 'oltp' && x.rows === t && x.runs.length > 0);
      if (same) {
        p.runs.push(...same.runs);
        continue;
      }
      for (let i = 0; i < RUNS; i++) {
        log(`history ${t} transactions run ${i + 1}/${RUNS}`);
        const x = await attempt(`history ${t} run ${i + 1}`, () => restoreBench({ workload: 'oltp', rows: t }));
        if (x) p.runs.push(x);
        save();
      }
    }
  }
  if (ONLY.has('compaction')) {
    // One run, not RUNS: each step is already a restore of a longer history, and a run takes minutes.
    r.compaction = { ...COMPACTION, note: compactionNote(COMPACTION), points: [] };
    log(`compaction: ${COMPACTION.steps} steps of ${COMPACTION.stepSeconds} s at ${COMPACTION.rate} tx/s`);
    const points = await attempt('compaction', () => compactBench({ ...COMPACTION, log }));
    if (points) r.compaction.points = points;
    save();
  }
  r.finishedAt = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  r.durationSeconds = Math.round((Date.parse(r.finishedAt) - Date.parse(r.startedAt)) / 1000);
  r.load.end = os.loadavg();
  save();
  const svgs = charts(r, dir);
  writeFileSync(join(dir, 'results.md'), markdown(r));
  console.log(markdown(r));
  console.log(`\nresults: ${join(dir, 'results.json')}, results.md, ${svgs.join(', ')}`);
  const mismatch = r.errors.some((e) => e.includes('differ from the source'));
  if (mismatch) process.exitCode = 3;
  void dbUrl;
}

await main();
process.exit(process.exitCode ?? 0);
