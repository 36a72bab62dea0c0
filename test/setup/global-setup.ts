// Vitest global setup for the integration project (referenced from vitest.config.ts).
//
// Brings up the real local stack (DESIGN.md section 7) before any integration test runs:
// PostgreSQL with wal_level=logical, a Kafka KRaft broker and S3Proxy, all on loopback, through
// `deploy/local/stack.sh up` (idempotent: about 2 s when everything already runs, minutes on a cold
// machine that must first fetch the Kafka and S3Proxy jars from Maven Central). Then it copies the
// `export` lines of `stack.sh env` into process.env, which the test workers inherit.
//
// The stack is left running afterwards on purpose: the next run, the demo and the other engineers
// reuse it. Stop it with `bash deploy/local/stack.sh down`.
//
// CDP_SKIP_STACK=1 skips all of this; the tests then use whatever CDP_* / AWS_* variables the
// environment already holds (e.g. the docker-compose stack, or services started by hand).
import { execFileSync, spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseStackExports } from '../support/stack.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const stackScript = resolve(repoRoot, 'deploy', 'local', 'stack.sh');

// A cold machine downloads ~190 jars and starts two JVMs on 2 shared cores.
const UP_TIMEOUT_MS = 15 * 60 * 1000;

export default function setup(): void {
  bringUp([]);
}

/**
 * `stack.sh up <extra>` and its `env <extra>` into process.env. The `majors` project passes
 * `--pg 16,17,18` (test/setup/majors-setup.ts), which also starts the extra PostgreSQL clusters and
 * exports CDP_STACK_PG<major>_URL / _BIN.
 */
export function bringUp(extra: string[]): void {
  if (process.env.CDP_SKIP_STACK === '1') {
    console.log('[global-setup] CDP_SKIP_STACK=1: not starting deploy/local; using the environment as is');
    return;
  }
  const started = Date.now();
  // Inherited stdio: the stack's progress and, above all, its error messages (which name the log
  // file to read) appear in the test output.
  const up = spawnSync('bash', [stackScript, 'up', ...extra], {
    cwd: repoRoot,
    stdio: 'inherit',
    timeout: UP_TIMEOUT_MS,
  });
  if (up.error) {
    throw new Error(`[global-setup] could not run ${stackScript} up: ${up.error.message}`);
  }
  if (up.status !== 0) {
    throw new Error(
      `[global-setup] '${stackScript} up ${extra.join(' ')}' failed (exit ${up.status ?? up.signal}); its messages above say ` +
        `which service and which log file. Fix it, or set CDP_SKIP_STACK=1 to use services of your own.`,
    );
  }
  const exports = parseStackExports(execFileSync('bash', [stackScript, 'env', ...extra], { cwd: repoRoot, encoding: 'utf8' }));
  // The stack we just brought up wins over stray values (e.g. real AWS keys in a developer's shell):
  // the integration tests must talk to the loopback services, never to anything else.
  Object.assign(process.env, exports);
  console.log(
    `[global-setup] local stack ready in ${((Date.now() - started) / 1000).toFixed(1)}s: ` +
      Object.keys(exports)
        .filter((k) => k.startsWith('CDP_'))
        .map((k) => `${k}=${exports[k]}`)
        .join(' '),
  );
}
