#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/corpus/<target>/seed-*).

Seeds follow each target's input layout (see the doc comment at the top of
each fuzz_targets/*.rs): `arbitrary`-derived structs read fields in order,
integers little-endian, `Option`/`Result` behind a flag byte (odd = Some/Ok),
and the trailing `&[u8]` field takes the rest. Run from anywhere:
`python3 fuzz/make_seeds.py`.
"""

import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def u8(x):
    return struct.pack("<B", x)


def u16(x):
    return struct.pack("<H", x)


def u32(x):
    return struct.pack("<I", x)


def u64(x):
    return struct.pack("<Q", x)


def f32bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


NONE = b"\x00"


def some(b):
    return b"\x01" + b


# --- accumulate --------------------------------------------------------------


def accumulate(depth, branching, units, params, frac_bits, threads, thread_of,
               seed, merge_order, segment_len, window, bits):
    out = u8(depth) + u8(branching) + u8(units) + u8(params) + u8(frac_bits)
    out += u8(threads) + bytes(thread_of) + u64(seed) + u8(merge_order) + u8(segment_len)
    out += NONE if window is None else some(u8(window[0]) + u8(window[1]))
    return out + b"".join(u32(b) for b in bits)


def accumulate_seeds():
    normal = [f32bits(x) for x in (0.5, -1.25, 3e-3, 7.0, -2e-5, 1e3, 0.1, -0.1)]
    # depth 2, branching 3 (byte 2 -> 2 % 12 + 1), 20 units of 3 values, 3 threads.
    write("accumulate", "tree-normal",
          accumulate(2, 2, 20, 2, 32, 2, [0, 1, 2, 0, 1, 2, 0, 1], 7, 3, 1, None, normal))
    specials = [0x7FC00000, 0x7F800000, 0xFF800000, 0x00000001, 0x80000001,
                0x007FFFFF, 0x80000000, 0x00800000]
    write("accumulate", "specials",
          accumulate(1, 3, 9, 0, 149, 3, [3, 2, 1, 0, 3, 2, 1, 0], 1, 5, 0, None, specials))
    big = [f32bits(3.4e38)] * 3 + [f32bits(-3.4e38)]
    write("accumulate", "overflow",
          accumulate(3, 11, 64, 3, 0, 3, [0, 1, 1, 2, 3, 0, 2, 1], 99, 17, 2, None, big))
    # Similar exponents: carries, cancellation and ties.
    ties = [0x3F800001, 0xBF800000, 0x3F000001, 0x33800000, 0xB3800000, 0x3F7FFFFF]
    write("accumulate", "window",
          accumulate(2, 1, 40, 1, 24, 1, [1, 0, 1, 0, 0, 1, 1, 0], 3, 1, 1, (120, 3), ties))
    # Only some orders overflow a fixed-point intermediate sum (frac_bits 0).
    write("accumulate", "fixed-partial-overflow",
          accumulate(0, 0, 3, 0, 0, 1, [0, 1, 0, 0, 0, 0, 0, 0], 0, 0, 0, None,
                     [0x5E800000, 0x5E800000, 0xDE800000]))


# --- tree ----------------------------------------------------------------------


def tree(depth, branching, units, width, max_depth, big_depth=None, big_branching=None,
         big_units=None, big_max_depth=None, ids=(0, 5, 17, 1000), leaves=(0, 3, 9, 100),
         unit_samples=(0, 1, 2, 77), segment_len=3, segment_params=100):
    out = u8(depth) + (NONE if big_depth is None else some(u32(big_depth)))
    out += u8(branching) + (NONE if big_branching is None else some(u32(big_branching)))
    out += u16(units) + (NONE if big_units is None else some(u64(big_units)))
    out += u16(width) + u8(max_depth) + (NONE if big_max_depth is None else some(u32(big_max_depth)))
    out += b"".join(u32(i) for i in ids) + b"".join(u32(i) for i in leaves)
    out += b"".join(u64(u) for u in unit_samples) + u16(segment_len) + u16(segment_params)
    return out


def tree_seeds():
    write("tree", "small", tree(2, 3, 7, 2, 4))
    write("tree", "kissing", tree(3, 12, 120, 5, 8))
    write("tree", "deep-binary", tree(16, 2, 100, 256, 16))
    write("tree", "chain", tree(0, 1, 9, 1, 0, big_depth=0xFFFFFFFE, big_max_depth=0xFFFFFFFF))
    write("tree", "limits", tree(0, 2, 0, 0, 0, big_depth=31, big_units=(1 << 64) - 1,
                                 big_max_depth=40, ids=(0xFFFFFFFF, 1 << 31, 3, 4)))
    write("tree", "bad-branching", tree(1, 13, 5, 300, 2, big_branching=0))


# --- checkpoint ------------------------------------------------------------------


def safetensors(tensors):
    """tensors: list of (name, shape, values) -> F32 safetensors bytes."""
    header = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, shape, values in tensors:
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return u64(len(h)) + h + data


def gpt2_tensors(v, p, c, layers):
    shapes = [("transformer.wte.weight", [v, c]), ("transformer.wpe.weight", [p, c])]
    for i in range(layers):
        h = "transformer.h.%d." % i
        shapes += [(h + "ln_1.weight", [c]), (h + "ln_1.bias", [c]),
                   (h + "attn.c_attn.weight", [c, 3 * c]), (h + "attn.c_attn.bias", [3 * c]),
                   (h + "attn.c_proj.weight", [c, c]), (h + "attn.c_proj.bias", [c]),
                   (h + "ln_2.weight", [c]), (h + "ln_2.bias", [c]),
                   (h + "mlp.c_fc.weight", [c, 4 * c]), (h + "mlp.c_fc.bias", [4 * c]),
                   (h + "mlp.c_proj.weight", [4 * c, c]), (h + "mlp.c_proj.bias", [c])]
    shapes += [("transformer.ln_f.weight", [c]), ("transformer.ln_f.bias", [c])]
    out = []
    for k, (name, shape) in enumerate(shapes):
        n = 1
        for d in shape:
            n *= d
        out.append((name, shape, [0.01 * ((k + i) % 7 - 3) for i in range(n)]))
    return out


def config(v, p, c, layers, heads):
    return json.dumps({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "activation_function": "gelu_new", "vocab_size": v, "n_positions": p, "n_ctx": p,
        "n_embd": c, "n_layer": layers, "n_head": heads, "n_inner": None,
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
        "attn_pdrop": 0.0, "initializer_range": 0.02, "bos_token_id": None,
        "eos_token_id": None, "torch_dtype": "float32"}, indent=2).encode()


def trainer_state(step):
    return json.dumps({
        "format": "cllm-trainer-state", "version": 1, "step": str(step),
        "data_position": str(step), "rng_state": ["1", "18446744073709551615"],
        "elapsed_s": 12.345678901234567,
        "config": {"lr": 0.0003, "seed": 42, "tokenizer": "char", "betas": [0.9, 0.95]}},
        indent=2).encode()


def char_tokenizer(chars):
    return json.dumps({"format": "cllm-tokenizer", "version": 1, "kind": "char",
                       "vocab_size": len(chars), "chars": chars}, indent=2).encode()


def parts(*ps):
    """Length-prefixed parts, the last one raw."""
    return b"".join(u16(len(p)) + p for p in ps[:-1]) + ps[-1]


def checkpoint_seeds():
    model = safetensors(gpt2_tensors(4, 4, 2, 1))
    cfg = config(4, 4, 2, 1, 1)
    tok = char_tokenizer(["a", "b", "c", "d"])
    write("checkpoint", "safetensors",
          b"\x00" + safetensors([("a", [2, 2], [1.0, -2.0, 0.5, 3.25]), ("b", [3], [0.0, 1e-40, -0.0])]))
    write("checkpoint", "config", b"\x01" + cfg)
    write("checkpoint", "trainer-state", b"\x02" + trainer_state(7))
    word = json.dumps({"format": "cllm-tokenizer", "version": 1, "kind": "word",
                       "vocab_size": 8, "vocab_file": "vocab.txt",
                       "specials": ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]}).encode()
    vocab = b"<pad>\n<unk>\n<bos>\n<eos>\n<mask>\nthe\ncat\nsat\n"
    write("checkpoint", "tokenizer-word", b"\x03" + parts(word, vocab))
    write("checkpoint", "model-dir", b"\x04" + parts(cfg, tok, b"", model))
    optim = safetensors([("adamw.m", [3], [0.0, 0.1, 0.2]), ("adamw.v", [3], [0.0, 0.01, 0.04])])
    write("checkpoint", "checkpoint-dir",
          b"\x05" + parts(cfg, tok, b"", trainer_state(7), model, optim))


# --- data ------------------------------------------------------------------------


def data(corpus, word_vocab=16, store=0, seed=1, step=0, first_seq=0, n_seqs=2, seq_len=8,
         val=(True, 26), split=None, buffer_error=0, max_windows=4, raw_len=1000,
         raw_seq_len=16, disk=0, cut=10):
    out = u8(word_vocab) + u8(store) + u64(seed) + u64(step) + u64(first_seq)
    out += u8(n_seqs) + u8(seq_len)
    out += some(u8(val[1])) if val[0] else NONE + u64(val[1])
    out += NONE if split is None else some(u16(split[0]) + u16(split[1]))
    out += struct.pack("<b", buffer_error) + u16(max_windows) + u64(raw_len) + u64(raw_seq_len)
    out += u8(disk) + u16(cut)
    return out + corpus


TEXT = (b"The cat sat on the mat. The dog sat on the log.\n"
        b"A cat and a dog: <unk> <BOS> words, words, WORDS.\n")


def data_seeds():
    write("data", "byte", data(TEXT))
    write("data", "char", data(TEXT, store=1, seq_len=5, n_seqs=3, step=17, disk=1))
    write("data", "word", data(TEXT, store=2, word_vocab=9, seq_len=3, max_windows=100, disk=2, cut=30))
    utf8 = "naïve café Straße ΑΣ ς İstanbul 日本語 \u00a0nbsp\ttab\r\n".encode()
    write("data", "unicode", data(utf8 + b"\xff\xfe invalid \xc3", store=1, seq_len=4,
                                  val=(False, 0x3FE0000000000000)))
    write("data", "edges", data(b"ab", n_seqs=4, seq_len=1, first_seq=(1 << 64) - 2,
                                split=(1, 5), buffer_error=-1, raw_len=(1 << 64) - 1,
                                raw_seq_len=(1 << 63), disk=1))


if __name__ == "__main__":
    accumulate_seeds()
    tree_seeds()
    checkpoint_seeds()
    data_seeds()
