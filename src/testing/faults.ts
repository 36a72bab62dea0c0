import { ConfigError } from '../errors.js';

// TEST-ONLY hooks, behind one variable: CDP_TEST_FAULTS. The integration tests use them to stop or
// slow the engine at exact points; nothing else reads the environment for them. The variable is
// refused (exit 2) unless the process runs under the test suite (VITEST, which vitest sets and the
// tests' child processes inherit, or NODE_ENV=test), so that a production process never runs with
// one by accident.
//
//   CDP_TEST_FAULTS=crash-after-upload:N     SIGKILL right after the N-th segment is stored on S3,
//                                            before its state pointer update and its Kafka offset
//                                            commit (the archiver's G1 tests)
//   CDP_TEST_FAULTS=crash-after-commit:N     SIGKILL right after the N-th offset commit
//   CDP_TEST_FAULTS=restore-group-delay-ms:N restore waits N ms after each target commit, so that
//                                            the resume tests can interrupt it mid-way on a fast
//                                            machine
//
// Several hooks may be given, comma-separated.

export const TEST_FAULTS_VARIABLE = 'CDP_TEST_FAULTS';

export type FaultName = 'crash-after-upload' | 'crash-after-commit' | 'restore-group-delay-ms';
const NAMES: readonly FaultName[] = ['crash-after-upload', 'crash-after-commit', 'restore-group-delay-ms'];

let parsed: Map<FaultName, number> | undefined;
const counters = new Map<FaultName, number>();

/** Parses CDP_TEST_FAULTS of `env`; refuses it outside the test suite and refuses unknown hooks. */
export function parseTestFaults(env: NodeJS.ProcessEnv): Map<FaultName, number> {
  const out = new Map<FaultName, number>();
  const raw = env[TEST_FAULTS_VARIABLE];
  if (!raw) return out;
  if (!env.VITEST && env.NODE_ENV !== 'test') {
    throw new ConfigError(`is a test-only hook and is refused outside the test suite: unset it`, TEST_FAULTS_VARIABLE);
  }
  for (const part of raw.split(',')) {
    const m = /^\s*([a-z-]+):(\d+)\s*$/.exec(part);
    if (!m || !NAMES.includes(m[1] as FaultName)) {
      throw new ConfigError(`unknown hook ${JSON.stringify(part.trim())}: expected one of ${NAMES.map((n) => `${n}:N`).join(', ')}`, TEST_FAULTS_VARIABLE);
    }
    out.set(m[1] as FaultName, Number(m[2]));
  }
  return out;
}

function faults(): Map<FaultName, number> {
  parsed ??= parseTestFaults(process.env);
  return parsed;
}

/** The number given to a hook (restore-group-delay-ms), or undefined when the hook is not set. */
export function faultValue(name: FaultName): number | undefined {
  return faults().get(name);
}

/** A crash point: the N-th time it is reached with `name:N` set, the process SIGKILLs itself. */
export function faultPoint(name: FaultName): void {
  const at = faults().get(name);
  if (at === undefined) return;
  const n = (counters.get(name) ?? 0) + 1;
  counters.set(name, n);
  if (n === at) {
    process.stderr.write(`cdp: ${TEST_FAULTS_VARIABLE} ${name}:${at} reached, killing this process (test-only fault injection)\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}
