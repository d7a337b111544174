#!/usr/bin/env python3
"""Writes the bundled default task of run_finetune_with_lisa.sh (no arguments):

  data/train/facts.json   text2text instruction/response pairs (LMFlow format)
  data/eval/facts.json    held-out pairs: the same facts asked with phrasings not in train
  data/tokenizer/         a small byte-level BPE tokenizer.json learned on the data here

The task is small on purpose: animal sounds, colours of things, opposites and plurals, each
asked several ways, with one fixed answer pattern. A 1.6M-parameter model made by `lisa init`
learns it in a few minutes on 2 cores. Deterministic: run it again and the files are the same.
"""
import json
import os
import random
import re
from collections import Counter

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

SOUNDS = {"cow": "moo", "dog": "woof", "cat": "meow", "duck": "quack", "sheep": "baa", "pig": "oink",
          "horse": "neigh", "owl": "hoot", "lion": "roar", "frog": "croak", "bee": "buzz", "mouse": "squeak",
          "snake": "hiss", "goat": "bleat", "crow": "caw", "wolf": "howl", "donkey": "bray", "chick": "cheep",
          "turkey": "gobble", "dove": "coo", "bear": "growl", "hen": "cluck", "seal": "bark", "goose": "honk"}
COLORS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "banana": "yellow",
          "tomato": "red", "carrot": "orange", "plum": "purple", "lemon": "yellow", "leaf": "green",
          "cloud": "white", "cherry": "red", "crow": "black", "ocean": "blue", "pumpkin": "orange",
          "grape": "purple", "milk": "white", "lime": "green", "strawberry": "red", "night": "dark"}
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "up": "down", "happy": "sad", "light": "dark",
             "old": "young", "open": "closed", "early": "late", "full": "empty", "hard": "soft",
             "loud": "quiet", "rich": "poor", "wet": "dry", "high": "low", "near": "far", "strong": "weak",
             "thick": "thin", "clean": "dirty", "first": "last"}
PLURALS = {"cat": "cats", "box": "boxes", "child": "children", "mouse": "mice", "foot": "feet",
           "city": "cities", "tooth": "teeth", "bus": "buses", "leaf": "leaves", "man": "men",
           "woman": "women", "dish": "dishes", "baby": "babies", "knife": "knives", "goose": "geese",
           "wolf": "wolves", "story": "stories", "church": "churches", "person": "people", "fox": "foxes"}

TASKS = [
    (SOUNDS, "A {k} says {v}.",
     ["What sound does a {k} make?", "What does a {k} say?", "Which sound comes from a {k}?",
      "How does a {k} sound?"],
     ["Tell me the sound a {k} makes.", "A {k} makes what sound?"]),
    (COLORS, "The {k} is {v}.",
     ["What color is the {k}?", "What colour is the {k}?", "Which color is the {k}?", "Name the color of the {k}."],
     ["Tell me the color of the {k}.", "The {k} has what color?"]),
    (OPPOSITES, "The opposite of {k} is {v}.",
     ["What is the opposite of {k}?", "Give the opposite of {k}.", "Name the opposite of {k}.",
      "Which word is the opposite of {k}?"],
     ["Tell me the opposite of {k}.", "The opposite of {k} is what?"]),
    (PLURALS, "The plural of {k} is {v}.",
     ["What is the plural of {k}?", "Give the plural of {k}.", "How do you say more than one {k}?",
      "Name the plural of {k}."],
     ["Tell me the plural of {k}.", "More than one {k} is called what?"]),
]


def pairs(which):
    out = []
    for table, answer, train_q, eval_q in TASKS:
        for k, v in table.items():
            for q in (train_q if which == "train" else eval_q):
                out.append({"input": q.format(k=k), "output": answer.format(k=k, v=v)})
    return out


# ------------------------------------------------------------------ byte-level BPE
def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


SPLIT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def train_bpe(texts, vocab_size, specials):
    b2u = bytes_to_unicode()
    words = Counter()
    for t in texts:
        for w in SPLIT.findall(t):
            words[tuple(b2u[b] for b in w.encode())] += 1
    vocab = {s: i for i, s in enumerate(specials)}
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        vocab[a + b] = len(vocab)
        new = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return vocab, merges


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    random.seed(0)
    train, evals = pairs("train"), pairs("eval")
    random.shuffle(train)
    random.shuffle(evals)
    write_json(os.path.join(ROOT, "data", "train", "facts.json"), {"type": "text2text", "instances": train})
    write_json(os.path.join(ROOT, "data", "eval", "facts.json"), {"type": "text2text", "instances": evals})
    specials = ["<pad>", "<s>", "</s>"]
    texts = [p["input"] + " " + p["output"] for p in train + evals]
    vocab, merges = train_bpe(texts, 512, specials)
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, s in enumerate(specials)]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges},
    }
    write_json(os.path.join(ROOT, "data", "tokenizer", "tokenizer.json"), tok)
    write_json(os.path.join(ROOT, "data", "tokenizer", "tokenizer_config.json"),
               {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "add_bos_token": True,
                "add_eos_token": False, "model_max_length": 256, "tokenizer_class": "PreTrainedTokenizerFast"})
    print(f"train {len(train)} pairs, eval {len(evals)} pairs, vocab {len(vocab)} ({len(merges)} merges)")


if __name__ == "__main__":
    main()
