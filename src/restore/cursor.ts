// The schema restore keeps its resume cursor in, inside the target database (restore.ts creates it
// with the base and drops it when the restore is done). Everything that names it uses this constant:
// the replay's cursor updates (txn-group.ts), the target's emptiness and sequence scans, compaction's
// fingerprint of a restored database (compact/fingerprint.ts).
export const CURSOR_SCHEMA = '_cdp_restore';
