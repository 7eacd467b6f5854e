#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each on the stable toolchain, keeping
# the corpus in fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET), and prints executions
# per second and in total. A crash fails the script and leaves its input in fuzz/artifacts.
#
#   bash scripts/fuzz.sh 600            # ten minutes per target
#   bash scripts/fuzz.sh 60 codec sim   # one minute, two targets
# With AddressSanitizer (nightly features on the stable compiler):
#   RUSTC_BOOTSTRAP=1 SANITIZER=address bash scripts/fuzz.sh 600
#
# Every target has a seed corpus in fuzz/seeds/TARGET. The codec's is written from the
# spec's vectors (`cargo run -p enos-sim --example fuzz_seeds -- fuzz/seeds`); the
# structured targets' are inputs found by fuzzing, cut to one input per covered edge:
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET -set_cover_merge=1 -use_counters=0 \
#       fuzz/seeds/TARGET fuzz/corpus/TARGET
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH="${1:-60}"
shift || true
SANITIZER="${SANITIZER:-none}"
export CARGO_BUILD_JOBS="${JOBS:-2}"
cargo fuzz build --sanitizer "$SANITIZER"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
if [ ${#targets[@]} -eq 0 ]; then
    echo "no fuzz target found: nothing was fuzzed"
    exit 1
fi
for target in "${targets[@]}"; do
    if [ -z "$(ls -A "seeds/$target" 2>/dev/null)" ]; then
        echo "fuzz target $target has no seed corpus in fuzz/seeds/$target"
        exit 1
    fi
    mkdir -p "corpus/$target"
    seeds=("seeds/$target")
    log="$(mktemp)"
    if ! cargo fuzz run --sanitizer "$SANITIZER" "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 >"$log" 2>&1; then
        tail -60 "$log"
        echo "fuzz target $target FAILED"
        exit 1
    fi
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    secs=$(grep -E '^Done' "$log" | sed -E 's/.* in ([0-9]+) second.*/\1/')
    echo "$target: ${runs:-?} executions in ${secs:-?} s ($(( ${runs:-0} / (${secs:-1} > 0 ? ${secs:-1} : 1) )) per second), corpus $(ls "corpus/$target" | wc -l) inputs"
    rm -f "$log"
done
