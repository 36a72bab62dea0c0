// TEST-ONLY fault injection. Integration tests set CDP_FAULT to kill the archiver at exact points
// of the upload/commit sequence, to prove G1 (a crash at any point loses nothing). Never set it in
// production: the process SIGKILLs itself.
//
//   CDP_FAULT=crash-after-upload:N   SIGKILL right after the N-th segment is stored on S3, before
//                                    its state pointer update and its Kafka offset commit
//   CDP_FAULT=crash-after-commit:N   SIGKILL right after the N-th offset commit
//
// Several faults may be given, comma-separated.

const counters = new Map<string, number>();
let parsed: Map<string, number> | undefined;

function faults(): Map<string, number> {
  if (!parsed) {
    parsed = new Map();
    for (const part of (process.env.CDP_FAULT ?? '').split(',')) {
      const m = /^\s*([a-z-]+):(\d+)\s*$/.exec(part);
      if (m) parsed.set(m[1]!, Number(m[2]));
    }
  }
  return parsed;
}

export function faultPoint(name: string): void {
  const at = faults().get(name);
  if (at === undefined) return;
  const n = (counters.get(name) ?? 0) + 1;
  counters.set(name, n);
  if (n === at) {
    process.stderr.write(`cdp: CDP_FAULT ${name}:${at} reached, killing this process (test-only fault injection)\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}
