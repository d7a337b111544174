#!/usr/bin/env python3
"""Data for the quality study (bench/quality.sh), from public text that Debian ships.

  prepare.py OUT [--smoke]

Writes, under OUT:
  tokenizer/        a byte-level BPE tokenizer (tokenizer.json, tokenizer_config.json) learned on
                    the King James Bible: GPT-2's byte alphabet, merges learned here
  kjv/train, kjv/eval          text_only: the Bible in passages of consecutive verses
                               (every 50th passage held out)
  define/train, define/eval    text2text: "Define: WORD" -> the first definition in the 1913
                               Webster (GCIDE); eval words are never trained on
  define/eval_words.json       [{"prompt", "answer"}] for the greedy exact-match metric
  fortunes/train, fortunes/eval  text_only: Unix fortunes (300 of every 10th held out)
Everything is deterministic (fixed seeds, sorted inputs). Standard library only.
"""
import collections
import gzip
import json
import os
import random
import re
import subprocess
import sys

VOCAB = 4096          # total ids: 256 bytes + merges + 1 special token
SPECIAL = "<|endoftext|>"


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
    os.replace(tmp, path)


def dataset(path, kind, instances):
    write_json(path, {"type": kind, "instances": instances})


# ---- the corpus: the King James Bible ---------------------------------------------------------
def kjv_passages():
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], check=True, capture_output=True, text=True).stdout
    verses = []
    for line in out.splitlines():
        m = re.match(r"^\S+?\d+:\d+ (.*)$", line)
        if m:
            verses.append(m.group(1).strip())
        elif line.strip() and verses:  # a verse wrapped onto the next line
            verses[-1] += " " + line.strip()
    passages, cur = [], ""
    for v in verses:  # passages of about 500 characters, whole verses
        cur = (cur + " " + v).strip()
        if len(cur) >= 500:
            passages.append(cur)
            cur = ""
    if cur:
        passages.append(cur)
    return passages


# ---- byte-level BPE ---------------------------------------------------------------------------
def byte_alphabet():
    """GPT-2's printable stand-ins for the 256 bytes (the alphabet of a ByteLevel pre-tokenizer)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


# The pieces a ByteLevel pre-tokenizer cuts text into (GPT-2's pattern, for ASCII text; Python's
# re has no \p{L}, and the Bible is ASCII).
PIECE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def bpe_learn(texts, n_merges):
    alpha = byte_alphabet()
    counts = collections.Counter()
    for t in texts:
        counts.update(PIECE.findall(t))
    words = [[alpha[b] for b in w.encode("utf-8")] for w in counts]
    freq = list(counts.values())
    pairs = collections.Counter()
    where = collections.defaultdict(set)  # pair -> words holding it
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += freq[i]
            where[(a, b)].add(i)
    merges = []
    for _ in range(n_merges):
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # ties: the larger pair, fixed
        if pairs[best] < 2:
            break
        merges.append(best)
        joined = best[0] + best[1]
        for i in sorted(where.pop(best, ())):
            w = words[i]
            for a, b in zip(w, w[1:]):  # forget this word's pairs, re-add after the merge
                pairs[(a, b)] -= freq[i]
                if pairs[(a, b)] <= 0:
                    del pairs[(a, b)]
            nw, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == best[0] and w[j + 1] == best[1]:
                    nw.append(joined)
                    j += 2
                else:
                    nw.append(w[j])
                    j += 1
            words[i] = nw
            for a, b in zip(nw, nw[1:]):
                pairs[(a, b)] += freq[i]
                where[(a, b)].add(i)
        pairs.pop(best, None)
    vocab = {SPECIAL: 0}
    for b in range(256):
        vocab[alpha[b]] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, [a + " " + b for a, b in merges]


def write_tokenizer(out, vocab, merges):
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 0, "content": SPECIAL, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    write_json(os.path.join(out, "tokenizer.json"), tok)
    write_json(os.path.join(out, "tokenizer_config.json"),
               {"bos_token": SPECIAL, "eos_token": SPECIAL, "pad_token": SPECIAL, "add_bos_token": False,
                "model_max_length": 1024})


# ---- the downstream task: definitions from Webster's 1913 (GCIDE) -------------------------------
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(s):
    v = 0
    for c in s:
        v = v * 64 + B64.index(c)
    return v


def strip_brackets(s):
    prev = None
    while prev != s:
        prev = s
        s = re.sub(r"\[[^\[\]]*\]", " ", s)
        s = re.sub(r"\([^()]*\)", " ", s)
    return s


HEAD = re.compile(r"^([A-Za-z]+) \\[^\\]*\\,?\s*")
POS = re.compile(r"^(?:(?:[a-z]{1,5}\.|&|,)\s*)+")


def first_definition(entry, word):
    """The first definition of an entry whose headword is `word`, or None if it is not plain."""
    para = []
    for line in entry.splitlines():
        if not line.strip():
            if para:
                break
            continue
        para.append(line.strip())
    text = " ".join(para)
    m = HEAD.match(text)
    if not m or m.group(1) != word:
        return None
    body = strip_brackets(text[m.end():])
    body = POS.sub("", body.strip())
    body = re.sub(r"^(?:1\.|\(a\))\s*", "", body)
    body = body.replace("{", "").replace("}", "").replace("\"", "")
    body = re.sub(r"--\S+", "", body)  # citations (--Milton.)
    body = re.sub(r"\s+", " ", body).strip()
    cut = re.search(r"[.;:](\s|$)", body)
    if not cut:
        return None
    body = body[:cut.start()].strip()
    n = len(body.split())
    if n < 2 or n > 16 or not re.match(r"^[A-Za-z]", body) or not re.fullmatch(r"[A-Za-z ,'\-]+", body):
        return None
    return body + "."


def gcide_pairs():
    data = gzip.open("/usr/share/dictd/gcide.dict.dz").read()
    seen, pairs = set(), []
    with open("/usr/share/dictd/gcide.index", encoding="utf-8") as f:
        for line in f:
            word, off, ln = line.rstrip("\n").split("\t")
            if not re.fullmatch(r"[A-Z][a-z]{2,}", word) or word in seen:
                continue
            entry = data[b64(off):b64(off) + b64(ln)].decode("utf-8", "replace")
            d = first_definition(entry, word)
            if d:
                seen.add(word)
                pairs.append((word, d))
    return pairs


def prompt(word):
    return "Define: %s\nDefinition:" % word


# ---- the second task: fortunes -----------------------------------------------------------------
def fortunes():
    root = "/usr/share/games/fortunes"
    out = []
    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name)
        if "." in name or not os.path.isfile(p) or os.path.islink(p):
            continue
        text = open(p, encoding="utf-8", errors="replace").read()
        for f in text.split("\n%\n"):
            f = f.strip("\n%").rstrip()
            if 40 <= len(f) <= 600:
                out.append(f)
    return out


def main():
    out = sys.argv[1]
    smoke = "--smoke" in sys.argv
    rng = random.Random(1913)

    passages = kjv_passages()
    n_merges = (512 if smoke else VOCAB - 257)
    vocab, merges = bpe_learn(passages, n_merges)
    write_tokenizer(os.path.join(out, "tokenizer"), vocab, merges)
    ev = [p for i, p in enumerate(passages) if i % 50 == 0]
    tr = [p for i, p in enumerate(passages) if i % 50 != 0]
    if smoke:
        tr, ev = tr[:400], ev[:20]
    dataset(os.path.join(out, "kjv/train/kjv.json"), "text_only", [{"text": t} for t in tr])
    dataset(os.path.join(out, "kjv/eval/kjv.json"), "text_only", [{"text": t} for t in ev])

    pairs = gcide_pairs()
    rng.shuffle(pairs)
    n_eval, n_train = (20, 200) if smoke else (300, 8000)
    held, train = pairs[:n_eval], pairs[n_eval:n_eval + n_train]
    dataset(os.path.join(out, "define/train/define.json"), "text2text",
            [{"input": prompt(w), "output": " " + d} for w, d in train])
    dataset(os.path.join(out, "define/eval/define.json"), "text2text",
            [{"input": prompt(w), "output": " " + d} for w, d in held])
    write_json(os.path.join(out, "define/eval_words.json"), [{"prompt": prompt(w), "answer": d} for w, d in held])

    fs = fortunes()
    rng.shuffle(fs)
    ftr = [f for i, f in enumerate(fs) if i % 10 != 0]
    fev = [f for i, f in enumerate(fs) if i % 10 == 0][:300]  # held out (the rest of every 10th unused)
    if smoke:
        ftr, fev = ftr[:200], fev[:20]
    dataset(os.path.join(out, "fortunes/train/fortunes.json"), "text_only", [{"text": t} for t in ftr])
    dataset(os.path.join(out, "fortunes/eval/fortunes.json"), "text_only", [{"text": t} for t in fev])
    print(json.dumps({"kjv_passages": len(passages), "merges": len(merges), "definitions": len(pairs),
                      "define_train": len(train), "define_eval": len(held), "fortunes_train": len(ftr),
                      "fortunes_eval": len(fev)}))


if __name__ == "__main__":
    main()
