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
//   CDP_TEST_FAULTS=restore-base-delay-ms:N  restore waits N ms between the base's download and
//                                            pg_restore (a base slow to arrive: a segment failing
//                                            meanwhile must keep pg_restore from running)
//   CDP_TEST_FAULTS=compact-pause:STEP       cdp compact stops at STEP (restored, dumped, checked,
//                                            uploaded, read-back), logging "compact: paused for a
//                                            test", until it is killed (the compaction crash tests)
//
// Several hooks may be given, comma-separated.

export const TEST_FAULTS_VARIABLE = 'CDP_TEST_FAULTS';

/** Hooks that take a number. */
export type NumericFaultName = 'crash-after-upload' | 'crash-after-commit' | 'restore-group-delay-ms' | 'restore-base-delay-ms';
export type FaultName = NumericFaultName | 'compact-pause';
const NUMERIC: readonly NumericFaultName[] = ['crash-after-upload', 'crash-after-commit', 'restore-group-delay-ms', 'restore-base-delay-ms'];

/** Where `compact-pause:STEP` can stop cdp compact, in the order it reaches them. */
export const COMPACT_PAUSE_STEPS = ['restored', 'dumped', 'checked', 'uploaded', 'read-back'] as const;
export type CompactPauseStep = (typeof COMPACT_PAUSE_STEPS)[number];

const EXPECTED = [...NUMERIC.map((n) => `${n}:N`), `compact-pause:${COMPACT_PAUSE_STEPS.join('|')}`].join(', ');

let parsed: Map<FaultName, number | string> | undefined;
const counters = new Map<FaultName, number>();

/** Parses CDP_TEST_FAULTS of `env`; refuses it outside the test suite and refuses unknown hooks. */
export function parseTestFaults(env: NodeJS.ProcessEnv): Map<FaultName, number | string> {
  const out = new Map<FaultName, number | string>();
  const raw = env[TEST_FAULTS_VARIABLE];
  if (!raw) return out;
  if (!env.VITEST && env.NODE_ENV !== 'test') {
    throw new ConfigError(`is a test-only hook and is refused outside the test suite: unset it`, TEST_FAULTS_VARIABLE);
  }
  for (const part of raw.split(',')) {
    const m = /^\s*([a-z-]+):([a-z0-9-]+)\s*$/.exec(part);
    if (m && NUMERIC.includes(m[1] as NumericFaultName) && /^\d+$/.test(m[2]!)) out.set(m[1] as NumericFaultName, Number(m[2]));
    else if (m && m[1] === 'compact-pause' && (COMPACT_PAUSE_STEPS as readonly string[]).includes(m[2]!)) out.set('compact-pause', m[2]!);
    else throw new ConfigError(`unknown hook ${JSON.stringify(part.trim())}: expected one of ${EXPECTED}`, TEST_FAULTS_VARIABLE);
  }
  return out;
}

function faults(): Map<FaultName, number | string> {
  parsed ??= parseTestFaults(process.env);
  return parsed;
}

/** The number given to a hook (restore-group-delay-ms), or undefined when the hook is not set. */
export function faultValue(name: NumericFaultName): number | undefined {
  const v = faults().get(name);
  return typeof v === 'number' ? v : undefined;
}

/** True when `compact-pause:STEP` names this step. */
export function compactPauseAt(step: CompactPauseStep): boolean {
  return faults().get('compact-pause') === step;
}

/** A crash point: the N-th time it is reached with `name:N` set, the process SIGKILLs itself. */
export function faultPoint(name: NumericFaultName): void {
  const at = faults().get(name);
  if (typeof at !== 'number') return;
  const n = (counters.get(name) ?? 0) + 1;
  counters.set(name, n);
  if (n === at) {
    process.stderr.write(`cdp: ${TEST_FAULTS_VARIABLE} ${name}:${at} reached, killing this process (test-only fault injection)\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}
