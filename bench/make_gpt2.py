#!/usr/bin/env python3
"""Write a GPT-2 model directory in the Hugging Face layout with random
weights, as the Hub's `gpt2` files are laid out (tensor names without
`transformer.`, causal-mask buffers, vocab.json + merges.txt), so that
fine-tuning can be benchmarked without downloading anything.

    python3 bench/make_gpt2.py /tmp/gpt2-124m            # GPT-2 124M's shape
    python3 bench/make_gpt2.py DIR --layers 2 --embd 64 --heads 4 --ctx 128

Needs numpy and safetensors (pip install numpy safetensors).
"""
import argparse, json, os
import numpy as np
from safetensors.numpy import save_file


def byte_chars():
    """GPT-2's bytes_to_unicode."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def tokenizer(out, vocab):
    chars = byte_chars()
    v = {c: i for i, c in enumerate(chars)}
    merges = ["#version: 0.2"]
    common = [chars[ord(c)] for c in " etaoinshrdlucmfwypvbgkjqxzETAOINSHRDLUCMFWYPVBGKJQXZ.,;:!?'\n-"]
    order = common + [c for c in chars if c not in common]
    for a in order:
        for b in order:
            if len(v) + 1 >= vocab:
                break
            if a + b not in v:
                v[a + b] = len(v)
                merges.append(f"{a} {b}")
    v["<|endoftext|>"] = len(v)
    json.dump(v, open(os.path.join(out, "vocab.json"), "w"))
    open(os.path.join(out, "merges.txt"), "w").write("\n".join(merges) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--embd", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=50257)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(1)
    c, t = a.embd, {}
    normal = lambda *s: (rng.standard_normal(s, dtype=np.float32) * 0.02)
    t["wte.weight"] = normal(a.vocab, c)
    t["wpe.weight"] = normal(a.ctx, c) * 0.5
    for i in range(a.layers):
        h = f"h.{i}."
        t[h + "ln_1.weight"] = np.ones(c, np.float32)
        t[h + "ln_1.bias"] = np.zeros(c, np.float32)
        t[h + "attn.c_attn.weight"] = normal(c, 3 * c)
        t[h + "attn.c_attn.bias"] = np.zeros(3 * c, np.float32)
        t[h + "attn.c_proj.weight"] = normal(c, c)
        t[h + "attn.c_proj.bias"] = np.zeros(c, np.float32)
        t[h + "ln_2.weight"] = np.ones(c, np.float32)
        t[h + "ln_2.bias"] = np.zeros(c, np.float32)
        t[h + "mlp.c_fc.weight"] = normal(c, 4 * c)
        t[h + "mlp.c_fc.bias"] = np.zeros(4 * c, np.float32)
        t[h + "mlp.c_proj.weight"] = normal(4 * c, c)
        t[h + "mlp.c_proj.bias"] = np.zeros(c, np.float32)
        t[h + "attn.bias"] = np.tril(np.ones((a.ctx, a.ctx), np.float32))[None, None]
    t["ln_f.weight"] = np.ones(c, np.float32)
    t["ln_f.bias"] = np.zeros(c, np.float32)
    save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    cfg = {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
        "bos_token_id": a.vocab - 1, "eos_token_id": a.vocab - 1,
        "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
        "n_ctx": a.ctx, "n_embd": c, "n_head": a.heads, "n_layer": a.layers,
        "n_positions": a.ctx, "vocab_size": a.vocab,
    }
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    tokenizer(a.out, a.vocab)
    print(f"wrote {a.out}: {a.layers} layers, n_embd {c}, {a.heads} heads, ctx {a.ctx}, vocab {a.vocab}")


if __name__ == "__main__":
    main()
