#!/usr/bin/env python3
# Usage (from the repository root, after a char-tokenizer run):
#   /tmp/torchvenv/bin/pip install torch transformers
#   /tmp/torchvenv/bin/python bench/hf_check.py runs/<run>
# Load a cllm run directory with transformers and compare greedy decoding
# with cllm's own generator (char tokenizer).
import json, subprocess, sys, torch
from transformers import GPT2LMHeadModel
d = sys.argv[1]
chars = json.load(open(f"{d}/tokenizer.json"))["chars"]
stoi = {c: i for i, c in enumerate(chars)}
prompt = "ROMEO:"
m = GPT2LMHeadModel.from_pretrained(d).eval()
ids = torch.tensor([[stoi[c] for c in prompt]])
with torch.no_grad():
    out = m.generate(ids, max_new_tokens=40, do_sample=False)
hf = prompt + "".join(chars[i] for i in out[0, len(prompt):].tolist())
ours = subprocess.run(["target/release/examples/generate", d, "--prompt", prompt, "--max-new-tokens", "40", "--temperature", "0"], capture_output=True, text=True).stdout
print("transformers:", repr(hf))
print("cllm        :", repr(ours.strip()[: len(hf)]))
print("same greedy continuation:", ours.startswith(hf))
