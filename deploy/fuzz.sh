#!/usr/bin/env bash
# deploy/fuzz.sh [TARGET|all] [SECONDS] — builds berth's fuzz targets (fuzz/) and runs each
# (or only TARGET) under libFuzzer for SECONDS (default 60), one after the other. Not in CI.
#
# On the stable toolchain: cargo-fuzz passes the sanitizer-coverage flags (-Cpasses=sancov-module,
# -Cllvm-args=-sanitizer-coverage-…) and `--cfg fuzzing`, which stable rustc accepts with
# RUSTC_BOOTSTRAP=1; `-s none` leaves AddressSanitizer out (the code under test is safe Rust;
# ASan would need -Zsanitizer and the nightly runtime). Overflow checks and debug assertions
# are on (-a), so an overflow is a crash.
#
# Corpora grow in fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET, which is kept in git);
# crashes, timeouts and out-of-memory inputs land in fuzz/artifacts/TARGET/, with the run's log
# in fuzz/artifacts/TARGET.log. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -O -a TARGET fuzz/artifacts/TARGET/crash-…
# (from fuzz/), fix it, and keep the input as a unit test next to the code.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here/fuzz"
all=(reference manifest layer dockerfile expand ports filters template)
want=${1:-all}
secs=${2:-60}
if [ "$want" = all ]; then
    targets=("${all[@]}")
else
    targets=("$want")
fi

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# The fuzz crate is its own workspace with its own target folder (fuzz/target).
unset CARGO_TARGET_DIR
flags=(-s none -O -a)
cargo fuzz build "${flags[@]}"

status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: $secs s" >&2
    log="artifacts/$t.log"
    # -timeout: an input taking over 10 s is a hang; -rss_limit_mb: a leak or blow-up.
    if ! cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 | tee "$log" >&2; then
        status=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    found=$(grep -c '^artifact_prefix\|Test unit written to' "$log" || true)
    summary+=("$(printf '%-11s %9s execs %7s/s  %-10s artifacts: %s' "$t" "${runs:-?}" \
        "${rate:-?}" "${cov:-}" "$found")")
done
printf '%s\n' "${summary[@]}"
exit "$status"
