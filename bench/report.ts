// Rewrites the README's "Measured" table from a results file of bench/harness.ts (the section
// between the measured:start/end markers), so that the README's figures are never typed by hand.
// The rows (bench/lib/measured.ts): capture, restore, commit-to-durable latency, restore vs history
// and, from results that have it, restore of the latest point with and without `cdp compact`
// (bench/lib/compaction.ts; its chart compaction.svg is linked beside the others).
//
//   npx tsx bench/report.ts [bench/results/<dir>[/results.json]]   (default: the newest results dir)
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { REPO } from './lib/env.js';
import { renderMeasured, replaceMeasured } from './lib/measured.js';

function newest(): string {
  const base = join(REPO, 'bench/results');
  const dirs = existsSync(base) ? readdirSync(base).filter((d) => existsSync(join(base, d, 'results.json'))) : [];
  if (!dirs.length) throw new Error('no bench/results/*/results.json: run `npm run bench` first');
  dirs.sort((a, b) => statSync(join(base, a, 'results.json')).mtimeMs - statSync(join(base, b, 'results.json')).mtimeMs);
  return join(base, dirs[dirs.length - 1]!, 'results.json');
}

let file = process.argv[2] ?? newest();
if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'results.json');
const results = JSON.parse(readFileSync(file, 'utf8'));
const rel = relative(REPO, file);
const readmePath = join(REPO, 'README.md');
writeFileSync(readmePath, replaceMeasured(readFileSync(readmePath, 'utf8'), renderMeasured(results, rel)));
console.log(`README.md Measured section rewritten from ${rel}`);
