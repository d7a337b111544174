#!/usr/bin/env python3
"""Writes tests/golden/tinystories.json: what PyTorch and the Hugging Face tokenizers library say
about the real TinyStories-656K model in ../shared/assets/models/tinystories-656k (stored as
Hugging Face saved it: its tied embedding only as lm_head.weight, named in the file's metadata).

The model runs in make_golden.py's plain PyTorch Llama (no code shared with the C++), with the
embedding taken from lm_head.weight as transformers ties it. Token ids and decoded text come
from the Hugging Face `tokenizers` library (npm @anush008/tokenizers@0.6.0, through node), not
from lisa.cpp's tokenizer.

  texts        per story text: ids with the post-processor's BOS, and the text_only loss
               (ids + EOS, every token learned) PyTorch gives, summed with its token count
  greedy       a prompt's ids, 40 greedy tokens after it, and their decoded text

Run:  scripts/install-deps.sh --golden && mkdir -p /tmp/hf && (cd /tmp/hf && npm install
      @anush008/tokenizers@0.6.0) && NODE_PATH=/tmp/hf/node_modules /usr/bin/python3 tests/golden/make_tinystories.py
"""
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden  # noqa: E402  (the reference forward and the safetensors reader)

TEXTS = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.",
    "Tom had a red ball. He threw it high in the sky and his dog ran after it.",
    "The cat sat on the mat and looked at the bird. \"Hello, bird!\" said the cat.",
]
PROMPT = "Once upon a time, there was a little dog"

NODE = r"""
const { Tokenizer } = require("@anush008/tokenizers");
let input = "";
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", async () => {
  const job = JSON.parse(input);
  const tok = Tokenizer.fromFile(job.tokenizer);
  const out = { encode: [], decode: [] };
  for (const t of job.texts) out.encode.push(Array.from((await tok.encode(t, null, { addSpecialTokens: true })).getIds()));
  for (const ids of job.decode) out.decode.push(await tok.decode(ids, true));
  process.stdout.write(JSON.stringify(out));
});
"""


def hf_tokenizer(tokenizer_path, texts, decode):
    job = json.dumps({"tokenizer": tokenizer_path, "texts": texts, "decode": decode})
    r = subprocess.run(["node", "-e", NODE], input=job, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def main():
    assets = os.environ.get("LISA_ASSETS", os.path.join(HERE, "..", "..", "..", "shared", "assets"))
    mdir = os.path.join(assets, "models", "tinystories-656k")
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    P = make_golden.st_load(os.path.join(mdir, "model.safetensors"))
    assert "model.embed_tokens.weight" not in P and cfg["tie_word_embeddings"]
    P["model.embed_tokens.weight"] = P["lm_head.weight"]  # tied, as transformers loads it
    tok = os.path.join(mdir, "tokenizer.json")
    enc = hf_tokenizer(tok, TEXTS + [PROMPT], [])["encode"]
    eos = cfg["eos_token_id"]
    out = {"model": "tinystories-656k", "texts": []}
    with torch.no_grad():
        for text, ids in zip(TEXTS, enc[:-1]):
            full = ids + [eos]
            total, count = make_golden.loss_of(cfg, P, [(full, full)])
            out["texts"].append({"text": text, "ids": ids, "loss_sum": total, "tokens": count})
        ids = list(enc[-1])
        for _ in range(40):
            lg = make_golden.forward(cfg, P, torch.tensor(ids))
            ids.append(int(lg[-1].argmax()))
    gen = ids[len(enc[-1]):]
    text = hf_tokenizer(tok, [], [gen])["decode"][0]
    out["greedy"] = {"prompt": PROMPT, "prompt_ids": enc[-1], "generated_ids": gen, "text": text}
    total = sum(t["loss_sum"] for t in out["texts"])
    count = sum(t["tokens"] for t in out["texts"])
    out["text_only_loss"] = total / count
    with open(os.path.join(HERE, "tinystories.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print("tinystories:", out["text_only_loss"], repr(text))


if __name__ == "__main__":
    main()
