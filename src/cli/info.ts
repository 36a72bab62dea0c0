import type { InfoReport } from '../ops/info.js';

// `cdp info` as the user sees it (src/ops/info.ts gathers): a table for a terminal, or --json.

const mb = (n: number) => (n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);
const at = (p: { lsn: string; time: string | null } | null) => (p ? `${p.lsn}${p.time ? ` (${p.time})` : ''}` : 'none');

export function printInfo(report: InfoReport, opts: { json: boolean }): void {
  if (opts.json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return;
  }
  const r = report;
  const lines = [
    `database            ${r.database}`,
    `archive             ${r.archive} (${r.partitions ?? '?'} partitions)`,
    `encryption          ${r.encryption.configured ? 'client-side (archive.encryptionKey*)' : 'none configured'}; bases: ${r.encryption.encryptedBases} encrypted, ${r.encryption.plainBases} plain`,
    `earliest restorable ${at(r.restorable.earliest)}`,
    `latest restorable   ${at(r.restorable.latest)}${r.restorable.rpoSeconds !== null ? ` (RPO ${r.restorable.rpoSeconds} s)` : ''}`,
    `segments            ${r.segments.count}, ${mb(r.segments.bytes)}`,
    ...r.segments.perPartition.map(
      (p) => `  partition ${String(p.partition).padEnd(9)} ${p.count} segments, ${mb(p.bytes)}${p.firstLsn ? `, LSN ${p.firstLsn} .. ${p.lastLsn}` : ''}`,
    ),
    `bases               ${r.bases.length === 0 ? 'none: run cdp basebackup' : r.bases.length}`,
    ...r.bases.map(
      (b) =>
        `  ${b.kind.padEnd(9)} ${b.lsn} ${b.time} ${mb(b.size)}${b.encrypted ? ' encrypted' : ''}${b.fromBase ? ` from ${b.fromBase}` : ''}: ` +
        (b.restorable
          ? `restores ${at(b.restorable.from)} .. ${at(b.restorable.to)}${b.restorable.blockedBy ? ` (stops at a break: ${b.restorable.blockedBy})` : ''}`
          : `restores nothing: ${b.notRestorable}`) +
        `; ${b.segmentsAfter.count} segments (${mb(b.segmentsAfter.bytes)}) after it`,
    ),
    ...r.gaps.map(
      (g) =>
        `${g.coveredBy.length ? 'break (covered)    ' : 'GAP (uncovered)    '} ${g.description}${g.coveredBy.length ? `; covered by ${g.coveredBy.join(', ')}` : ''}`,
    ),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}
