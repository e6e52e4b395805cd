#!/usr/bin/env python3
"""A/B two `bench_train` binaries at the same time, one pinned to each core.

On a VM whose speed drifts by tens of percent from minute to minute, two
runs one after the other mostly measure the drift. Run side by side, both
binaries see the same slow or fast patch; swapping their cores every round
cancels a difference between the two vCPUs. Meant for single-threaded
comparisons (`--threads 1`): each binary gets one core.

    cp target/release/examples/bench_train /tmp/before   # build, then change
    cargo build --release --example bench_train
    python3 bench/ab_pair.py /tmp/before target/release/examples/bench_train \\
        --rounds 4 -- --config small --threads 1 --steps 20

Prints tokens/s (mean and best step) per round, then the median of the
per-round ratios B/A. Needs `taskset` (util-linux). Not used by tests.
"""
import argparse
import statistics
import subprocess
import sys

from bench_table import table_rows


def parse(out, name):
    """(mean tokens/s, best-step tokens/s) of the single bench_train row."""
    rows = table_rows(out)
    if len(rows) != 1:
        sys.exit(f"{name}: expected one result row in its output:\n{out}")
    return float(rows[0]["tokens/s"]), float(rows[0]["best-step tokens/s"])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="After --: the bench_train flags, the same for both.")
    p.add_argument("a", help="first bench_train binary")
    p.add_argument("b", help="second bench_train binary")
    p.add_argument("--rounds", type=int, default=4)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    flags = argv[cut + 1:]  # bench_train's flags, the same for both
    mean_ratio, best_ratio = [], []
    for r in range(args.rounds):
        cores = (0, 1) if r % 2 == 0 else (1, 0)
        procs = [
            subprocess.Popen(["taskset", "-c", str(core), binary, *flags],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for binary, core in zip((args.a, args.b), cores)
        ]
        outs = [proc.communicate()[0] for proc in procs]
        for proc, out in zip(procs, outs):
            if proc.returncode != 0:
                sys.exit(f"bench_train failed ({proc.returncode}):\n{out}")
        (ma, ba), (mb, bb) = parse(outs[0], "A"), parse(outs[1], "B")
        mean_ratio.append(mb / ma)
        best_ratio.append(bb / ba)
        print(f"round {r + 1}: A on core {cores[0]} {ma:.0f} (best {ba:.0f}), "
              f"B on core {cores[1]} {mb:.0f} (best {bb:.0f}) tok/s; "
              f"B/A {mb / ma:.3f} (best {bb / ba:.3f})", flush=True)
    med = statistics.median
    print(f"median B/A: {med(mean_ratio):.3f} (mean tokens/s), {med(best_ratio):.3f} (best step)")


if __name__ == "__main__":
    main()
