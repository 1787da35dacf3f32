#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/fuzz_targets/ for a bounded time each, then prints the
# executions and crashes per target. Not part of `cargo test`.
#
#   fuzz/run.sh                    every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh   longer
#   fuzz/run.sh canonicalize       only the named targets
#
# Seeds in fuzz/seeds/<target>/ and a dictionary in fuzz/dicts/<target>.dict are used when
# present; the corpus grows in fuzz/corpus/<target>/, crashes land in fuzz/artifacts/<target>/.
# Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
cd "$fuzz_dir/.."
seconds=${FUZZ_SECONDS:-60}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes -Z flags (sanitizers, coverage); this lets a stable toolchain take them.
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for file in "$fuzz_dir"/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi

summary=()
failed=0
for target in "${targets[@]}"; do
    corpus="$fuzz_dir/corpus/$target"
    artifacts="$fuzz_dir/artifacts/$target"
    log="$fuzz_dir/artifacts/$target.log"
    mkdir -p "$corpus" "$artifacts"
    before=$(find "$artifacts" -type f | wc -l)
    args=(-max_total_time="$seconds" -print_final_stats=1)
    [ -f "$fuzz_dir/dicts/$target.dict" ] && args+=(-dict="$fuzz_dir/dicts/$target.dict")
    corpora=("$corpus")
    [ -d "$fuzz_dir/seeds/$target" ] && corpora+=("$fuzz_dir/seeds/$target")

    echo "== $target: ${seconds}s" >&2
    set +e
    # -a: debug assertions and overflow checks, so arithmetic slips panic here too.
    cargo fuzz run -a "$target" "${corpora[@]}" -- "${args[@]}" 2>&1 | tee "$log" >&2
    status=${PIPESTATUS[0]}
    set -e

    # libFuzzer's final stats; a crash ends the run before them, so fall back to the last
    # progress line ("#123456 ...").
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    fi
    crashes=$(( $(find "$artifacts" -type f | wc -l) - before ))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="? (cargo fuzz exited $status, see $log)"
        failed=1
    elif [ "$crashes" -ne 0 ]; then
        failed=1
    fi
    summary+=("$(printf '%-24s executions %-12s crashes %s' "$target" "${execs:-?}" "$crashes")")
done

echo
echo "fuzzed ${seconds}s per target:"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "crash inputs are in $fuzz_dir/artifacts/<target>/; replay one with: cargo fuzz run <target> <file>"
fi
exit "$failed"
