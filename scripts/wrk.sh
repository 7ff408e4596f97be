#!/usr/bin/env bash
# Load on /api/status with wrk (Debian) for 30 s: prints one JSON line with requests per
# second, latency percentiles, and the node's resident memory before, at most and after.
# Exits non-zero if the node stops answering or its memory grows by more than 50%.
#
#   scripts/wrk.sh [seconds, default 30] [connections, default 32]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-30}
CONNECTIONS=${2:-32}
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
command -v wrk >/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk; }
cargo build --quiet --release --bin apn
APN_BIN=target/release/apn
. scripts/serve-node.sh
rss() { awk '/VmRSS/ {print $2}' "/proc/$NODE_PID/status"; }
# Warm up (allocators, connection pools), then measure.
wrk -t2 -c"$CONNECTIONS" -d3s "$NODE_URL/api/status" >/dev/null
RSS_BEFORE=$(rss)
RSS_MAX=$RSS_BEFORE
( while kill -0 "$NODE_PID" 2>/dev/null; do rss; sleep 1; done ) >"$NODE_DIR/rss.txt" &
SAMPLER=$!
OUT=$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" --latency "$NODE_URL/api/status")
kill "$SAMPLER" 2>/dev/null || true
RSS_MAX=$(sort -n "$NODE_DIR/rss.txt" | tail -1)
START=$(date +%s%N)
curl -fsS --max-time 1 "$NODE_URL/healthz" >/dev/null
HEALTH_MS=$(( ($(date +%s%N) - START) / 1000000 ))
sleep 2
RSS_AFTER=$(rss)
RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
P50=$(echo "$OUT" | awk '$1=="50%" {print $2}')
P99=$(echo "$OUT" | awk '$1=="99%" {print $2}')
ERRORS=$(echo "$OUT" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
printf '{"bench":"wrk_status","seconds":%s,"connections":%s,"requests_per_s":%s,"latency_p50":"%s","latency_p99":"%s","errors":"%s","healthz_after_ms":%s,"rss_before_kib":%s,"rss_max_kib":%s,"rss_after_kib":%s}\n' \
    "$SECONDS_RUN" "$CONNECTIONS" "$RPS" "$P50" "$P99" "$ERRORS" "$HEALTH_MS" "$RSS_BEFORE" "$RSS_MAX" "$RSS_AFTER"
if [ "$RSS_AFTER" -gt $(( RSS_BEFORE * 3 / 2 )) ]; then
    echo "memory grew from ${RSS_BEFORE} KiB to ${RSS_AFTER} KiB" >&2
    exit 1
fi
