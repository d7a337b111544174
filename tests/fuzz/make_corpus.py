#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs (tests/fuzz/corpus/TARGET/seed-*): small valid files of
each kind lisa.cpp reads. Regression inputs (files named TARGET-crash-*) that once crashed it are
added next to them by hand and kept. Run from the repository root: python3 tests/fuzz/make_corpus.py

The gguf_in seeds are GGUF files written by lisa itself and by llama.cpp's quantizer, kept as
made (2026-12-05): tiny models from `lisa init` (aidreams' SentencePiece-style vocabulary, the
bundled byte-level one) exported by `lisa export-gguf --outtype q8_0 / f16`, and a 256-wide Qwen3
exported as f32 and quantized by llama_model_quantize to Q4_K_M (q4_K, q6_K and fallback blocks).
"""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)"""
    header, off, blob = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blob += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


f32 = lambda *v: struct.pack(f"<{len(v)}f", *v)
put("safetensors", "f32", safetensors([("model.embed_tokens.weight", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6)),
                                       ("model.norm.weight", "F32", [3], f32(1, 1, 1))], {"format": "pt"}))
put("safetensors", "mixed", safetensors([("a", "BF16", [4], struct.pack("<4H", 0x3f80, 0x4000, 0, 0xbf80)),
                                         ("b", "F16", [1, 2], struct.pack("<2H", 0x3c00, 0x4000)),
                                         ("c", "F32", [0], b""), ("d", "F32", [], f32(7))]))
put("safetensors", "empty", safetensors([], {}))

for name in ("tiny-llama", "qwen3-0.6b", "gemma-3-1b", "gemma-3-270m", "smollm3-3b", "phi-3-mini-4k", "phi-4-mini"):
    put("config", name, open(os.path.join(ROOT, "configs", name + ".json")).read())
put("config", "mistral", json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32000,
                                     "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                     "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 16,
                                     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}))

put("tokenizer", "bytelevel-bpe", open(os.path.join(ROOT, "data", "tokenizer", "tokenizer.json")).read())
# a Llama-2-style SentencePiece BPE: Metaspace, byte fallback, a template post-processor
vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    vocab[f"<0x{b:02X}>"] = len(vocab)
for piece in ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "▁w", "he", "ll", "llo", "or", "ld"]:
    vocab.setdefault(piece, len(vocab))
spm = {
    "version": "1.0",
    "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True} for c, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                       {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                                  {"type": "ByteFallback"}, {"type": "Fuse"},
                                                  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": vocab,
              "merges": ["▁ h", "▁ w", "h e", "l l", "ll o", "o r", "l d"]},
}
put("tokenizer", "metaspace-bpe", json.dumps(spm, ensure_ascii=False, indent=1))
put("tokenizer_config", "bundled", open(os.path.join(ROOT, "data", "tokenizer", "tokenizer_config.json")).read())
put("tokenizer_config", "llama-flags-named-templates", json.dumps({
    "tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True, "add_eos_token": False,
    "bos_token": {"content": "<|endoftext|>", "lstrip": False}, "eos_token": "<|endoftext|>", "pad_token": None,
    "additional_special_tokens": ["<|endoftext|>"],
    "chat_template": [{"name": "default", "template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"},
                      {"name": "tool_use", "template": "{{ tools }}"}]}, indent=1))
put("adapter_config", "peft", json.dumps({
    "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "bias": "none", "use_rslora": False,
    "use_dora": False, "fan_in_fan_out": False, "modules_to_save": None}, indent=1))

put("dataset", "text2text", "\x00" + json.dumps({"type": "text2text", "instances": [
    {"input": "What sound does a dog make?", "output": "A dog says woof."}, {"input": "Hot?", "output": "Cold."}]}))
put("dataset", "text_only", "\x00" + json.dumps({"type": "text_only", "instances": [{"text": "one two three"}, {"text": ""}]}))
put("dataset", "conversation", "\x04" + json.dumps({"type": "conversation", "instances": [
    {"system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                         {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]}]}))
put("dataset", "openai-jsonl", "\x05" + "\n".join(json.dumps(r) for r in [
    {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
    {"conversations": [{"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]}]) + "\n")
put("dataset", "alpaca-list", "\x04" + json.dumps([{"instruction": "Add", "input": "1 2", "output": "3"},
                                                  {"instruction": "Greet", "output": "Hi"}]))

# LMFlow's documented record (conversation_id, system, tools, messages, a trailing user turn) with
# its templates: the first byte picks llama2 (6), hymba (8), zephyr (10), qwen3 (12), gemma3 (14)
lmflow_rec = {"type": "conversation", "instances": [
    {"conversation_id": "c1", "system": "S", "tools": ["TOOL_1", "TOOL_2"],
     "messages": [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\nA1"},
                  {"role": "user", "content": "U2"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "U3"}]},
    {"conversation_id": "c2", "system": "  ", "tools": [],
     "messages": [{"role": "user", "content": " U "}, {"role": "assistant", "content": " A "}]}]}
for pick, name in ((6, "llama2"), (8, "hymba"), (10, "zephyr")):
    put("dataset", "lmflow-" + name, chr(pick) + json.dumps(lmflow_rec))
for pick, name in ((12, "qwen3"), (14, "gemma3")):  # (the Jinja presets take no tools)
    rec = json.loads(json.dumps(lmflow_rec))
    for r in rec["instances"]:
        r["tools"] = []
    put("dataset", "lmflow-" + name, chr(pick) + json.dumps(rec))

for name in ("chatml", "chatml_generation", "mistral"):
    put("jinja", name, open(os.path.join(ROOT, "tests", "golden", "chat", name + ".jinja")).read())
put("jinja", "features", "{%- set ns = namespace(n=0) -%}{% macro m(x, y='d') %}[{{ x ~ y }}]{% endmacro %}"
    "{% for msg in messages if msg.role != 'tool' %}{% set ns.n = ns.n + 1 %}{{ loop.index }}:{{ m(msg.role) }}"
    "{{ msg.content | trim | upper }}{% if not loop.last %}, {% endif %}{% endfor %}{{ ns.n }}"
    "{{ messages[-1].tool_calls | tojson if messages[-1].tool_calls is defined }}{{ 'x' * 3 }}{{ [3,1,2] | sort | join('-') }}"
    "{{ (messages | length) // 2 }}{{ '%s=%d' % ('a', 1) }}{{ {'k': 'v'}.items() | list }}{{ 'abc'[::-1] }}")
put("gguf", "tiny", json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512,
                                "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
                                "rms_norm_eps": 1e-5, "tie_word_embeddings": False}))
# outputs: the first byte picks the file (0 lock file, 1 trainer_state.json, 2 training_args.json
# and tokenizer_config.json, 3 model.safetensors of a folder)
put("outputs", "lock", "\x00" + json.dumps({"pid": 12, "host": "h", "command": "lisa train",
                                            "started": "2026-12-04 22:00:00 UTC"}) + "\n")
put("outputs", "trainer-state", "\x01" + json.dumps({"global_step": 2, "method": "lisa", "seed": 42}))
put("outputs", "args", "\x02" + json.dumps({"conversation_template": "chatml", "chat_template": "<|im_start|>{{ m }}",
                                            "resolved": {"dataset_type": "conversation"}}))
put("outputs", "safetensors-alias", b"\x03" + safetensors(
    [("lm_head.weight", "F32", [2, 2], f32(1, 2, 3, 4))],
    {"format": "pt", "model.embed_tokens.weight": "lm_head.weight"}))
