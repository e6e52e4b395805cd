#!/usr/bin/env python3
# Usage (from the repository root, after a run with any --tokenizer but word,
# or on any GPT-2 directory cllm can fine-tune):
#   /tmp/torchvenv/bin/pip install torch transformers
#   /tmp/torchvenv/bin/python bench/hf_check.py DIR [PROMPT]
# Loads DIR with transformers (GPT2LMHeadModel and AutoTokenizer) and
# compares greedy decoding with cllm's own generator.
import json, subprocess, sys, torch
from transformers import AutoTokenizer, GPT2LMHeadModel
d = sys.argv[1]
prompt = sys.argv[2] if len(sys.argv) > 2 else "ROMEO:"
n = 40
doc = json.load(open(f"{d}/tokenizer.json")) if __import__("os").path.exists(f"{d}/tokenizer.json") else {}
if "chars" in doc:  # a char run of an earlier version (cllm's own format)
    chars = doc["chars"]
    stoi = {c: i for i, c in enumerate(chars)}
    encode = lambda s: [stoi[c] for c in s]
    decode = lambda ids: "".join(chars[i] for i in ids)
else:  # Hugging Face tokenizer files
    tok = AutoTokenizer.from_pretrained(d)
    encode = lambda s: tok(s)["input_ids"]
    decode = lambda ids: tok.decode(ids)
m = GPT2LMHeadModel.from_pretrained(d).eval()
ids = torch.tensor([encode(prompt)])
with torch.no_grad():
    out = m.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)
hf = prompt + decode(out[0, ids.shape[1]:].tolist())
ours = subprocess.run(["target/release/examples/generate", d, "--prompt", prompt,
                       "--max-new-tokens", str(n), "--temperature", "0"],
                      capture_output=True, text=True).stdout
print("transformers:", repr(hf))
print("cllm        :", repr(ours[: len(hf)]))
print("same greedy continuation:", ours.startswith(hf))
