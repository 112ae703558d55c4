#!/usr/bin/env bash
# Longer fuzzing of virtzone's parsers with libFuzzer, on the stable toolchain (docs/fuzzing.md).
#
#   scripts/fuzz.sh [-t SECONDS] [TARGET...]     every target of src/fuzz/mod.rs unless named;
#                                                SECONDS of fuzzing each (default 120)
#
# Builds the library's unit tests once with libFuzzer's coverage instrumentation, the flags
# `cargo bolero test` uses but without a sanitizer (those need nightly) and for the library's
# tests only (cargo-bolero builds every test target, the lab's too), writes each target's seeds
# into its corpus, then runs the targets one after the other under `nice`. Corpora, crash inputs
# and logs stay under src/fuzz/__fuzz__/fuzz__TARGET/ (ignored by git); `cargo test --lib
# fuzz::TARGET` replays a crash input found there. Prints one line per target: executions,
# coverage, corpus size, crashes. Exit status 1 when any target found a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=120
if [ "${1:-}" = "-t" ]; then
    secs=$2
    shift 2
fi
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^    \([a-z_0-9]*\): [0-9]*;$/\1/p' src/fuzz/mod.rs)
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing --cfg fuzzing_libfuzzer -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
-Cllvm-args=-sanitizer-coverage-stack-depth"
echo "== building the fuzz targets (profile fuzz, target/fuzz)"
bin=$(nice -n 10 cargo test --lib --locked --profile fuzz --target "$triple" --target-dir target/fuzz \
    --no-run --message-format=json |
    grep '"kind":\["lib"\]' | grep '"test":true' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
[ -x "$bin" ] || { echo "fuzz.sh: no test binary was built" >&2; exit 1; }
unset RUSTFLAGS

"$bin" fuzz::write_seed_corpora --exact --ignored --quiet >/dev/null

found=0
printf '%-16s %10s %8s %6s %8s %7s\n' target executions exec/s cov corpus crashes
for t in "${targets[@]}"; do
    dir=src/fuzz/__fuzz__/fuzz__$t
    mkdir -p "$dir/corpus" "$dir/crashes"
    log=$dir/fuzz.log
    # libFuzzer's own options; -timeout makes a slow input (a hang) a finding too.
    args="$dir/corpus $dir/crashes -artifact_prefix=$dir/crashes/ -timeout=10 -rss_limit_mb=2048"
    args+=" -max_total_time=$secs -print_final_stats=1"
    status=0
    BOLERO_TEST_NAME=fuzz::$t BOLERO_LIBTEST_HARNESS=1 BOLERO_LIBFUZZER_ARGS=$args \
        nice -n 10 "$bin" "fuzz::$t" --exact --nocapture --quiet --test-threads 1 >"$log" 2>&1 ||
        status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
    crashes=$(find "$dir/crashes" -type f | wc -l)
    printf '%-16s %10s %8s %6s %8s %7s\n' "$t" "${runs:-?}" "${rate:-?}" "${cov:-?}" \
        "$(find "$dir/corpus" -type f | wc -l)" "$crashes"
    if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        found=1
        echo "   $t: exit status $status; see $log and $dir/crashes/" >&2
    fi
done
exit $found
