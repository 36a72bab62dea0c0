import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { REPO, runCli, stackEnvironment, startRun, waitFor } from '../restore/helpers.js';
import { stopDaemon, usePipelineDatabase } from './pipeline.js';

// Issue 14, metrics deployment-ready: the alert rules (deploy/prometheus/alerts.yml) pass
// `promtool check rules` and their own `promtool test rules`; every cdp_* metric that a rule or
// the Grafana dashboard (deploy/grafana/katya-cdp.json) names is one a real `cdp run` exports on
// /metrics, and its series carry the database and slot labels.

const ALERTS = `${REPO}deploy/prometheus/alerts.yml`;
const DASHBOARD = `${REPO}deploy/grafana/katya-cdp.json`;

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels: { severity: string };
  annotations: { summary: string; description: string };
}

/** cdp_* metric names an expression uses, histogram suffixes removed. */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\b(cdp_[a-z0-9_]+)/g)].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, ''));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const rules = (parseYaml(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ name: string; rules: Rule[] }> }).groups.flatMap((g) => g.rules);
const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
  panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
  templating: { list: Array<{ query: { query: string } }> };
};

describe('alert rules and dashboard', () => {
  it('every rule has a name, an expression, a severity and words for the operator; the issue asks for these alerts', () => {
    for (const r of rules) {
      expect(r.alert, JSON.stringify(r)).toMatch(/^Cdp[A-Za-z]+$/);
      expect(r.expr.length).toBeGreaterThan(0);
      expect(['critical', 'warning']).toContain(r.labels.severity);
      expect(r.annotations.summary.length).toBeGreaterThan(10);
      expect(r.annotations.description.length).toBeGreaterThan(10);
    }
    const names = rules.map((r) => r.alert);
    for (const want of ['CdpRpoBreached', 'CdpDaemonDown', 'CdpArchiveLag', 'CdpBaseTooOld', 'CdpSlotWalRetained', 'CdpArchiveGap'])
      expect(names).toContain(want);
  });

  const promtool = process.env.CDP_PROMTOOL ?? stackEnvironment().CDP_STACK_PROMTOOL;
  it.skipIf(!promtool || !existsSync(promtool))('promtool check rules and promtool test rules pass', () => {
    const check = execFileSync(promtool!, ['check', 'rules', ALERTS], { encoding: 'utf8' });
    expect(check).toMatch(/SUCCESS: \d+ rules found/);
    const test = execFileSync(promtool!, ['test', 'rules', 'alerts.test.yml'], { encoding: 'utf8', cwd: `${REPO}deploy/prometheus` });
    expect(test).toMatch(/SUCCESS/);
  });
});

describe('the metrics a real daemon exports', () => {
  const db = usePipelineDatabase({ label: 'mon', prefix: 'test-monitoring', schema: 'CREATE TABLE t (id int PRIMARY KEY)' });
  const name = db.name;
  let port: number;

  it('names every metric the rules and the dashboard use, with database and slot labels', async () => {
    expect((await runCli(['setup'], db.env)).code).toBe(0);
    port = await freePort();
    const run = (db.run = startRun({ ...db.env, CDP_METRICS_PORT: String(port) }));
    const text = await waitFor(
      'the restorable point and the base age on /metrics',
      async () => {
        const r = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined);
        if (!r?.ok) return undefined;
        const t = await r.text();
        return /^cdp_archive_restorable_point_age_seconds\{/m.test(t) &&
          /^cdp_basebackup_newest_age_seconds\{/m.test(t) &&
          /^cdp_source_slot_retained_wal_bytes\{/m.test(t)
          ? t
          : undefined;
      },
      120_000,
      1_000,
    );
    const exported = new Set([...text.matchAll(/^# TYPE (cdp_[a-z0-9_]+) /gm)].map((m) => m[1]!));
    const used = new Map<string, string>();
    for (const r of rules) for (const n of metricNames(r.expr)) used.set(n, `alert ${r.alert}`);
    for (const p of dashboard.panels) for (const t of p.targets) for (const n of metricNames(t.expr)) used.set(n, `panel ${p.title}`);
    for (const v of dashboard.templating.list) for (const n of metricNames(v.query.query)) used.set(n, 'dashboard variable');
    expect(used.size).toBeGreaterThan(8);
    const missing = [...used].filter(([n]) => !exported.has(n)).map(([n, where]) => `${n} (${where})`);
    expect(missing, `exported: ${[...exported].join(', ')}`).toEqual([]);
    // Labels: the database and the slot on every cdp_ sample line.
    const samples = text.split('\n').filter((l) => l.startsWith('cdp_'));
    expect(samples.length).toBeGreaterThan(20);
    for (const l of samples) expect(l, l).toMatch(new RegExp(`database="${name}".*slot="${name}"|slot="${name}".*database="${name}"`));
    const age = Number(/^cdp_basebackup_newest_age_seconds\{[^}]*\} (\S+)$/m.exec(text)![1]);
    expect(age).toBeGreaterThanOrEqual(0);
    expect(age).toBeLessThan(600);
    await stopDaemon(run);
  }, 300_000);
});
