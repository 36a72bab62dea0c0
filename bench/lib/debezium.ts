// The Debezium anchor: builds bench/debezium (Maven, versions pinned in its pom) once and runs
// DebeziumDrain against a slot. See bench/debezium/src/main/java/dev/katya/cdp/bench/DebeziumDrain.java.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { REPO } from './env.js';

const DIR = `${REPO}bench/debezium`;
const CLASS = `${DIR}/target/classes/dev/katya/cdp/bench/DebeziumDrain.class`;

/** The Debezium version the pom pins (for the results). */
export function debeziumVersion(): string {
  return /<debezium\.version>([^<]+)</.exec(readFileSync(`${DIR}/pom.xml`, 'utf8'))?.[1] ?? '?';
}

/** Builds the drain program if needed; throws with Maven's last lines when it fails. */
export function buildDebezium(): void {
  const src = `${DIR}/src/main/java/dev/katya/cdp/bench/DebeziumDrain.java`;
  const fresh =
    existsSync(CLASS) &&
    existsSync(`${DIR}/target/lib/.complete`) &&
    statSync(CLASS).mtimeMs >= Math.max(statSync(src).mtimeMs, statSync(`${DIR}/pom.xml`).mtimeMs);
  if (fresh) return;
  console.error('[bench] building the Debezium anchor (Maven; the first build downloads Debezium 3.6 from Maven Central)');
  const r = spawnSync('mvn', ['-B', '-q', '-Dstyle.color=never', '-f', `${DIR}/pom.xml`, 'compile', 'dependency:copy-dependencies'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building bench/debezium failed (mvn exit ${r.status}): ${(r.stdout + r.stderr).split('\n').slice(-15).join('\n')}`);
  spawnSync('touch', [`${DIR}/target/lib/.complete`]);
}

export interface DebeziumResult {
  changes: number;
  /** Task started (connected, slot opened) to the last expected change. */
  seconds: number;
  firstToLastSeconds: number;
  startupSeconds: number;
  jsonBytes: number;
  error?: string;
}

export function runDebezium(o: { url: string; slot: string; publication: string; changes: number; timeoutS: number }): Promise<DebeziumResult> {
  const u = new URL(o.url);
  const args = [
    '-Xmx1g',
    '-Dorg.slf4j.simpleLogger.defaultLogLevel=error',
    '-cp',
    `${DIR}/target/classes:${DIR}/target/lib/*`,
    'dev.katya.cdp.bench.DebeziumDrain',
    u.hostname,
    u.port || '5432',
    u.pathname.slice(1),
    decodeURIComponent(u.username) || 'postgres',
    o.slot,
    o.publication,
    String(o.changes),
    String(o.timeoutS),
  ];
  return new Promise((resolve, reject) => {
    const p = spawn('java', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PGPASSWORD: decodeURIComponent(u.password) } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    p.on('error', reject);
    p.on('close', (code) => {
      const line = out.trim().split('\n').at(-1) ?? '';
      try {
        const r = JSON.parse(line) as DebeziumResult;
        if (code !== 0) reject(new Error(`Debezium drain exited ${code}: ${r.error ?? `saw ${r.changes} of ${o.changes} changes`}\n${err.slice(-1500)}`));
        else resolve(r);
      } catch {
        reject(new Error(`Debezium drain exited ${code} without a result: ${err.slice(-1500)}`));
      }
    });
  });
}
