#!/usr/bin/env bash
# Run every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time, one after another,
# starting from the committed seeds (fuzz/seeds/<target>) plus the corpus earlier runs grew
# (fuzz/corpus/<target>, not committed). Prints one JSON line per target:
#   {"target":..,"seconds":..,"executions":..,"exec_per_s":..,"coverage":..,"corpus":..,"crashes":..}
# A crash leaves its input under fuzz/artifacts/<target>/ and makes the script exit 1; turn
# it into a regression test in tests/fuzz_regressions.rs.
#
#   scripts/fuzz.sh [seconds per target, default 60] [target ...]
# Needs the nightly toolchain (rustup) and cargo-fuzz; installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && mapfile -t TARGETS < <(cargo +nightly fuzz list)
mkdir -p fuzz/logs
STATUS=0
for target in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    crashes_before=$(find "fuzz/artifacts/$target" -type f | wc -l)
    log="fuzz/logs/$target.log"
    set +e
    cargo +nightly fuzz run --release "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    crashes=$(( $(find "fuzz/artifacts/$target" -type f | wc -l) - crashes_before ))
    [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ] && crashes=1 # a failure that left no artifact
    [ "$crashes" -ne 0 ] && STATUS=1
    executions=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -1)
    exec_per_s=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log" | tail -1)
    coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    printf '{"target":"%s","seconds":%s,"executions":%s,"exec_per_s":%s,"coverage":%s,"corpus":%s,"crashes":%s,"log":"%s"}\n' \
        "$target" "$SECONDS_PER_TARGET" "${executions:-0}" "${exec_per_s:-0}" "${coverage:-0}" \
        "$corpus" "$crashes" "$log"
done
exit "$STATUS"
