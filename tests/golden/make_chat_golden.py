#!/usr/bin/python3
"""Chat-template goldens: conversations rendered by jinja2 as Hugging Face renders them
(hf_jinja.py), with the text each assistant turn should teach, then token ids from the Hugging
Face tokenizers library (hf_token_ids.mjs, npm @anush008/tokenizers@0.6.0).

  tests/golden/make_chat_golden.py          writes tests/golden/chat/NAME.jsonl

Templates: the real ones in ../shared/assets/tokenizers (llama3, llama3_1, qwen3, gemma3) and the
ChatML / Mistral style ones in tests/golden/chat/*.jinja. Each row: messages,
add_generation_prompt, then text (or error), trained (the strings the loss should cover, in order;
written below from each template's rules, independently of lisa.cpp) or spans (the
{% generation %} byte ranges, for chatml_generation), and ids."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from hf_jinja import ENV  # noqa: E402

ASSETS = os.path.join(HERE, "..", "..", "..", "shared", "assets", "tokenizers")

# name -> (template source, tokenizer folder)
TEMPLATES = {
    "llama3": ("asset", "llama3"),
    "llama3_1": ("asset", "llama3_1"),
    "qwen3": ("asset", "qwen3"),
    "gemma3": ("asset", "gemma3"),
    "chatml": ("chat/chatml.jinja", "smollm2"),
    "chatml_generation": ("chat/chatml_generation.jinja", "smollm2"),
    "mistral": ("chat/mistral.jinja", "mistral"),
}


def sys_(c): return {"role": "system", "content": c}
def user(c): return {"role": "user", "content": c}
def bot(c): return {"role": "assistant", "content": c}


CONVERSATIONS = [
    ([user("Hello")], True),
    ([user("Hello")], False),
    ([user("What is 2+2?"), bot("4")], False),
    ([sys_("You are terse."), user("Name a colour."), bot("Blue.")], False),
    ([sys_("You are terse."), user("Hi")], True),
    ([user("Hi"), bot("Hello! How can I help?"), user("Tell me a joke."), bot("Why did the llama cross the road?")], False),
    ([sys_("S"), user("one"), bot("1"), user("two"), bot("2"), user("three"), bot("3")], False),
    ([sys_("S"), user("one"), bot("1"), user("two")], True),
    ([user("Grüße 🦙 — 日本語\n\ttab"), bot("  leading and trailing spaces  ")], False),
    ([user("ünïcode\r\nlines"), bot("naïve café ✓\n\nsecond paragraph\n")], False),
    ([user(""), bot("")], False),
    ([sys_(""), user("empty system"), bot("ok")], False),
    ([user("Think first."), bot("<think>\nI should add.\n</think>\n\nThe answer is 4.")], False),
    ([user("q1"), bot("<think>\nr1\n</think>\n\na1"), user("q2"), bot("<think>\nr2\n</think>\n\na2")], False),
    ([user("a"), user("b")], False),
    ([user("[INST] tricky <|im_end|> text"), bot("</s> not special here?")], False),
]

# A tool call and its result, with the tools listed (the template's tojson prints them). Only the
# text and ids are checked: which bytes a tool call should teach is each template's own choice.
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                          "required": ["city"]}}}
TOOL_CONVERSATIONS = [
    ([sys_("Use tools."), user("Weather in Paris?"),
      {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
      {"role": "tool", "content": "{\"temp\": 21}"}, bot("21 °C in Paris.")], [WEATHER]),
]


def template_text(name):
    src, tok = TEMPLATES[name]
    if src == "asset":
        with open(os.path.join(ASSETS, tok, "tokenizer_config.json")) as f:
            return json.load(f)["chat_template"]
    with open(os.path.join(HERE, src)) as f:
        return f.read()


def special_tokens(tok):
    path = os.path.join(ASSETS, tok, "tokenizer_config.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        cfg = json.load(f)
    out = {}
    for k in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        v = cfg.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        if v:
            out[k] = v
    return out


def expected_trained(name, msgs):
    """What each assistant turn should teach: its text as the template prints it, then the
    template's end-of-turn marker. Written from each template's own rules."""
    out = []
    last_query = max([i for i, m in enumerate(msgs) if m["role"] == "user"], default=-1)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        c = m["content"]
        if name in ("llama3", "llama3_1"):
            out.append(c.strip() + "<|eot_id|>")
        elif name == "gemma3":
            out.append(c.strip() + "<end_of_turn>")
        elif name in ("chatml", "chatml_generation"):
            out.append(c + "<|im_end|>")
        elif name == "mistral":
            out.append(c.strip() + "</s>")
        elif name == "qwen3":
            reasoning, content = "", c
            if "</think>" in c:
                content = c.split("</think>")[-1].lstrip("\n")
                reasoning = c.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
            if i > last_query and reasoning:
                # "<think>\n" is the same whatever is said; the reasoning onwards is the reply's
                out.append(reasoning.strip("\n") + "\n</think>\n\n" + content.lstrip("\n") + "<|im_end|>")
            else:
                out.append(content + "<|im_end|>")
    return out


def render_with_spans(template, ctx):
    """Renders; for {% generation %} blocks, their byte ranges (as HF's assistant mask)."""
    marked = template.replace("{%- generation %}", "{%- generation %}\x03").replace(
        "{% endgeneration %}", "\x04{% endgeneration %}")
    text = ENV.from_string(marked).render(**ctx)
    spans, clean, b = [], bytearray(), None
    for ch in text:
        if ch == "\x03":
            b = len(clean)
        elif ch == "\x04":
            spans.append([b, len(clean)])
        else:
            clean += ch.encode()
    return clean.decode(), spans


def main():
    rows_by_name = {}
    for name, (src, tok) in TEMPLATES.items():
        tmpl = template_text(name)
        rows = []
        for msgs, gen in CONVERSATIONS:
            ctx = dict(special_tokens(tok), messages=msgs, tools=None, documents=None, add_generation_prompt=gen)
            row = {"messages": msgs, "add_generation_prompt": gen}
            try:
                if name == "chatml_generation":
                    row["text"], row["spans"] = render_with_spans(tmpl, ctx)
                else:
                    row["text"] = ENV.from_string(tmpl).render(**ctx)
                if not gen:
                    row["trained"] = expected_trained(name, msgs)
            except Exception as e:  # the referee's verdict
                row["error"] = "%s: %s" % (type(e).__name__, e)
            rows.append(row)
        for msgs, tools in TOOL_CONVERSATIONS:
            ctx = dict(special_tokens(tok), messages=msgs, tools=tools, documents=None, add_generation_prompt=False)
            row = {"messages": msgs, "tools": tools, "add_generation_prompt": False}
            try:
                row["text"] = ENV.from_string(tmpl).render(**ctx)
            except Exception as e:  # the referee's verdict
                row["error"] = "%s: %s" % (type(e).__name__, e)
            rows.append(row)
        rows_by_name[name] = rows
    # token ids of each text from the Hugging Face tokenizers library
    req = [{"name": n, "tokenizer": os.path.join(ASSETS, TEMPLATES[n][1], "tokenizer.json"),
            "texts": [r.get("text") for r in rows]} for n, rows in rows_by_name.items()]
    res = subprocess.run(["node", os.path.join(HERE, "hf_token_ids.mjs")], input=json.dumps(req),
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    ids = json.loads(res.stdout)
    for name, rows in rows_by_name.items():
        for r, i in zip(rows, ids[name]):
            if i is not None:
                r["ids"] = i
        out = os.path.join(HERE, "chat", name + ".jsonl")
        with open(out + ".tmp", "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(out + ".tmp", out)
        print("wrote", out, len(rows), "rows")


if __name__ == "__main__":
    main()
