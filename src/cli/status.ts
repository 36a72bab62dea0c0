import { ExitCode } from '../errors.js';
import type { StatusReport } from '../ops/status.js';

// `cdp status` as the user sees it: the report of src/ops/status.ts printed as text or JSON, and
// its exit code (DESIGN.md section 6) with --check: 3 for records Kafka deleted before the archive
// read them or a break no base covers, 4 for a missed RPO or RTO objective; and always 2 for a
// component that rejected us, 1 for one that did not answer.

/** Prints the report (text or JSON) on stdout, the reasons for a non-zero exit on stderr; returns the exit code. */
export function reportStatus(report: StatusReport, opts: { json: boolean; check: boolean }): number {
  if (opts.json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  } else {
    const lines = [
      `database            ${report.database}`,
      `restorable point    ${report.restorablePoint ? `${report.restorablePoint.lsn} at ${report.restorablePoint.time}` : 'none yet (no archived watermark in every partition)'}`,
      `RPO                 ${report.rpoSeconds === null ? 'unknown' : `${report.rpoSeconds} s`} (objective ${report.rpoObjectiveSeconds} s${report.rpoBreached ? ', BREACHED' : ''})`,
      `RTO (estimated)     ${report.rto === null ? 'unknown' : `${report.rto.estimateSeconds} s: base ${report.rto.baseBytes} bytes + ${report.rto.segments} segments, ${report.rto.segmentBytes} bytes (objective ${report.rto.objectiveSeconds} s${report.rto.breached ? ', MISSED' : ''})`}`,
      `slot                ${'error' in report.slot ? report.slot.error : `${report.slot.name} ${report.slot.active ? 'active' : 'INACTIVE'}, confirmed ${report.slot.confirmedFlushLsn}, lag ${report.slot.lagBytes} bytes`}`,
      `archive consumer    ${'error' in report.consumer ? report.consumer.error : `${report.consumer.groupId}, lag ${report.consumer.lag} records`}`,
      `bases               ${'error' in report.bases ? report.bases.error : report.bases.length === 0 ? 'none: run cdp basebackup' : report.bases.map((b) => `${b.lsn} (${b.time})`).join(', ')}`,
      ...report.gaps.map((g) => `${g.covered ? 'break (covered)    ' : 'GAP (uncovered)    '} ${g.description}`),
      ...report.ddlReplayRisks.map(
        (d) =>
          `DDL replay risk     ${d.tag ?? 'DDL'} xid ${d.xid} at ${d.commitLsn}#${d.position} (${d.commitTime}): ${d.risk}; restores past it stop there unless given --ddl-override`,
      ),
      ...report.errors.map((e) => `error               ${e}`),
    ];
    process.stdout.write(lines.join('\n') + '\n');
  }
  // A gap no base covers comes first: points after it are not restorable at all (exit 3, integrity).
  const uncovered = report.gaps.filter((g) => !g.covered);
  if (opts.check && !('error' in report.consumer) && report.consumer.lost > 0) {
    const parts = report.consumer.partitions.filter((p) => p.lost > 0).map((p) => `partition ${p.partition} offsets ${p.committed}..${BigInt(p.low) - 1n}`);
    process.stderr.write(
      `cdp status: Kafka deleted ${report.consumer.lost} record(s) before the archive read them (${parts.join(', ')}; retention shorter than the archiver outage?): a gap in the archive, recorded when the archiver resumes\n`,
    );
    return ExitCode.integrity;
  }
  if (opts.check && uncovered.length > 0) {
    process.stderr.write(
      `cdp status: the archive has ${uncovered.length} break(s) in its chain of custody that no base covers: ${uncovered.map((g) => g.description).join('; ')}; take a base (cdp basebackup) to restore points after it\n`,
    );
    return ExitCode.integrity;
  }
  // A component that does not answer: exit 2 when it rejected us (cannot fix itself), else 1. An
  // unreadable archive leaves the RPO unknown (1, not 4); a down source or Kafka does not hide a
  // breach the archive shows (4 with --check).
  const config = report.unreachable.filter((u) => u.kind === 'config');
  if (report.unreachable.length > 0) {
    process.stderr.write(`cdp status: ${report.unreachable.map((u) => `${u.component} unreachable: ${u.message}`).join('; ')}\n`);
  }
  if (config.length > 0) return ExitCode.usage;
  if (report.unreachable.some((u) => u.component === 's3')) return ExitCode.failure;
  if (opts.check && report.rpoBreached) return ExitCode.rpoBreached;
  if (opts.check && report.rto?.breached) {
    process.stderr.write(
      `cdp status: restoring the restorable point is estimated at ${report.rto.estimateSeconds} s, over the RTO objective of ${report.rto.objectiveSeconds} s: take a base (cdp basebackup) to shorten the replay\n`,
    );
    return ExitCode.rpoBreached;
  }
  if (report.unreachable.length > 0) return ExitCode.failure;
  return ExitCode.ok;
}
