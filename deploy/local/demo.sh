#!/usr/bin/env bash
# Katya CDP end to end on the local stack (README, command 1):
#   stack up -> a sample database under a live pgbench workload -> cdp setup (slot, publication,
#   DDL capture, topic, first base) -> cdp run (capture + archive) -> record the exact content of
#   the source at a moment T -> more workload -> cdp restore --time T into a new database ->
#   compare both sides table by table.
# Re-runnable: each run uses its own topic and S3 prefix; the demo databases are recreated.
#
# Optional: `demo.sh --also-into 17` (or DEMO_ALSO_INTO=17; 16, 17 or 18) also restores the same
# moment into a PostgreSQL of that major (stack.sh up --pg 17, README "PostgreSQL versions") and
# compares it table by table the same way.
set -euo pipefail
cd "$(dirname "$0")/../.."

ALSO=${DEMO_ALSO_INTO:-}
while [ $# -gt 0 ]; do
  case $1 in
    --also-into) ALSO=${2:?--also-into needs a major, e.g. 17}; shift 2 ;;
    *) echo "usage: $0 [--also-into 16|17|18]" >&2; exit 2 ;;
  esac
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -d node_modules ]; then say "npm ci"; npm ci --no-audit --no-fund; fi
say "local stack"
bash deploy/local/stack.sh up ${ALSO:+--pg "$ALSO"}
eval "$(bash deploy/local/stack.sh env ${ALSO:+--pg "$ALSO"})"

RUN=$(date +%Y%m%d%H%M%S)
DB=cdp_demo
TARGET_DB=cdp_demo_restored
export CDP_SOURCE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export CDP_SLOT=cdp_demo CDP_PUBLICATION=cdp_demo CDP_TOPIC="cdp-demo-$RUN" CDP_S3_PREFIX="demo-$RUN"
export CDP_SEGMENT_MAX_AGE_MS=1000 CDP_HEARTBEAT_INTERVAL_MS=1000 CDP_KAFKA_PARTITIONS=3 CDP_METRICS_PORT=0
export CDP_LOG_FORMAT=json CDP_LOG_LEVEL=${CDP_LOG_LEVEL:-warn}
PSQL=(psql -h 127.0.0.1 -U postgres -X -q -v ON_ERROR_STOP=1)
LOG_DIR=${CDP_STACK_HOME:-$HOME/.cache/katya-cdp}/run
mkdir -p "$LOG_DIR"
RUN_LOG="$LOG_DIR/demo-cdp-run-$RUN.log"

say "sample database $DB (pgbench, scale 2)"
"${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$CDP_SLOT' AND NOT active" >/dev/null
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "DROP DATABASE IF EXISTS $TARGET_DB WITH (FORCE)" \
  -c "CREATE DATABASE $DB" -c "CREATE DATABASE $TARGET_DB"
pgbench -q -i -s 2 -h 127.0.0.1 -U postgres "$DB" 2>&1 | tail -n 1
# pgbench_history has no primary key: give it a replica identity so its changes can be replayed.
"${PSQL[@]}" -d "$DB" -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"

say "cdp setup"
npx cdp setup

say "cdp run (capture + archive), log: $RUN_LOG"
node bin/cdp.mjs run >"$RUN_LOG" 2>&1 &
CDP_PID=$!
cleanup() {
  if kill -0 "$CDP_PID" 2>/dev/null; then kill -TERM "$CDP_PID"; wait "$CDP_PID" || true; fi
  # A slot left behind would keep WAL forever: the demo removes its own.
  "${PSQL[@]}" -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$CDP_SLOT' AND NOT active" >/dev/null || true
}
trap cleanup EXIT

table_hashes() { # db [port] -> "table count md5" lines, read in one snapshot
  "${PSQL[@]}" -p "${2:-5432}" -d "$1" -At -F ' ' <<'SQL'
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT 'pgbench_accounts', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY aid), '')) FROM pgbench_accounts t
UNION ALL SELECT 'pgbench_branches', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY bid), '')) FROM pgbench_branches t
UNION ALL SELECT 'pgbench_tellers', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY tid), '')) FROM pgbench_tellers t
UNION ALL SELECT 'pgbench_history', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM pgbench_history t;
COMMIT;
SQL
}

say "workload: pgbench, 2 clients, 10 s"
pgbench -n -T 10 -c 2 -h 127.0.0.1 -U postgres "$DB" 2>&1 | grep -E '^(number of transactions actually processed|tps)' || true

# The workload is paused here, so "the content at T" is exact.
T=$("${PSQL[@]}" -d "$DB" -At -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
table_hashes "$DB" >"$LOG_DIR/demo-at-T-$RUN.txt"
say "moment T = $T recorded"

say "more workload after T: pgbench, 2 clients, 8 s"
pgbench -n -T 8 -c 2 -h 127.0.0.1 -U postgres "$DB" 2>&1 | grep -E '^(number of transactions actually processed|tps)' || true

say "waiting until the archive's restorable point passes T"
for i in $(seq 1 120); do
  point=$(npx cdp status --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{const r=JSON.parse(s);process.stdout.write(r.restorablePoint?r.restorablePoint.time:"")}catch{}})')
  if [ -n "$point" ] && [[ "$point" > "$T" ]]; then break; fi
  if ! kill -0 "$CDP_PID" 2>/dev/null; then echo "cdp run stopped; see $RUN_LOG" >&2; exit 1; fi
  sleep 1
done
npx cdp status

say "cdp restore --time $T --into $TARGET_DB"
npx cdp restore --into "postgres://postgres@127.0.0.1:5432/$TARGET_DB" --time "$T"

# compare FILE LABEL: the restored side's table_hashes (FILE) against the source at T.
compare() {
  say "comparison: source at T vs $2"
  printf '%-18s %12s %12s %12s  %s\n' table "rows at T" restored "rows now" verdict
  local ok=1 t n h rn rh nn v
  while read -r t n h; do
    read -r _ rn rh < <(grep "^$t " "$1")
    read -r _ nn _ < <(grep "^$t " "$LOG_DIR/demo-now-$RUN.txt")
    if [ "$h" = "$rh" ]; then v="identical (md5 $h)"; else v="DIFFERENT"; ok=0; fi
    printf '%-18s %12s %12s %12s  %s\n' "$t" "$n" "$rn" "$nn" "$v"
  done <"$LOG_DIR/demo-at-T-$RUN.txt"
  if [ "$ok" = 1 ]; then say "$2 equals the source at T"; else say "MISMATCH: $2 differs from the source at T"; return 1; fi
}

table_hashes "$TARGET_DB" >"$LOG_DIR/demo-restored-$RUN.txt"
table_hashes "$DB" >"$LOG_DIR/demo-now-$RUN.txt"
compare "$LOG_DIR/demo-restored-$RUN.txt" "the restore (PostgreSQL 15)"

if [ -n "$ALSO" ]; then
  port=$((5400 + ALSO))
  say "cdp restore --time $T into PostgreSQL $ALSO (127.0.0.1:$port/$TARGET_DB)"
  "${PSQL[@]}" -p "$port" -d postgres -c "DROP DATABASE IF EXISTS $TARGET_DB WITH (FORCE)" -c "CREATE DATABASE $TARGET_DB"
  npx cdp restore --into "postgres://postgres@127.0.0.1:$port/$TARGET_DB" --time "$T"
  table_hashes "$TARGET_DB" "$port" >"$LOG_DIR/demo-restored-$ALSO-$RUN.txt"
  compare "$LOG_DIR/demo-restored-$ALSO-$RUN.txt" "the restore into PostgreSQL $ALSO"
fi
