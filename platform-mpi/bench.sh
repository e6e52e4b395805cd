#!/usr/bin/env bash
# Figures of platform-mpi/README.md: time and bytes per training step for 1,
# 2 and 4 ranks over TCP loopback, and collective timings for the
# alpha-beta fit. Usage: platform-mpi/bench.sh OUT_DIR [STEPS]
# Then: python3 platform-mpi/costmodel.py OUT_DIR
set -euo pipefail
out="${1:?usage: bench.sh OUT_DIR [STEPS]}"
steps="${2:-12}"
out="$(mkdir -p "$out" && cd "$out" && pwd)"
source "$(dirname "$0")/bench_common.sh"
mpi+=(--mca btl self,tcp --mca btl_tcp_if_include lo)
# The measured model: 2 layers x 64, 4 heads, seq-len 64, char tokens,
# 16 units per step, exact accumulator, one thread per rank; KERNELS=portable
# gives the plain-loop figures.
model=(--num-layers 2 --embed-dim 64 --num-heads 4 --seq-len 64 --batch-size 16
  --tokenizer char --accumulator exact --threads 1 --kernels "${KERNELS:-auto}"
  --learning-rate 1e-3 --warmup-steps 0 --log-every 1000 --eval-windows 0 --sample-tokens 0)
lo_tx() { awk '$1 == "lo:" { print $10 }' /proc/net/dev; }

{
  bench_header
  for np in 1 2 4; do
    for red in scatter-gather allreduce; do
      [ "$np" = 1 ] && [ "$red" = allreduce ] && continue
      rm -rf "$out/run"
      a=$(lo_tx)
      line=$("${mpi[@]}" -np "$np" "$bin/train_mpi" "$data" "${model[@]}" --steps "$steps" \
        --reduce "$red" --sync-timing --out "$out/run" | grep '^summary ' | cut -d' ' -f2-)
      b=$(lo_tx)
      echo "{\"np\": $np, \"lo_bytes\": $((b - a)), \"steps\": $steps, \"summary\": $line}"
    done
  done
} | tee "$out/train.jsonl"
rm -rf "$out/run"

for np in 2 4; do
  "${mpi[@]}" -np "$np" "$bin/bench_collectives" $((16 << 20)) | tee "$out/collectives-np$np.csv"
done
