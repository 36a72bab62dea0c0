// A small SVG writer for the benchmark charts (no chart library): grouped bars with min-max
// whiskers, and lines with points. Pure string building; the harness writes the files.

const W = 760;
const FONT = 'font-family="sans-serif" font-size="12"';
const COLORS = ['#2b6cb0', '#c05621', '#2f855a', '#6b46c1', '#b83280', '#718096'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least max. */
export function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

function fmtTick(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

export interface BarSeries {
  name: string;
  /** One value per group (undefined: no bar). */
  values: Array<{ median: number; min: number; max: number } | undefined>;
}

/** Grouped vertical bars (median) with a min-max whisker on each. */
export function barChart(opts: { title: string; yLabel: string; groups: string[]; series: BarSeries[]; note?: string }): string {
  const H = 420;
  const m = { l: 70, r: 20, t: 40, b: 90 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const all = opts.series.flatMap((s) => s.values.filter((v) => v).map((v) => v!.max));
  const ymax = niceMax(Math.max(0, ...all));
  const y = (v: number) => m.t + ph - (v / ymax) * ph;
  const gw = pw / Math.max(1, opts.groups.length);
  const bw = Math.min(40, (gw * 0.8) / Math.max(1, opts.series.length));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT}>`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (ymax * i) / 5;
    out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y(v)}" y2="${y(v)}" stroke="#e2e8f0"/>`);
    out.push(`<text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${fmtTick(v)}</text>`);
  }
  out.push(`<text transform="translate(16 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`);
  opts.groups.forEach((g, gi) => {
    const x0 = m.l + gi * gw + (gw - bw * opts.series.length) / 2;
    opts.series.forEach((s, si) => {
      const v = s.values[gi];
      if (!v) return;
      const x = x0 + si * bw;
      out.push(
        `<rect x="${x + 2}" y="${y(v.median)}" width="${bw - 4}" height="${m.t + ph - y(v.median)}" fill="${COLORS[si % COLORS.length]}"><title>${esc(`${s.name}, ${g}: median ${fmtTick(v.median)} (min ${fmtTick(v.min)}, max ${fmtTick(v.max)})`)}</title></rect>`,
      );
      const cx = x + bw / 2;
      out.push(`<line x1="${cx}" x2="${cx}" y1="${y(v.max)}" y2="${y(v.min)}" stroke="black"/>`);
      out.push(`<line x1="${cx - 5}" x2="${cx + 5}" y1="${y(v.max)}" y2="${y(v.max)}" stroke="black"/>`);
      out.push(`<line x1="${cx - 5}" x2="${cx + 5}" y1="${y(v.min)}" y2="${y(v.min)}" stroke="black"/>`);
    });
    out.push(`<text x="${m.l + gi * gw + gw / 2}" y="${m.t + ph + 18}" text-anchor="middle">${esc(g)}</text>`);
  });
  out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${m.t + ph}" y2="${m.t + ph}" stroke="black"/>`);
  legend(
    out,
    opts.series.map((s) => s.name),
    m.l,
    H - 45,
  );
  if (opts.note) out.push(`<text x="${m.l}" y="${H - 10}" fill="#4a5568" font-size="11">${esc(opts.note)}</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export interface LineSeries {
  name: string;
  points: Array<{ x: number; y: number; yMin?: number; yMax?: number }>;
  dashed?: boolean;
}

/** Lines with points (and optional min-max whiskers) on linear axes from 0. */
export function lineChart(opts: { title: string; xLabel: string; yLabel: string; series: LineSeries[]; note?: string }): string {
  const H = 420;
  const m = { l: 70, r: 20, t: 40, b: 90 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const pts = opts.series.flatMap((s) => s.points);
  const xmax = niceMax(Math.max(0, ...pts.map((p) => p.x)));
  const ymax = niceMax(Math.max(0, ...pts.map((p) => p.yMax ?? p.y)));
  const x = (v: number) => m.l + (v / xmax) * pw;
  const y = (v: number) => m.t + ph - (v / ymax) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT}>`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (ymax * i) / 5;
    out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y(v)}" y2="${y(v)}" stroke="#e2e8f0"/>`);
    out.push(`<text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end">${fmtTick(v)}</text>`);
    const xv = (xmax * i) / 5;
    out.push(`<text x="${x(xv)}" y="${m.t + ph + 18}" text-anchor="middle">${fmtTick(xv)}</text>`);
  }
  out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${m.t + ph}" y2="${m.t + ph}" stroke="black"/>`);
  out.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${m.t + ph}" stroke="black"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="${m.t + ph + 36}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  out.push(`<text transform="translate(16 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`);
  opts.series.forEach((s, si) => {
    const c = COLORS[si % COLORS.length];
    const sorted = [...s.points].sort((a, b) => a.x - b.x);
    if (sorted.length > 1) {
      out.push(
        `<polyline fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${sorted.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(' ')}"/>`,
      );
    }
    for (const p of sorted) {
      if (p.yMin !== undefined && p.yMax !== undefined) {
        out.push(`<line x1="${x(p.x)}" x2="${x(p.x)}" y1="${y(p.yMax)}" y2="${y(p.yMin)}" stroke="${c}"/>`);
      }
      out.push(
        `<circle cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="3.5" fill="${c}"><title>${esc(`${s.name}: x ${fmtTick(p.x)}, y ${fmtTick(p.y)}`)}</title></circle>`,
      );
    }
  });
  legend(
    out,
    opts.series.map((s) => s.name),
    m.l,
    H - 35,
  );
  if (opts.note) out.push(`<text x="${m.l}" y="${H - 10}" fill="#4a5568" font-size="11">${esc(opts.note)}</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function legend(out: string[], names: string[], x0: number, yy: number): void {
  let x = x0;
  names.forEach((n, i) => {
    out.push(`<rect x="${x}" y="${yy - 10}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${x + 16}" y="${yy}">${esc(n)}</text>`);
    x += 26 + n.length * 7;
  });
}
