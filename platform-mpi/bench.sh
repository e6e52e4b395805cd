#!/usr/bin/env bash
# Figures of platform-mpi/README.md: time and bytes per training step for 1,
# 2 and 4 ranks over TCP loopback, and collective timings for the
# alpha-beta fit. Usage: platform-mpi/bench.sh OUT_DIR [STEPS]
# Then: python3 platform-mpi/costmodel.py OUT_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:?usage: bench.sh OUT_DIR [STEPS]}"
steps="${2:-12}"
data="${CLLM_TEST_DATA:-$root/../shared/data/tinyshakespeare/input.txt}"
mkdir -p "$out"
cd "$root"
cargo build --release -p cllm-mpi
bin="${CARGO_TARGET_DIR:-$root/target}/release"
mpi=(mpirun --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo)
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
lo_tx() { awk '$1 == "lo:" { print $10 }' /proc/net/dev; }

{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  for np in 1 2 4; do
    for red in scatter-gather allreduce; do
      [ "$np" = 1 ] && [ "$red" = allreduce ] && continue
      rm -rf "$out/run"
      a=$(lo_tx)
      line=$("${mpi[@]}" -np "$np" "$bin/train_mpi" "$data" --steps "$steps" --reduce "$red" \
        --log-every 1000 --eval-windows 0 --sync-timing --out "$out/run" | grep '^summary ' | cut -d' ' -f2-)
      b=$(lo_tx)
      echo "{\"np\": $np, \"lo_bytes\": $((b - a)), \"steps\": $steps, \"summary\": $line}"
    done
  done
} | tee "$out/train.jsonl"
rm -rf "$out/run"

for np in 2 4; do
  "${mpi[@]}" -np "$np" "$bin/bench_collectives" $((16 << 20)) | tee "$out/collectives-np$np.csv"
done
