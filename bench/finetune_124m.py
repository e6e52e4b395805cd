#!/usr/bin/env python3
"""Fine-tuning step throughput and peak RSS, cllm against PyTorch eager, on
a GPT-2 checkpoint (default: GPT-2 124M's shape, made by bench/make_gpt2.py),
context 1024, 2 threads, AdamW, same data and micro-batch.

    python3 bench/make_gpt2.py /tmp/gpt2-124m
    python3 bench/finetune_124m.py --model /tmp/gpt2-124m \
        --torch-python /tmp/torchvenv/bin/python --batch 2 --steps 4 --rounds 2
    python3 bench/finetune_124m.py --rounds 2 --cllm-args=--recompute-blocks

Rounds alternate cllm and PyTorch; the first step of each run is warm-up
and not counted. tok/s is the median over the counted steps and rounds;
RSS is the peak of the whole process (/usr/bin/time -v), loading included.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile

TORCH = r'''
import sys, time, json, resource, numpy as np, torch
from transformers import AutoTokenizer, GPT2LMHeadModel
model_dir, data, batch, seq, steps, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
torch.set_num_threads(threads)
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(model_dir)
ids = np.array(tok(open(data, encoding="utf-8").read())["input_ids"], dtype=np.int64)
m = GPT2LMHeadModel.from_pretrained(model_dir)
m.train()
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1)
rng = np.random.default_rng(0)
times = []
for step in range(steps + 1):
    starts = rng.integers(0, len(ids) - seq - 1, batch)
    x = torch.from_numpy(np.stack([ids[s:s + seq] for s in starts]))
    t0 = time.perf_counter()
    loss = m(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if step > 0:
        times.append(time.perf_counter() - t0)
print(json.dumps({"tok_s": [batch * seq / t for t in times]}))
'''


def max_rss_mib(stderr):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(m.group(1)) / 1024 if m else float("nan")


def run_cllm(a, out):
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-v", "target/release/examples/train", a.data, "--init-from", a.model,
           "--seq-len", str(a.seq), "--batch-size", str(a.batch), "--micro-batch", "1",
           "--threads", str(a.threads), "--steps", str(a.steps + 1), "--val-fraction", "0",
           "--warmup-steps", "0", "--learning-rate", "1e-4", "--log-every", "1",
           "--save-every", "0", "--sample-tokens", "0", "--out", out] + a.cllm_args.split()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"cllm failed:\n{p.stdout}\n{p.stderr}")
    recs = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    return [r["tokens_per_s"] for r in recs if r["step"] > 1], max_rss_mib(p.stderr)


def run_torch(a, script):
    cmd = ["/usr/bin/time", "-v", a.torch_python, script, a.model, a.data, str(a.batch),
           str(a.seq), str(a.steps), str(a.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"PyTorch failed:\n{p.stdout}\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])["tok_s"], max_rss_mib(p.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/tmp/gpt2-124m")
    ap.add_argument("--data", default="../shared/data/tinyshakespeare/input.txt")
    ap.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cllm-args", default="",
                    help="extra train flags, e.g. '--branching 2'; a single flag needs the = form: "
                         "--cllm-args=--recompute-blocks")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ft124-")
    script = os.path.join(tmp, "torch_ft.py")
    open(script, "w").write(TORCH)
    ours, theirs, rss_o, rss_t = [], [], [], []
    for r in range(a.rounds):
        t, m = run_cllm(a, os.path.join(tmp, "run"))
        ours += t; rss_o.append(m)
        t, m = run_torch(a, script)
        theirs += t; rss_t.append(m)
        print(f"round {r + 1}: cllm {statistics.median(ours):.0f} tok/s, {max(rss_o):.0f} MiB; "
              f"PyTorch {statistics.median(theirs):.0f} tok/s, {max(rss_t):.0f} MiB", flush=True)
    co, ct = statistics.median(ours), statistics.median(theirs)
    print(f"| | tok/s | peak RSS |\n|---|---|---|\n| PyTorch | {ct:,.0f} | {max(rss_t):,.0f} MiB |\n"
          f"| cllm | {co:,.0f} | {max(rss_o):,.0f} MiB |\n"
          f"| cllm / PyTorch | {co / ct:.2f}x | {max(rss_o) / max(rss_t):.2f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
