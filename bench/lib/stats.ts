// Summaries of repeated benchmark measurements (pure: unit-tested, times nothing).

export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
}

/** Median, min and max of the finite values; undefined when there are none. */
export function summarize(values: readonly number[]): Summary | undefined {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { n: v.length, median, min: v[0]!, max: v[v.length - 1]! };
}

/** "123k" / "1.2M" / "950" for rates. */
export function short(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (Math.abs(n) >= 1e4) return `${Math.round(n / 1e3)}k`;
  if (Math.abs(n) >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return n >= 100 ? String(Math.round(n)) : n.toFixed(n >= 10 ? 1 : 2);
}

/** "median (min-max)" of a summary, each through fmt. */
export function spread(s: Summary | undefined, fmt: (n: number) => string = short): string {
  if (!s) return '-';
  return s.n === 1 ? fmt(s.median) : `${fmt(s.median)} (${fmt(s.min)}-${fmt(s.max)})`;
}

/** Ratios a/b of paired runs (same run index), summarized: the ratio is taken inside each run. */
export function pairedRatio(a: readonly number[], b: readonly number[]): Summary | undefined {
  const r: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (Number.isFinite(a[i]) && Number.isFinite(b[i]) && b[i]! > 0) r.push(a[i]! / b[i]!);
  return summarize(r);
}
