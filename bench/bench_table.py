#!/usr/bin/env python3
"""Benchmark tables: parse bench output, and build docs/PERFORMANCE.md.

As a module, `table_rows` reads the Markdown table `bench_train` prints
(compare.py and ab_pair.py import it). As a script it owns
docs/PERFORMANCE.md, which is generated, never edited by hand:

    python3 bench/bench_table.py render          # write docs/PERFORMANCE.md
    python3 bench/bench_table.py check           # exit 1 if it is out of date (CI)
    python3 bench/bench_table.py list            # every table, its rows, their commands
    python3 bench/bench_table.py run TABLE [ROW ...]   # measure again, then render

The prose is bench/PERFORMANCE.md.in; each `<!-- table: ID -->` line in it
becomes the table `ID` of bench/results.json, followed by where its figures
come from (CPU, commit, date, command of each row). `run` executes a row's
command on this machine, parses what it prints, rewrites the row's cells
and provenance (this CPU from /proc/cpuinfo, `git describe`, today) in
results.json and renders again. Build first
(`cargo build --release --examples`); rows that compare with PyTorch need
`--torch-python` in their command to point at a venv with torch
(see bench/pytorch_baseline.py). A row whose output has no parser
(`"parse": "raw"`) is run and its output saved under target/bench-out/ for you to
transcribe; its cells are left as they are. Rows marked `manual` (a busy
loop on a core, two binaries side by side) print their recipe instead.
"""
import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results.json")
TEMPLATE = os.path.join(ROOT, "bench", "PERFORMANCE.md.in")
OUTPUT = os.path.join(ROOT, "docs", "PERFORMANCE.md")
RAW_DIR = os.path.join(ROOT, "target", "bench-out")


def table_rows(out):
    """Every data row of the table in `out`, as a dict from header to cell."""
    rows, header = [], None
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "tokens/s" in cells:
            header = cells
        elif header and len(cells) == len(header) and cells[0] != "---":
            rows.append(dict(zip(header, cells)))
    return rows


# ---------------------------------------------------------------------------
# Parsers: the output of a command -> variables for the row's cell templates.

def _num(x):
    return float(x.replace(",", ""))


def _fmt(x, digits=0):
    return f"{x:,.{digits}f}"


def parse_bench_train(out, _row):
    """`bench_train`: `${i:COLUMN}` is column COLUMN of result row i."""
    v = {}
    for i, r in enumerate(table_rows(out)):
        for k, cell in r.items():  # integers get thousands separators
            v[f"{i}:{k}"] = _fmt(int(cell)) if cell.isdigit() else cell
    if not v:
        raise ValueError("no bench_train table in the output")
    for col in ("tokens/s", "best-step tokens/s"):  # ${spread:COL}: (max - min) / max
        xs = [_num(r[col]) for r in table_rows(out) if col in r]
        if xs:
            v[f"spread:{col}"] = f"{100 * (max(xs) - min(xs)) / max(xs):.1f} %"
    return v


COMPARE = {
    "cllm": re.compile(r"median cllm: 1 thread (\d+), 2 threads (\d+) tok/s; scaling ([\d.]+)x "
                       r"\(per round: ([^)]*)\)"),
    "best": re.compile(r"best-step tokens/s \(max over rounds\): 1 thread (\d+), 2 threads (\d+); "
                       r"scaling ([\d.]+)x"),
    "torch": re.compile(r"median pytorch 2 threads (\d+) tok/s; cllm/pytorch ([\d.]+)x "
                        r"\(per round: ([^)]*)\)"),
    "rss": re.compile(r"pytorch 2 threads \d+ tok/s \((\d+) MiB\)"),
    "crss": re.compile(r"cllm 1 thread \d+, 2 threads \d+ tok/s \((\d+) MiB\)"),
    "peak": re.compile(r"fraction of the FMA peak, 2 threads \(([\d.]+) GFLOP/s measured.*"
                       r"cllm [\d.]+ GFLOP/s = (\d+) %(?:, pytorch [\d.]+ GFLOP/s = (\d+) %)?"),
}


def _range(per_round):
    xs = [float(x) for x in per_round.split(",")]
    return f"{min(xs):.2f}–{max(xs):.2f}"


def parse_compare(out, row):
    """bench/compare.py: medians, per-round ranges, best steps, peak RSS,
    fractions of the FMA peak; `${path}` is the command's `--kernels`."""
    v = {}
    k = re.search(r"--kernels (\S+)", row.get("command", ""))
    v["path"] = k[1] if k else "auto"
    m = COMPARE["peak"].search(out)
    if m:
        v.update(peak=m[1], cllm_pct=m[2], torch_pct=m[3] or "-")
    m = COMPARE["cllm"].search(out)
    if not m:
        raise ValueError("no 'median cllm' line in the output")
    v.update(c1=_fmt(int(m[1])), c2=_fmt(int(m[2])), scaling=m[3], scaling_range=_range(m[4]))
    m = COMPARE["best"].search(out)
    if m:
        v.update(best1=_fmt(int(m[1])), best2=_fmt(int(m[2])), best_scaling=m[3])
    m = COMPARE["torch"].search(out)
    if m:
        v.update(torch=_fmt(int(m[1])), ratio=m[2], ratio_range=_range(m[3]))
    trss = [int(x) for x in COMPARE["rss"].findall(out)]
    if trss:
        v["torch_rss"] = f"{min(trss):,}" + (f"–{max(trss):,}" if max(trss) > min(trss) else "")
    crss = [int(x) for x in COMPARE["crss"].findall(out)]
    if crss:
        v["cllm_rss"] = f"{max(crss):,}"
    return v


def parse_ab_pair(out, _row):
    """bench/ab_pair.py: the median B/A ratios."""
    m = re.search(r"median B/A: ([\d.]+) \(mean tokens/s\), ([\d.]+) \(best step\)", out)
    if not m:
        raise ValueError("no 'median B/A' line in the output")
    rounds = [float(x) for x in re.findall(r"B/A ([\d.]+) \(best", out)]
    return {"mean": m[1], "best": m[2], "rounds": f"{min(rounds):.2f}–{max(rounds):.2f}"}


def parse_metrics(_out, row):
    """A trainer run: `${val@STEP}` from the run's metrics.jsonl (`metrics` names the file)."""
    v = {}
    with open(row["metrics"]) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("val_loss") is not None:
                v[f"val@{rec['step']}"] = f"{rec['val_loss']:.3f}"
                v[f"val4@{rec['step']}"] = f"{rec['val_loss']:.4f}"
    return v


PARSERS = {"bench_train": parse_bench_train, "compare": parse_compare,
           "ab_pair": parse_ab_pair, "metrics": parse_metrics}


def fill(template, v):
    """`${name}` -> v[name]; a missing name is an error."""
    def sub(m):
        if " / " in m[1]:  # ${a / b}: the ratio of two values, 2 decimals
            a, b = (_num(fill("${" + x.strip() + "}", v)) for x in m[1].split(" / "))
            return f"{a / b:.2f}"
        if m[1] not in v:
            raise KeyError(f"the output gave no value for ${{{m[1]}}} (has: {sorted(v)})")
        return v[m[1]]
    return re.sub(r"\$\{([^}]+)\}", sub, template)


# ---------------------------------------------------------------------------
# Provenance of a fresh measurement.

def this_cpu():
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = val.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    isa = [n for f, n in [("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512"),
                          ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")] if f in flags]
    return f"{model}, {os.cpu_count()} cores, {'+'.join(isa) or 'no SIMD flags read'}"


def this_commit():
    r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                       capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


# ---------------------------------------------------------------------------
# Rendering.

def load():
    with open(RESULTS) as f:
        return json.load(f)


def render_table(t):
    out = ["| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    out += ["| " + " | ".join(r["cells"]) + " |" for r in t["rows"]]
    out.append("")

    def get(r, key):
        return r.get(key) or t.get(key) or ""
    cpus = {get(r, "cpu") for r in t["rows"]}
    prov = [f"CPU: {cpus.pop()}."] if len(cpus) == 1 else []
    keys = ["commit", "date", "command"] + ([] if prov else ["cpu"])
    per_row = [tuple(get(r, k) for k in keys) for r in t["rows"]]
    rows = [(None, per_row[0])] if len(set(per_row)) == 1 else \
        [(f"Row {i + 1} ({r['cells'][0]})", v) for i, (r, v) in enumerate(zip(t["rows"], per_row))]
    for label, v in rows:
        d = dict(zip(keys, v))
        bits = [b for b in [label, f"commit {d['commit']}" if d["commit"] else "commit not recorded", d["date"],
                            d.get("cpu")] if b]
        line = ", ".join(bits)
        if d["command"]:
            line += (": " if line else "Command: ") + f"`{d['command']}`"
        if line:
            prov.append(line + ".")
    if t.get("stale"):
        prov.append(f"**Stale:** {t['stale']}")
    out.append("\n".join(f"{x}  " for x in prov[:-1]) + ("\n" if len(prov) > 1 else "") + prov[-1])
    return "\n".join(out)


def render(results):
    tables = {t["id"]: t for t in results["tables"]}
    used = set()
    lines = []
    with open(TEMPLATE) as f:
        for line in f:
            m = re.match(r"<!-- table: ([\w-]+) -->\s*$", line)
            if m:
                if m[1] not in tables:
                    sys.exit(f"{TEMPLATE}: no table {m[1]!r} in {RESULTS}")
                used.add(m[1])
                lines.append(render_table(tables[m[1]]) + "\n")
            else:
                lines.append(line)
    unused = set(tables) - used
    if unused:
        sys.exit(f"tables in {RESULTS} that {TEMPLATE} does not place: {sorted(unused)}")
    return "".join(lines)


# ---------------------------------------------------------------------------
# Measuring again.

def run_row(t, i, r, cache):
    cmd = r.get("command") or t.get("command")
    parse = r.get("parse", t.get("parse", "raw"))
    print(f"== {t['id']} row {i + 1}: {cmd}", flush=True)
    if r.get("manual") or t.get("manual"):
        print(f"   not run by this script: {r.get('manual') or t.get('manual')}")
        return False
    if cmd not in cache:  # rows measured by one command share its output
        p = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True)
        cache[cmd] = (p.returncode, p.stdout + p.stderr)
    rc, out = cache[cmd]
    os.makedirs(RAW_DIR, exist_ok=True)
    raw = os.path.join(RAW_DIR, f"{t['id']}-{i + 1}.txt")
    with open(raw, "w") as f:
        f.write(f"$ {cmd}\n{out}")
    if rc != 0:
        sys.exit(f"failed ({rc}); output in {raw}")
    if parse == "raw" or "template" not in r:
        print(f"   no parser for this row: output saved to {raw}; transcribe it into {RESULTS}")
        return False
    v = PARSERS[parse](out, r)
    r["cells"] = [fill(c, v) for c in r["template"]]
    r["cpu"], r["commit"] = this_cpu(), this_commit()
    r["date"] = datetime.date.today().isoformat()
    print("   " + " | ".join(r["cells"]))
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("render", help="write docs/PERFORMANCE.md")
    sub.add_parser("check", help="exit 1 if docs/PERFORMANCE.md differs from a fresh render")
    sub.add_parser("list", help="list the tables, rows and commands")
    r = sub.add_parser("run", help="measure a table's rows again, then render")
    r.add_argument("table")
    r.add_argument("rows", nargs="*", type=int, help="1-based rows (default: all)")
    args = p.parse_args()
    results = load()
    if args.cmd == "check":
        have = open(OUTPUT).read() if os.path.exists(OUTPUT) else ""
        if have != render(results):
            sys.exit("docs/PERFORMANCE.md is out of date: run `python3 bench/bench_table.py render` "
                     "(edit bench/PERFORMANCE.md.in and bench/results.json, not the output)")
        return
    if args.cmd == "list":
        for t in results["tables"]:
            print(f"{t['id']}: {t['title']}")
            for i, row in enumerate(t["rows"]):
                cmd = row.get("command") or t.get("command", "")
                kind = row.get("parse", t.get("parse", "raw")) if "template" in row else "raw"
                print(f"  {i + 1} [{kind}] {row['cells'][0]}: {cmd}")
        return
    if args.cmd == "run":
        t = next((t for t in results["tables"] if t["id"] == args.table), None)
        if t is None:
            sys.exit(f"no table {args.table!r}; see `bench_table.py list`")
        rows = args.rows or list(range(1, len(t["rows"]) + 1))
        changed, cache = False, {}
        for i in rows:
            changed |= run_row(t, i - 1, t["rows"][i - 1], cache)
        if changed:
            if all(r.get("date") for r in t["rows"]):
                t.pop("stale", None)
            with open(RESULTS, "w") as f:
                json.dump(results, f, indent=1, ensure_ascii=False)
                f.write("\n")
    with open(OUTPUT, "w") as f:
        f.write(render(results))
    print(f"wrote {os.path.relpath(OUTPUT, ROOT)}")


if __name__ == "__main__":
    main()
