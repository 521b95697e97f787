#!/usr/bin/env bash
# Long fuzz runs (libFuzzer via cargo-fuzz, AddressSanitizer) of the harnesses in
# src/fuzzing.rs; the test suite's short run is tests/fuzz_smoke.rs.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]    # default: 60 s, every target
#
# Uses a nightly toolchain if rustup has one, else the stable one with RUSTC_BOOTSTRAP=1 (for
# -Zsanitizer); installs cargo-fuzz if missing. Builds into fuzz/target (not the workspace's
# target/). New inputs that found coverage go to fuzz/target/corpus/<target> (not committed:
# copy the ones worth keeping into fuzz/corpus/<target>, or `cargo fuzz cmin` first); crashes go
# to fuzz/artifacts/<target>/ and make the script exit non-zero. Reproduce one with
# `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>` (from fuzz/), or put it in
# fuzz/corpus/<target>/ and run `cargo test --test fuzz_smoke`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz_dir=$root/fuzz
seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [seconds-per-target] [target...]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# A nightly if rustup lists one; otherwise stable, allowed nightly flags by RUSTC_BOOTSTRAP.
toolchain=()
if command -v rustup >/dev/null && nightly=$(rustup toolchain list | awk '/^nightly/ {print $1; exit}') \
    && [[ -n $nightly ]]; then
    toolchain=("+$nightly")
    echo "== toolchain: $nightly"
else
    export RUSTC_BOOTSTRAP=1
    echo "== toolchain: $(rustc --version) with RUSTC_BOOTSTRAP=1 (no nightly installed)"
fi

cd "$fuzz_dir"
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list --fuzz-dir "$fuzz_dir")
fi

echo "== building ${targets[*]} (ASAN; the first build of the crate takes a while)"
build_start=$SECONDS
for target in "${targets[@]}"; do
    cargo "${toolchain[@]}" fuzz build --fuzz-dir "$fuzz_dir" "$target"
done
echo "== built in $((SECONDS - build_start)) s"

declare -A result
failed=0
for target in "${targets[@]}"; do
    # Runs write new inputs to a scratch corpus, reading the committed one as seeds.
    work=$fuzz_dir/target/corpus/$target
    mkdir -p "$work" "$fuzz_dir/artifacts/$target"
    log=$fuzz_dir/target/fuzz-$target.log
    echo "== $target: ${seconds} s"
    set +e
    cargo "${toolchain[@]}" fuzz run --fuzz-dir "$fuzz_dir" "$target" "$work" "$fuzz_dir/corpus/$target" \
        -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$log" 2>&1
    status=$?
    set -e
    execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log" | tail -1)
    if [[ $status -eq 0 ]]; then
        result[$target]="ok, ${execs:-?} executions"
    else
        failed=1
        result[$target]="FAILED (exit $status), ${execs:-?} executions; see $log and fuzz/artifacts/$target/"
        grep -E "^(==[0-9]+==ERROR|thread '.*' panicked|SUMMARY)" "$log" | head -5 || true
    fi
    echo "   ${result[$target]}"
done

echo "== summary (${seconds} s per target)"
for target in "${targets[@]}"; do
    printf '%-16s %s\n' "$target" "${result[$target]}"
done
exit $failed
