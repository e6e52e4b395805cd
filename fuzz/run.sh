#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a bounded time.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60, all targets)
#
# Needs the nightly toolchain; installs cargo-fuzz if it is missing. Each
# target first replays its saved regressions (fuzz/regressions/<target>-*),
# then fuzzes from fuzz/corpus/<target> (new inputs land there, untracked).
# Exits non-zero if any target crashes, leaks, times out or exceeds its
# memory limit; crashing inputs are in fuzz/artifacts/<target>/.
set -euo pipefail

secs="${1:-60}"
shift || true
cd "$(dirname "${BASH_SOURCE[0]}")/.."

all_targets=(accumulate tree checkpoint data)
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=("${all_targets[@]}")
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# The checkpoint and data targets write scratch files under TMPDIR.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch"

start=$(date +%s)
cargo +nightly fuzz build
echo "fuzz/run.sh: built in $(($(date +%s) - start)) s"

failed=()
summary=()
for t in "${targets[@]}"; do
    # A length field claiming gigabytes must be refused before allocating:
    # the checkpoint readers get a tighter memory limit.
    limit=1024
    [ "$t" = checkpoint ] && limit=512
    regressions=(fuzz/regressions/"$t"-*)
    if [ -e "${regressions[0]}" ]; then
        echo "fuzz/run.sh: $t: replaying ${#regressions[@]} regression input(s)"
        if ! cargo +nightly fuzz run "$t" "${regressions[@]}" -- -rss_limit_mb="$limit"; then
            failed+=("$t (regression)")
            continue
        fi
    fi
    log="$scratch/$t.log"
    echo "fuzz/run.sh: $t: fuzzing for $secs s"
    # The full log is kept for the execution count; the console gets
    # everything but libFuzzer's progress and dictionary lines.
    set +e
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb="$limit" -malloc_limit_mb="$limit" \
        -timeout=30 -print_final_stats=1 2>&1 | tee "$log" | grep -Ev '^(#|")'
    codes=("${PIPESTATUS[@]}")
    set -e
    status=${codes[0]}
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    summary+=("$t: ${runs:-?} executions in $secs s, exit $status")
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
    fi
done

echo
echo "fuzz/run.sh summary:"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz/run.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz/run.sh: no crash"
