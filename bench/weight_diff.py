#!/usr/bin/env python3
"""Max |Δweight| between two model.safetensors files (F32 tensors only).

    python3 bench/weight_diff.py runA/model.safetensors runB/model.safetensors
"""
import array
import json
import struct
import sys


def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        v = array.array("f")
        v.frombytes(raw[base + a : base + b])
        out[name] = v
    return out


a, b = load(sys.argv[1]), load(sys.argv[2])
worst = (0.0, None)
for name in a:
    d = max(abs(x - y) for x, y in zip(a[name], b[name]))
    if d > worst[0]:
        worst = (d, name)
print(f"max |dw| = {worst[0]:.3e} (in {worst[1]}); tensors compared: {len(a)}")
