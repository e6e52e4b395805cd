#!/usr/bin/env python3
"""Self-contained reproduction of nanoGPT's shakespeare_char CPU recipe.

Reproduces Karpathy's nanoGPT (`data/shakespeare_char/prepare.py`, `model.py`,
`train.py`) for the command from its README

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False \
        --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 \
        --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 \
        --lr_decay_iters=2000 --dropout=0.0

so that the validation loss it reaches can be compared with cllm's trainer on
the same recipe. Not used by the tests or the build: run it from a throwaway
venv outside the repository, e.g.

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch
    /tmp/torchvenv/bin/python bench/nanogpt_recipe.py --threads 1 --seed 1337

What is reproduced, as in nanoGPT:
  * data: vocabulary = sorted set of the characters of the file (65 for tiny
    shakespeare); train = first 90% of the characters, val = the rest;
  * model: GPT with pre-LN blocks, LayerNorm eps 1e-5, fused c_attn,
    F.scaled_dot_product_attention(is_causal=True), MLP 4x with nn.GELU()
    (exact erf GELU; `--gelu tanh` for the tanh approximation), no biases
    (bias=False, nanoGPT's default; `--bias 1` for GPT-2 style biases),
    lm_head tied to wte, init N(0, 0.02) for Linear/Embedding weights, zero
    biases, c_proj.weight N(0, 0.02/sqrt(2*n_layer)). Modules are built in
    nanoGPT's order, so the RNG stream (init, then batches) is the same;
  * optimizer: torch.optim.AdamW (lr 1e-3, betas (0.9, 0.99), eps 1e-8),
    weight decay 0.1 on params with dim >= 2, 0 on the others;
  * schedule: warmup lr*(it+1)/(warmup+1) for 100 iters, cosine decay to
    1e-4 at iter 2000; grad clip 1.0 (clip_grad_norm_);
  * loop: batches of 12x64 drawn with torch.randint from the train split, the
    next batch prefetched right after the forward pass; estimate_loss
    (eval_iters=20 random batches per split, same global RNG) every 250
    iters, which is why it also shapes the training batches. nanoGPT's final
    "step 2000" report is the estimate taken after 2000 optimizer steps
    (iters 0..1999); this script stops there.

Not reproduced (no effect on the numbers on CPU): checkpoints, wandb, DDP,
torch.compile, autocast/GradScaler (both inactive on CPU: float32 throughout).

At the end it prints (1) nanoGPT's estimate_loss (train and val) and (2) the
fixed estimator used by cllm: the val split is cut into non-overlapping
windows of block_size tokens, available = (len_val - 1) // block_size,
take = min(available, 512), window k starts at
(k * available // take) * block_size; loss = mean cross-entropy over all
take * block_size positions.
"""
import argparse
import math
import os
import time

import torch
import torch.nn as nn
from torch.nn import functional as F

# --- recipe (config/train_shakespeare_char.py + the command-line overrides) ---
BLOCK_SIZE = 64
BATCH_SIZE = 12
N_LAYER = 4
N_HEAD = 4
N_EMBD = 128
LEARNING_RATE = 1e-3
MIN_LR = 1e-4
WARMUP_ITERS = 100
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.99)
GRAD_CLIP = 1.0
EVAL_INTERVAL = 250
EVAL_ITERS = 20
FIXED_EVAL_WINDOWS = 512  # cllm's fixed validation estimator


# --- model.py ---------------------------------------------------------------
class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (as in nanoGPT)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, bias):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.n_head = n_head
        self.n_embd = n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd, bias, gelu):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        # nanoGPT: nn.GELU() (exact, erf based).
        self.gelu = nn.GELU() if gelu == "exact" else nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, bias, gelu):
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, bias)
        self.ln_2 = LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, bias, gelu)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, vocab_size, bias, gelu):
        super().__init__()
        # Same construction order as nanoGPT (the default inits consume RNG).
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, N_EMBD),
            wpe=nn.Embedding(BLOCK_SIZE, N_EMBD),
            drop=nn.Dropout(0.0),
            h=nn.ModuleList([Block(N_EMBD, N_HEAD, bias, gelu) for _ in range(N_LAYER)]),
            ln_f=LayerNorm(N_EMBD, bias=bias),
        ))
        self.lm_head = nn.Linear(N_EMBD, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * N_LAYER))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # On CPU nanoGPT passes no fused flag: plain AdamW, eps default 1e-8.
        return torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=BETAS)


# --- train.py ---------------------------------------------------------------
def get_lr(it, lr_decay_iters):
    if it < WARMUP_ITERS:
        return LEARNING_RATE * (it + 1) / (WARMUP_ITERS + 1)
    if it > lr_decay_iters:
        return MIN_LR
    decay_ratio = (it - WARMUP_ITERS) / (lr_decay_iters - WARMUP_ITERS)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return MIN_LR + coeff * (LEARNING_RATE - MIN_LR)


def get_batch(data):
    ix = torch.randint(len(data) - BLOCK_SIZE, (BATCH_SIZE,))
    x = torch.stack([data[i:i + BLOCK_SIZE] for i in ix])
    y = torch.stack([data[i + 1:i + 1 + BLOCK_SIZE] for i in ix])
    return x, y


@torch.no_grad()
def estimate_loss(model, splits):
    out = {}
    model.eval()
    for name, data in splits.items():
        losses = torch.zeros(EVAL_ITERS)
        for k in range(EVAL_ITERS):
            losses[k] = model(*get_batch(data)).item()
        out[name] = losses.mean().item()
    model.train()
    return out


@torch.no_grad()
def fixed_val_loss(model, val):
    """cllm's estimator: evenly spaced non-overlapping windows of the val split."""
    available = (len(val) - 1) // BLOCK_SIZE
    take = min(available, FIXED_EVAL_WINDOWS)
    starts = [(k * available // take) * BLOCK_SIZE for k in range(take)]
    model.eval()
    total = 0.0
    for i in range(0, take, 64):  # chunks of 64 windows; equal sizes (512 = 8*64)
        chunk = starts[i:i + 64]
        x = torch.stack([val[s:s + BLOCK_SIZE] for s in chunk])
        y = torch.stack([val[s + 1:s + 1 + BLOCK_SIZE] for s in chunk])
        total += model(x, y).item() * len(chunk)
    model.train()
    return total / take, take


def main():
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(repo_root, "..", "shared", "data", "tinyshakespeare", "input.txt"))
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch default)")
    ap.add_argument("--steps", type=int, default=2000, help="max_iters = lr_decay_iters")
    ap.add_argument("--bias", type=int, choices=(0, 1), default=0)
    ap.add_argument("--gelu", choices=("exact", "tanh"), default="exact")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # nanoGPT: torch.manual_seed(1337 + seed_offset), before anything else

    # data/shakespeare_char/prepare.py
    with open(args.data, "r") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    n = len(text)
    tokens = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    train_data, val_data = tokens[: int(n * 0.9)], tokens[int(n * 0.9):]
    print(f"data {args.data}: {n:,} chars, vocab {len(chars)}, train {len(train_data):,}, val {len(val_data):,}")

    model = GPT(len(chars), bool(args.bias), args.gelu)
    n_params = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    print(f"seed {args.seed}, bias {args.bias}, gelu {args.gelu}, threads {torch.get_num_threads()}, "
          f"params {n_params / 1e6:.2f}M (non-embedding count, as nanoGPT prints)")
    optimizer = model.configure_optimizers()
    splits = {"train": train_data, "val": val_data}

    t_start = time.time()
    X, Y = get_batch(train_data)  # nanoGPT fetches the first batch before the loop
    iter_num = 0
    while True:
        lr = get_lr(iter_num, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if iter_num % EVAL_INTERVAL == 0 or iter_num == args.steps:
            losses = estimate_loss(model, splits)
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                  f"lr {lr:.2e}, {time.time() - t_start:.1f}s", flush=True)
        if iter_num == args.steps:
            break  # nanoGPT's last step (iter max_iters) happens after its final report
        loss = model(X, Y)
        X, Y = get_batch(train_data)  # prefetch, as nanoGPT does, before backward
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
    wall = time.time() - t_start

    fixed, windows = fixed_val_loss(model, val_data)
    print(f"final after {args.steps} steps:")
    print(f"  nanoGPT estimate_loss ({EVAL_ITERS} random batches of {BATCH_SIZE}x{BLOCK_SIZE}): "
          f"train {losses['train']:.4f}, val {losses['val']:.4f}")
    print(f"  fixed val estimator ({windows} windows x {BLOCK_SIZE}): val {fixed:.4f}")
    print(f"  wall time {wall:.1f}s (training + periodic estimates)")


if __name__ == "__main__":
    main()
