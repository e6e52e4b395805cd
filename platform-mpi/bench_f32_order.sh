#!/usr/bin/env bash
# The cost of f32 in the canonical tree order across ranks against the
# rank-order path: bench.sh's model with the f32 accumulator on 2 ranks,
# `--f32-order canonical` and `rank` alternating for ROUNDS rounds.
# Usage: platform-mpi/bench_f32_order.sh OUT_DIR [STEPS] [ROUNDS]
set -euo pipefail
out="${1:?usage: bench_f32_order.sh OUT_DIR [STEPS] [ROUNDS]}"
steps="${2:-40}"
rounds="${3:-3}"
out="$(mkdir -p "$out" && cd "$out" && pwd)"
source "$(dirname "$0")/bench_common.sh"
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
model=(--num-layers 2 --embed-dim 64 --num-heads 4 --seq-len 64 --batch-size 16
  --tokenizer char --accumulator f32 --threads 1 --kernels "${KERNELS:-auto}"
  --learning-rate 1e-3 --warmup-steps 0 --log-every 1000 --eval-windows 0 --sample-tokens 0)
{
  bench_header
  for round in $(seq "$rounds"); do
    for order in canonical rank; do
      rm -rf "$out/run"
      line=$("${mpi[@]}" -np 2 "$bin/train_mpi" "$data" "${model[@]}" --steps "$steps" \
        --f32-order "$order" --sync-timing --out "$out/run" | grep '^summary ' | cut -d' ' -f2-)
      echo "{\"round\": $round, \"order\": \"$order\", \"summary\": $line}"
    done
  done
} | tee "$out/f32-order.jsonl"
rm -rf "$out/run"
python3 - "$out/f32-order.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(order, key):
    return statistics.median(r["summary"][key] for r in rows if r["order"] == order)
print("| f32 order | step | reduce | bytes sent / rank / step |")
print("|---|---|---|---|")
for o in ("canonical", "rank"):
    print(f"| {o} | {med(o, 'step_s_median') * 1e3:.2f} ms | {med(o, 'reduce_s_median') * 1e3:.2f} ms "
          f"| {med(o, 'bytes_per_step_max_rank'):,.0f} B |")
steps = [(a["summary"]["step_s_median"] / b["summary"]["step_s_median"])
         for a, b in zip(rows[0::2], rows[1::2])]
print(f"canonical / rank, per round: {', '.join(f'{x:.3f}' for x in steps)}; median {statistics.median(steps):.3f}")
PY
