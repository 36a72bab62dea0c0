import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

// The layers run one way: cli -> commands (ops) -> the pipeline's parts (capture,
// base, restore, over archive) -> pg / kafka / s3 / the change-event format -> config and context ->
// util. A module may import from its own folder or from a folder of a lower layer, never from a
// layer above it nor from a sibling folder of its own layer. And only src/cli prints results or
// decides exit codes: the library returns results and throws CdpErrors.
//
// Read from the source text, not from a bundler: every `from '...'` (import and export) and every
// `import('...')` with a relative path.

const SRC = join(dirname(new URL(import.meta.url).pathname), '../../../src');

/** Lowest first. A folder of src/ (or a file at its root) that is not listed fails the test. */
const LAYERS: string[][] = [
  ['errors.ts'],
  ['util', 'testing'],
  ['config'],
  ['context.ts'],
  ['format'],
  ['pg', 'kafka', 's3'],
  ['archive'],
  ['capture', 'base'],
  ['restore'],
  ['compact'],
  ['ops'],
  ['cli'],
];

/**
 * Imports that break the rule today, each with its reason (`from` is a file or a folder ending in
 * /). Remove an entry once its import is gone: the list should only shrink.
 */
const KNOWN: Array<{ from: string; to: string; why: string }> = [];

/** Files outside src/cli that print or pick exit codes today, with the reason. Same rule: only shrinks. */
const KNOWN_PRINTS: Array<{ file: string; why: string }> = [
  { file: 'errors.ts', why: 'the table from error codes to the exit codes the CLI uses (CdpError.exitCode)' },
  { file: 'util/log.ts', why: 'the logger writes to stderr, by design' },
];

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return walk(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

const files = walk(SRC).map((f) => relative(SRC, f).split('\\').join('/'));

function unitOf(file: string): string {
  return file.includes('/') ? file.split('/')[0]! : file;
}

function rankOf(file: string): number {
  const u = unitOf(file);
  return LAYERS.findIndex((l) => l.includes(u));
}

function importsOf(file: string): string[] {
  const text = readFileSync(join(SRC, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*)'(\.{1,2}\/[^']+)'/g)) {
    out.push(posix.normalize(posix.join(posix.dirname(file), m[1]!)).replace(/\.js$/, '.ts'));
  }
  return out;
}

describe('layering of src/', () => {
  it('places every folder of src/ in a layer', () => {
    const unplaced = [...new Set(files.map(unitOf))].filter((u) => rankOf(u.includes('.') ? u : `${u}/x`) < 0);
    expect(unplaced, 'add these to LAYERS in test/unit/layers/layering.test.ts').toEqual([]);
  });

  it('imports only from the same folder or a lower layer', () => {
    const bad: string[] = [];
    for (const f of files) {
      for (const t of importsOf(f)) {
        if (unitOf(f) === unitOf(t)) continue;
        const ok = rankOf(t) >= 0 && rankOf(t) < rankOf(f);
        if (ok) continue;
        const known = KNOWN.some((x) => (x.from.endsWith('/') ? f.startsWith(x.from) : x.from === f) && x.to === t);
        if (!known) bad.push(`${f} -> ${t} (layer ${rankOf(f)} -> ${rankOf(t)})`);
      }
    }
    expect(bad, 'imports against the layers (LAYERS in test/unit/layers/layering.test.ts)').toEqual([]);
  });

  it('prints and exits only in src/cli', () => {
    const bad: string[] = [];
    for (const f of files) {
      if (unitOf(f) === 'cli' || unitOf(f) === 'testing' || KNOWN_PRINTS.some((k) => k.file === f)) continue;
      readFileSync(join(SRC, f), 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (/^\s*(\/\/|\*)/.test(line)) return;
          if (/process\.(stdout|stderr)\.write|console\.(log|error|warn|info)|process\.exit\b|process\.exitCode|\bExitCode\./.test(line))
            bad.push(`${f}:${i + 1}: ${line.trim()}`);
        });
    }
    expect(bad, 'return the result or throw a CdpError; src/cli prints it and picks the exit code').toEqual([]);
  });
});
