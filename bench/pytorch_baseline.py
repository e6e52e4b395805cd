#!/usr/bin/env python3
"""PyTorch CPU (eager) baseline for the cllm training benchmark.

Trains the same GPT-2-style model as `cargo run --release --example bench_train`
(pre-LN blocks, fused QKV, GELU tanh, tied LM head, AdamW) for a fixed number of
steps and prints tokens/s, ms/step and peak RSS. Not used by the tests: run it
from a throwaway venv outside the repository, e.g.

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    /tmp/torchvenv/bin/python bench/pytorch_baseline.py --config small --threads 2
"""
import argparse
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # name: (n_layer, n_head, n_embd, seq_len, batch)
    "small": (4, 4, 128, 64, 12),
    "medium": (6, 6, 384, 256, 64),
}


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q = q.view(b, t, self.h, c // self.h).transpose(1, 2)
        k = k.view(b, t, self.h, c // self.h).transpose(1, 2)
        v = v.view(b, t, self.h, c // self.h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, c, layers, h):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(ctx, c)
        self.h = nn.ModuleList(Block(c, h) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c, eps=1e-5)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for blk in self.h:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=CONFIGS, default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--data", default="../shared/data/tinyshakespeare/input.txt")
    # "medium"/"high" let PyTorch run f32 matmuls in bf16 (on CPUs with
    # AMX or AVX-512 BF16), the counterpart of cllm's `--kernels amx`.
    ap.add_argument("--matmul-precision", default="highest", choices=["highest", "high", "medium"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    torch.manual_seed(0)
    layers, heads, c, t, b = CONFIGS[args.config]
    data = torch.tensor(list(open(args.data, "rb").read()), dtype=torch.long)
    model = GPT(256, t, c, layers, heads)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    g = torch.Generator().manual_seed(1)

    def step():
        ix = torch.randint(len(data) - t - 1, (b,), generator=g)
        x = torch.stack([data[i : i + t] for i in ix])
        y = torch.stack([data[i + 1 : i + t + 1] for i in ix])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = sum(p.numel() for p in model.parameters())
    print(
        f"pytorch {torch.__version__} config={args.config} threads={args.threads} "
        f"matmul_precision={args.matmul_precision} params={n} "
        f"cpu_capability={torch.backends.cpu.get_cpu_capability()} "
        f"tokens/s={args.steps * b * t / dt:.0f} ms/step={1000 * dt / args.steps:.1f} "
        f"peak_rss_mib={rss:.0f} loss={loss:.3f} ln(V)={math.log(256):.3f}"
    )


if __name__ == "__main__":
    main()
