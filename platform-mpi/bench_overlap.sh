#!/usr/bin/env bash
# The cross-rank reduction overlapped with backward (`--overlap`) against
# the reduction after backward: exact accumulator, 1 thread per rank, on 2
# and 4 ranks, overlap off and on alternating for ROUNDS rounds.
# Usage: platform-mpi/bench_overlap.sh OUT_DIR [STEPS] [ROUNDS]
set -euo pipefail
out="${1:?usage: bench_overlap.sh OUT_DIR [STEPS] [ROUNDS]}"
steps="${2:-20}"
rounds="${3:-3}"
out="$(mkdir -p "$out" && cd "$out" && pwd)"
source "$(dirname "$0")/bench_common.sh"
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
model=(--num-layers 4 --embed-dim 128 --num-heads 4 --seq-len 64 --batch-size 8
  --accumulator exact --threads 1 --kernels "${KERNELS:-auto}"
  --learning-rate 1e-3 --warmup-steps 0 --log-every 1000 --eval-windows 0 --sample-tokens 0)
{
  bench_header
  for round in $(seq "$rounds"); do
    for np in 2 4; do
      for ov in off on; do
        flag=(); [ "$ov" = on ] && flag=(--overlap)
        rm -rf "$out/run"
        line=$("${mpi[@]}" -np "$np" "$bin/train_mpi" "$data" "${model[@]}" --steps "$steps" \
          "${flag[@]}" --out "$out/run" | grep '^summary ' | cut -d' ' -f2-)
        echo "{\"round\": $round, \"ranks\": $np, \"overlap\": \"$ov\", \"summary\": $line}"
      done
    done
  done
} | tee "$out/overlap.jsonl"
rm -rf "$out/run"
python3 - "$out/overlap.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
med = statistics.median
print("| ranks | overlap | step | compute | reduce | bytes sent / rank / step |")
print("|---|---|---|---|---|---|")
for np in (2, 4):
    for ov in ("off", "on"):
        rs = [r["summary"] for r in rows if r["ranks"] == np and r["overlap"] == ov]
        print(f"| {np} | {ov} | {med(r['step_s_median'] for r in rs) * 1e3:.2f} ms "
              f"| {med(r['compute_s_median'] for r in rs) * 1e3:.2f} ms "
              f"| {med(r['reduce_s_median'] for r in rs) * 1e3:.2f} ms "
              f"| {med(r['bytes_per_step_max_rank'] for r in rs):,.0f} B |")
for np in (2, 4):
    off = [r["summary"]["step_s_median"] for r in rows if r["ranks"] == np and r["overlap"] == "off"]
    on = [r["summary"]["step_s_median"] for r in rows if r["ranks"] == np and r["overlap"] == "on"]
    ratios = [a / b for a, b in zip(off, on)]
    print(f"{np} ranks: step without / with overlap, per round: "
          f"{', '.join(f'{x:.3f}' for x in ratios)}; median {med(ratios):.3f}")
PY
