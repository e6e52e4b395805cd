#!/usr/bin/env python3
"""Alpha-beta cost model of cllm-mpi's gradient exchange (stdlib only).

Usage: python3 platform-mpi/costmodel.py BENCH_DIR [--gamma-enc NS --gamma-dec NS]

BENCH_DIR is what platform-mpi/bench.sh wrote: train.jsonl (time and bytes
per training step for 1, 2, 4 ranks) and collectives-np{2,4}.csv (collective
timings over message sizes). Prints Markdown: the loopback fit, a check of
the fit against the training steps, and projections to 12, 144 and 1,728
nodes on 25 and 100 Gb/s networks.

Model (p ranks, n bytes, latency alpha, inverse bandwidth beta):
  reduce-scatter (recursive halving) / all-gather:  log2(p) a + (p-1)/p n b
  all-reduce, Rabenseifner:                        2 log2(p) a + 2 (p-1)/p n b
  all-reduce, ring:                                2 (p-1) a + 2 (p-1)/p n b
  binomial tree reduce + broadcast:                ceil(log2 p) (2a + (n + n_params) b)
  12-ary sphere tree (a parent takes its 11 children in turn, then
  broadcasts back):                                ceil(log12 p) 11 (2a + (n + n_params) b)
Step time = per-node compute + exchange + wire arithmetic (encode all P,
decode the owned share) + optimizer update (of the owned share for
reduce-scatter, of everything otherwise); no overlap of compute and
communication. Efficiency = per-node compute / step time (weak scaling:
every node keeps its units, the batch grows).

With --overlap (last table): the gradient crosses piece by piece (64
segments, 1 MiB of f32) while backward runs. The exchange and its wire
arithmetic are CPU work (measured: on a node whose cores all compute, the
overlapped step is slower), so the model gives the communication one core
of the node and computes on the others: compute x cores/(cores-1); forward
is a third of it and the pieces become final evenly over the backward.
Step = forward + max(backward, exchange of the gradient + its wire
arithmetic + piece latencies) + the last piece + update + all-gather.
"""
import json
import math
import sys
from pathlib import Path


def load_collectives(d):
    rows = []
    for f in sorted(Path(d).glob("collectives-np*.csv")):
        for line in f.read_text().splitlines():
            if not line or line.startswith("op,"):
                continue
            op, p, nbytes, tmin, tmed, reps = line.split(",")
            rows.append((op, int(p), int(nbytes), float(tmin), float(tmed)))
    return rows


def fit(points):
    """Least squares of t = a + b n on relative error (weights 1/t^2), so
    the microsecond and the millisecond points both count."""
    sw = swx = swxx = swt = swxt = 0.0
    for n, t in points:
        w = 1.0 / (t * t)
        sw += w
        swx += w * n
        swxx += w * n * n
        swt += w * t
        swxt += w * n * t
    det = sw * swxx - swx * swx
    a = (swxx * swt - swx * swxt) / det
    b = (sw * swxt - swx * swt) / det
    return a, b


def lat_bw_factors(op, p):
    l2 = math.log2(p)
    frac = (p - 1) / p
    if op == "all_reduce":
        return 2 * l2, 2 * frac
    return l2, frac


def t_scatter_gather(p, P, w, a, b):
    """Ours: reduce-scatter of the lanes, all-gather of the f32 parameters,
    plus three small collectives (lane agreement, losses, segment norms)."""
    if p == 1:
        return 0.0
    l2, frac = math.log2(p), (p - 1) / p
    return (l2 * a + frac * P * w * b) + (l2 * a + frac * P * 4 * b) + 3 * 2 * l2 * a


def t_allreduce_rab(p, P, w, a, b):
    if p == 1:
        return 0.0
    l2, frac = math.log2(p), (p - 1) / p
    return 2 * l2 * a + 2 * frac * P * w * b + 2 * 2 * l2 * a


def t_allreduce_ring(p, P, w, a, b):
    if p == 1:
        return 0.0
    frac = (p - 1) / p
    return 2 * (p - 1) * a + 2 * frac * P * w * b + 2 * 2 * math.log2(p) * a


def t_binomial_tree(p, P, w, a, b):
    if p == 1:
        return 0.0
    return math.ceil(math.log2(p)) * (2 * a + P * (w + 4) * b)


def t_sphere_tree(p, P, w, a, b):
    if p == 1:
        return 0.0
    levels = math.ceil(math.log(p, 12) - 1e-9)
    return levels * 11 * (2 * a + P * (w + 4) * b)


ALGOS = [
    ("reduce-scatter + all-gather (default)", t_scatter_gather),
    ("all-reduce, Rabenseifner", t_allreduce_rab),
    ("all-reduce, ring", t_allreduce_ring),
    ("binomial tree", t_binomial_tree),
    ("12-ary sphere tree", t_sphere_tree),
]


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    d = args[0]
    gamma_enc = 20e-9  # need + encode, per parameter, one thread (bench_wire)
    gamma_dec = 15e-9  # decode, per owned parameter (bench_wire)
    if "--gamma-enc" in args:
        gamma_enc = float(args[args.index("--gamma-enc") + 1]) * 1e-9
    if "--gamma-dec" in args:
        gamma_dec = float(args[args.index("--gamma-dec") + 1]) * 1e-9

    rows = load_collectives(d)
    print("### Loopback fit (TCP over `lo`)\n")
    print("| collective | ranks | a (intercept) | b (slope) | alpha | beta | 1/beta |")
    print("|---|---|---|---|---|---|---|")
    fitted = {}
    for op in ["reduce_scatter", "reduce_scatter_block", "all_gather", "all_reduce"]:
        for p in sorted({r[1] for r in rows}):
            pts = [(n, tmin) for o, q, n, tmin, _ in rows if o == op and q == p]
            if len(pts) < 3:
                continue
            a, b = fit(pts)
            la, fb = lat_bw_factors(op, p)
            alpha, beta = a / la, b / fb
            fitted[(op, p)] = (alpha, beta)
            print(
                f"| {op} | {p} | {a*1e6:.1f} µs | {b*1e9:.3f} ns/B | {alpha*1e6:.1f} µs | "
                f"{beta*1e9:.3f} ns/B | {1/beta/1e9:.2f} GB/s |"
            )
    alphas = [v[0] for k, v in fitted.items() if k[0] != "reduce_scatter_block"]
    betas = [v[1] for k, v in fitted.items() if k[0] != "reduce_scatter_block"]
    a_lo = sorted(alphas)[len(alphas) // 2]
    b_lo = sorted(betas)[len(betas) // 2]
    print(
        f"\nMedian over the fits (block variant excluded): alpha = {a_lo*1e6:.1f} µs, "
        f"beta = {b_lo*1e9:.3f} ns/B ({1/b_lo/1e9:.2f} GB/s).\n"
    )

    train = [json.loads(l) for l in Path(d, "train.jsonl").read_text().splitlines() if l.startswith("{")]
    one = next(t for t in train if t["np"] == 1)["summary"]
    P = one["params"]
    t_comp = one["compute_s_median"]
    t_upd1 = one["update_s_median"]
    w = max(t["summary"]["wire_bytes_per_param"] for t in train)
    print("### Training steps on this machine\n")
    print("| ranks | reduction | step | compute | wait for slowest | reduce | update + all-gather | model: exchange + wire arithmetic | bytes sent / rank / step | loopback bytes / step, all ranks |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in train:
        s = t["summary"]
        p = s["ranks"]
        sg = s["reduce"] == "scatter-gather"
        model = (t_scatter_gather if sg else t_allreduce_rab)(p, P, w, a_lo, b_lo)
        if p > 1:
            model += gamma_enc * P + (gamma_dec * P + t_upd1) / (p if sg else 1)
        else:
            model += t_upd1
        print(
            f"| {p} | {s['reduce']} | {s['step_s_median']*1e3:.1f} ms | {s['compute_s_median']*1e3:.1f} ms | "
            f"{s.get('wait_s_median', 0)*1e3:.1f} ms | {s['reduce_s_median']*1e3:.1f} ms | {s['update_s_median']*1e3:.1f} ms | "
            f"{model*1e3:.1f} ms | {s['bytes_per_step_rank0']/1e6:.3f} MB | {t['lo_bytes']/t['steps']/1e6:.3f} MB |"
        )
    print(
        f"\nParameters P = {P}, wire = {w} B per gradient element (exact, "
        f"{w//8} lanes) + 4 B per parameter in the all-gather.\n"
    )

    nets = [("25 Gb/s, alpha 5 µs", 5e-6, 8 / 25e9), ("100 Gb/s, alpha 1.5 µs", 1.5e-6, 8 / 100e9)]
    # GPT-2 small: compute extrapolated from the measured rate by FLOPs
    # (6 P per token) on a 16-core node at the measured per-core rate.
    flops_rate = 6 * P * one["units"] * 64 / t_comp  # 64 tokens/sequence in bench.sh
    P2 = 124_439_808
    t_comp2 = 6 * P2 * 16 * 64 / (16 * flops_rate)
    models = [
        (f"measured model ({P:,} params, 16 units x 64 tokens per node, 1 core)", P, t_comp, t_upd1, 1),
        (f"GPT-2 small size ({P2:,} params), 16 x 64 tokens per node, 16 cores", P2, t_comp2, t_upd1 * P2 / P / 16, 16),
    ]
    print(f"Measured single-rank rate: {flops_rate/1e9:.2f} GFLOP/s (6·P FLOPs per token).\n")
    Ns = [12, 144, 1728]

    def step_time(f, aname, N, PP, width, a, b, tc, tu, cores):
        comm = f(N, PP, width, a, b)
        shard = N if "scatter" in aname else 1
        local = (gamma_enc * PP + gamma_dec * PP / shard) / cores + tu / shard
        return comm, tc + comm + local

    for title, PP, tc, tu, cores in models:
        print(f"### Projection: {title}\n")
        print(
            f"Per-node compute {tc*1e3:.1f} ms per step, optimizer update of the whole vector "
            f"{tu*1e3:.1f} ms; one node alone: {(tc+tu)*1e3:.1f} ms per step. Cells: step time "
            f"(communication) efficiency; exact wire ({w} B per gradient element).\n"
        )
        print("| network | algorithm | " + " | ".join(f"{N} nodes" for N in Ns) + " |")
        print("|---|---|" + "---|" * len(Ns))
        for nname, a, b in nets:
            for aname, f in ALGOS:
                cells = []
                for N in Ns:
                    comm, step = step_time(f, aname, N, PP, w, a, b, tc, tu, cores)
                    cells.append(f"{step*1e3:.0f} ms ({comm*1e3:.1f}) {tc/step*100:.0f} %")
                print(f"| {nname} | {aname} | " + " | ".join(cells) + " |")
        print()
        print("Default algorithm by accumulator wire width (f32 crosses as an all-to-all of 4 B, "
              "charged here like a reduce-scatter plus (N-1) alpha):\n")
        print("| network | accumulator (B/element) | " + " | ".join(f"{N} nodes" for N in Ns) + " |")
        print("|---|---|" + "---|" * len(Ns))
        for nname, a, b in nets:
            for acc, width in [("exact", w), ("fixed", 8), ("f32", 4)]:
                cells = []
                for N in Ns:
                    comm, step = step_time(t_scatter_gather, "scatter", N, PP, width, a, b, tc, tu, cores)
                    if acc == "f32":
                        extra = (N - 1 - math.log2(N)) * a
                        comm, step = comm + extra, step + extra
                    cells.append(f"{step*1e3:.0f} ms {tc/step*100:.0f} %")
                print(f"| {nname} | {acc} ({width}) | " + " | ".join(cells) + " |")
        print()
        if cores < 2:
            continue
        print(f"With `--overlap` (model only: {cores - 1} cores compute, one communicates and "
              "does the wire arithmetic; the gradient crosses piece by piece during backward; "
              "cells: step time (exposed communication) efficiency against the compute on all "
              "cores):\n")
        print("| network | accumulator (B/element) | " + " | ".join(f"{N} nodes" for N in Ns) + " |")
        print("|---|---|" + "---|" * len(Ns))
        for nname, a, b in nets:
            for acc, width in [("exact", w), ("fixed", 8)]:
                cells = []
                for N in Ns:
                    g_enc, g_dec = OVERLAP_WIRE[acc]
                    step, exposed = t_overlapped(N, PP, width, a, b, tc, tu, cores, g_enc, g_dec)
                    cells.append(f"{step*1e3:.0f} ms ({exposed*1e3:.1f}) {tc/step*100:.0f} %")
                print(f"| {nname} | {acc} ({width}) | " + " | ".join(cells) + " |")
        print()

# Wire arithmetic per gradient element on one core, as the overlapped path
# runs it (need + encode of every element, decode of the owned share), from
# `cargo run --release -p cllm-mpi --example bench_wire` (Intel Xeon VM,
# AVX-512): exact 6.23 + 6.77 and 13.62 ns, fixed 1.04 + 1.32 and 1.77 ns.
OVERLAP_WIRE = {"exact": (13.0e-9, 13.6e-9), "fixed": (2.4e-9, 1.8e-9)}


def t_overlapped(N, PP, w, a, b, tc, tu, cores, gamma_enc, gamma_dec, piece=64 * 4096):
    """Step time with --overlap (see the module doc), and the exposed
    communication (step minus compute on all cores minus the update)."""
    l2, frac = math.log2(N), (N - 1) / N
    pieces = math.ceil(PP / piece)
    # Per piece: the lane agreement (a tiny all-reduce) and a reduce-scatter.
    per_piece_lat = 2 * l2 * a + l2 * a
    grad = frac * PP * w * b + pieces * per_piece_lat + gamma_enc * PP + gamma_dec * PP / N
    gather = l2 * a + frac * PP * 4 * b + 2 * 2 * l2 * a  # parameters, losses, norms
    tcw = tc * cores / (cores - 1)
    fwd, bwd = tcw / 3, 2 * tcw / 3
    step = fwd + max(bwd, grad) + grad / pieces + tu / N + gather
    return step, step - tc - tu / N


if __name__ == "__main__":
    main()
