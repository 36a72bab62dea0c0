#!/usr/bin/env bash
# `npm run bench` (quick: scaled-down workloads, 3 runs of each measurement, a few minutes on a
# 2-core machine) and `npm run bench -- --full` (the ANCHORS.md sizes, 5 runs). Brings the local
# stack up (idempotent), builds the Debezium anchor (Maven) on first use, then runs
# bench/harness.ts, which measures every anchor in the same run and writes
# bench/results/<timestamp>-<mode>/ (results.json, results.md, SVG charts).
# The single scripts (bench/capture.ts, restore.ts, latency.ts, compact.ts, archive.ts,
# capture-decode.ts) still run on their own: npx tsx bench/<name>.ts. One part of the harness only:
# npm run bench -- --only compaction --out /tmp/somewhere (see bench/harness.ts for the options).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
bash deploy/local/stack.sh up
eval "$(bash deploy/local/stack.sh env)"
exec npx tsx bench/harness.ts "$@"
