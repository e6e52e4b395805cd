#!/usr/bin/env bash
# Per-rank peak RSS with and without optimizer sharding (ZeRO stage 1) on
# the medium config (6 layers x 384, ctx 256, batch 64, byte tokens):
# scatter-gather shards the AdamW moments by segment block, allreduce keeps
# them replicated. Usage: platform-mpi/bench_memory.sh OUT_DIR [STEPS]
set -euo pipefail
out="${1:?usage: bench_memory.sh OUT_DIR [STEPS]}"
steps="${2:-2}"
out="$(mkdir -p "$out" && cd "$out" && pwd)"
source "$(dirname "$0")/bench_common.sh"
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
model=(--num-layers 6 --embed-dim 384 --num-heads 6 --seq-len 256 --batch-size 64
  --accumulator "${ACC:-f32}" --threads 1 --eval-windows 0 --sample-tokens 0 --log-every 1000)
{
  bench_header
  for np in 1 2 4; do
    for red in scatter-gather allreduce; do
      [ "$np" = 1 ] && [ "$red" = allreduce ] && continue
      rm -rf "$out/run"
      line=$("${mpi[@]}" -np "$np" "$bin/train_mpi" "$data" "${model[@]}" --steps "$steps" --reduce "$red" \
        --out "$out/run" | grep '^summary ' | cut -d' ' -f2-)
      echo "{\"np\": $np, \"summary\": $line}"
    done
  done
} | tee "$out/memory.jsonl"
rm -rf "$out/run"
python3 - "$out/memory.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| ranks | reduction | AdamW state per rank | peak RSS, rank 0 (gathers the checkpoint) | peak RSS, smallest rank | step |")
print("|---|---|---|---|---|---|")
for r in rows:
    s = r["summary"]
    shard = s["params"] * 8 / (r["np"] if s["reduce"] == "scatter-gather" else 1)
    print(f"| {r['np']} | {s['reduce']} | {shard / 2**20:.1f} MiB | {s['peak_rss_mib_rank0']:.1f} MiB "
          f"| {s['peak_rss_mib_min_rank']:.1f} MiB | {s['step_s_median']:.2f} s |")
PY
