#!/usr/bin/env bash
# Builds the bare-metal firmware and trains under QEMU; exits non-zero unless
# the firmware reports PASS and exits with success (loss fell by the stated
# margin, stack within its reserve).
#
# Needs qemu-system-arm (Debian: qemu-system-arm) and a Rust toolchain; adds
# the rustup target when missing. Environment:
#   BARE_METAL_TIMEOUT  seconds allowed for the QEMU run (default 300; the
#                       run takes about 10 s of CPU on an idle machine)
#   BARE_METAL_TARGET   thumbv7em-none-eabihf (default, QEMU -cpu cortex-m4) or
#                       thumbv7m-none-eabi (soft float on the board's own
#                       Cortex-M3, for a QEMU that refuses cortex-m4 on this
#                       board; about 14x slower)
#   BARE_METAL_LINT=0   skip `cargo fmt --check` and clippy
set -euo pipefail

cd "$(dirname "$0")"
target="${BARE_METAL_TARGET:-thumbv7em-none-eabihf}"
timeout_s="${BARE_METAL_TIMEOUT:-300}"

command -v qemu-system-arm >/dev/null || {
    echo "run.sh: qemu-system-arm not found (apt-get install qemu-system-arm)" >&2
    exit 1
}
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

if [ "${BARE_METAL_LINT:-1}" != 0 ]; then
    cargo fmt --check
    cargo clippy --release --target "$target" -- -D warnings
fi

cargo build --release --target "$target"
# The defmt variant only has to build: reading its log needs a defmt decoder.
# Its own target dir keeps the two builds from invalidating each other.
cargo build --release --target "$target" --features defmt --target-dir target/defmt

log="target/bare-metal-run.log"
# timeout signals the whole process group, so QEMU (cargo's runner) dies too.
status=0
timeout "$timeout_s" cargo run --release --target "$target" </dev/null 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
    echo "run.sh: firmware run failed (exit $status; 124 = timed out after ${timeout_s}s)" >&2
    exit 1
fi
grep -qx PASS "$log" || {
    echo "run.sh: QEMU exited 0 but the firmware did not print PASS" >&2
    exit 1
}
echo "run.sh: bare-metal training passed"
