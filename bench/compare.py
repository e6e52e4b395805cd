#!/usr/bin/env python3
"""Side-by-side throughput comparison that beats this machine's noise.

Runs cllm's `bench_train` and PyTorch's `bench/pytorch_baseline.py`
alternately for several rounds (so a slow patch of the machine hits both),
then prints every round and the medians: cllm 1 and 2 threads, PyTorch 2
threads, the ratio cllm/PyTorch and the 2-thread scaling.

    cargo build --release --example bench_train
    python3 bench/compare.py --config small --rounds 5 \
        --torch-python /tmp/torchvenv/bin/python

`--kernels amx` runs cllm with its AMX bf16x3 GEMMs; `--torch-matmul-precision
medium` lets PyTorch use bf16 matmuls too. `--kernels avx2` (or `avx512`)
forces cllm's path and pins PyTorch to the same ISA (`ATEN_CPU_CAPABILITY`,
`MKL_ENABLE_INSTRUCTIONS`, `DNNL_MAX_CPU_ISA`), so the comparison is like
for like on any machine. The last line gives both sides as a fraction of
the path's FMA peak measured with 2 threads at once (bench_train's FLOPs
per token: 6 per parameter plus attention). Without `--torch-python` only cllm
runs (scaling only). Not used by tests.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

from bench_table import table_rows

TORCH = re.compile(r"tokens/s=(\d+).*peak_rss_mib=(\d+)")
FMA_PEAK = re.compile(r"measured FMA peak \([^,]*, 2 threads at once\): ([\d.]+) GFLOP/s")
# Environment that keeps PyTorch (ATen, MKL, oneDNN) on one ISA.
TORCH_ISA = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "DNNL_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
               "DNNL_MAX_CPU_ISA": "AVX512_CORE"},
}


def cllm(args):
    cmd = [args.bench, "--config", args.config, "--threads", "1,2", "--depth", "1",
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.micro_batch:
        cmd += ["--micro-batch", str(args.micro_batch)]
    cmd += ["--kernels", args.kernels]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = {}
    for r in table_rows(out):
        rss = next(v for k, v in r.items() if k.startswith("peak RSS"))
        rows[int(r["threads"])] = (float(r["tokens/s"]), float(rss),
                                   float(r["best-step tokens/s"]),
                                   float(r["model GFLOP/s"]) * 1e9 / float(r["tokens/s"]))
    if set(rows) != {1, 2}:
        sys.exit(f"could not parse bench_train output:\n{out}")
    m = FMA_PEAK.search(out)
    return rows, float(m.group(1)) if m else None


def torch(args):
    cmd = [args.torch_python, "bench/pytorch_baseline.py", "--config", args.config,
           "--threads", "2", "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--matmul-precision", args.torch_matmul_precision]
    env = dict(os.environ, **TORCH_ISA.get(args.kernels, {}))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    m = TORCH.search(out)
    if not m:
        sys.exit(f"could not parse pytorch_baseline output:\n{out}")
    cap = re.search(r"cpu_capability=(\S+)", out)
    if args.kernels in TORCH_ISA and cap and cap.group(1).lower() != args.kernels:
        sys.exit(f"PyTorch ran on {cap.group(1)}, not {args.kernels}:\n{out}")
    return float(m.group(1)), float(m.group(2))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="small", choices=["small", "medium"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=0)
    p.add_argument("--bench", default="target/release/examples/bench_train")
    p.add_argument("--torch-python", default="")
    p.add_argument("--kernels", default="auto", help="bench_train --kernels (auto, amx, ...)")
    p.add_argument("--torch-matmul-precision", default="highest",
                   choices=["highest", "high", "medium"],
                   help="torch.set_float32_matmul_precision for the PyTorch side")
    args = p.parse_args()

    c1, c2, t2, b1, b2, peaks = [], [], [], [], [], []
    flops_per_token = None
    for r in range(args.rounds):
        if args.torch_python:
            tok, rss = torch(args)
            t2.append(tok)
            print(f"round {r + 1}: pytorch 2 threads {tok:.0f} tok/s ({rss:.0f} MiB)", flush=True)
        rows, peak = cllm(args)
        flops_per_token = rows[2][3]
        if peak:
            peaks.append(peak)
        c1.append(rows[1][0])
        c2.append(rows[2][0])
        b1.append(rows[1][2])
        b2.append(rows[2][2])
        print(f"round {r + 1}: cllm 1 thread {rows[1][0]:.0f}, 2 threads {rows[2][0]:.0f} tok/s "
              f"({rows[2][1]:.0f} MiB); best step {rows[1][2]:.0f} / {rows[2][2]:.0f}", flush=True)
    med = statistics.median
    print(f"median cllm: 1 thread {med(c1):.0f}, 2 threads {med(c2):.0f} tok/s; "
          f"scaling {med(c2) / med(c1):.2f}x (per round: "
          + ", ".join(f"{b / a:.2f}" for a, b in zip(c1, c2)) + ")")
    print(f"best-step tokens/s (max over rounds): 1 thread {max(b1):.0f}, 2 threads {max(b2):.0f}; "
          f"scaling {max(b2) / max(b1):.2f}x")
    if t2:
        print(f"median pytorch 2 threads {med(t2):.0f} tok/s; cllm/pytorch {med(c2) / med(t2):.2f}x "
              "(per round: " + ", ".join(f"{b / a:.2f}" for a, b in zip(t2, c2)) + ")")
    if peaks:
        peak = med(peaks)
        line = (f"fraction of the FMA peak, 2 threads ({peak:.1f} GFLOP/s measured, "
                f"{flops_per_token / 1e6:.3f} MFLOP per token): cllm {flops_per_token * med(c2) / 1e9:.1f} "
                f"GFLOP/s = {100 * flops_per_token * med(c2) / 1e9 / peak:.0f} %")
        if t2:
            line += (f", pytorch {flops_per_token * med(t2) / 1e9:.1f} GFLOP/s = "
                     f"{100 * flops_per_token * med(t2) / 1e9 / peak:.0f} %")
        print(line)


if __name__ == "__main__":
    main()
