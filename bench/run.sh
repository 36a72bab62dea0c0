#!/usr/bin/env bash
# Runs every benchmark against the local stack, one scenario after another (the machine has two
# cores: running them together would measure contention). Each benchmark measures its own anchor in
# the same run (pg_recvlogical for capture, native logical-replication apply for restore) and
# prints ratios; absolute figures from different runs are not comparable (ANCHORS.md).
# Output: bench/results/<timestamp>.txt (ignored by git; copy figures into notes by hand).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
bash deploy/local/stack.sh up
eval "$(bash deploy/local/stack.sh env)"
mkdir -p bench/results
out="bench/results/$(date +%Y%m%d-%H%M%S).txt"
for b in ${BENCHES:-capture-decode capture archive restore latency}; do
  echo "== bench/$b.ts" | tee -a "$out"
  npx tsx "bench/$b.ts" 2>&1 | tee -a "$out"
done
echo "results: $out"
