// Hugging Face folder -> GGUF. The mapping follows what llama.cpp's loader reads (names, keys,
// RoPE order, Gemma's norm convention); anything llama.cpp would run differently from lisa.cpp is
// refused with the reason, or warned about where only long generations would differ.
#include "export/export_gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "io/fs.h"
#include "model/arch/arch.h"
#include "model/layer.h"
#include "model/lora.h"
#include "model/model_files.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

using json = nlohmann::json;

ggml_type gguf_outtype(const std::string& s) {
    if (s == "f32") return ggml_type::f32;
    if (s == "f16") return ggml_type::f16;
    if (s == "bf16") return ggml_type::bf16;
    if (s == "q8_0") return ggml_type::q8_0;
    if (s == "q4_0") return ggml_type::q4_0;
    if (s == "q4_K") return ggml_type::q4_K;
    fail(strf("--outtype %s: expected f32, f16, bf16, q8_0, q4_0 or q4_K", s.c_str()));
}

// llama.cpp's file type numbers (LLAMA_FTYPE_*) for general.file_type
static uint32_t file_type_of(ggml_type t) {
    switch (t) {
        case ggml_type::f32: return 0;
        case ggml_type::f16: return 1;
        case ggml_type::q8_0: return 7;
        case ggml_type::q4_0: return 2;   // LLAMA_FTYPE_MOSTLY_Q4_0
        case ggml_type::q4_K: return 14;  // LLAMA_FTYPE_MOSTLY_Q4_K_S
        case ggml_type::bf16: return 32;
        default: return 0;  // (exported types only)
    }
}

// ------------------------------------------------------------------ architecture

// llama.cpp's name of a layer tensor ("blk.N." + this)
static const char* gguf_layer_suffix(int t) {
    switch (t) {
        case LT_ATTN_NORM: return "attn_norm.weight";
        case LT_QKV: return "attn_qkv.weight";
        case LT_Q: return "attn_q.weight";
        case LT_Q_BIAS: return "attn_q.bias";
        case LT_K: return "attn_k.weight";
        case LT_K_BIAS: return "attn_k.bias";
        case LT_V: return "attn_v.weight";
        case LT_V_BIAS: return "attn_v.bias";
        case LT_Q_NORM: return "attn_q_norm.weight";
        case LT_K_NORM: return "attn_k_norm.weight";
        case LT_O: return "attn_output.weight";
        case LT_O_BIAS: return "attn_output.bias";
        case LT_MLP_NORM: return "ffn_norm.weight";
        case LT_POST_ATTN_NORM: return "post_attention_norm.weight";
        case LT_PRE_FF_NORM: return "ffn_norm.weight";
        case LT_POST_FF_NORM: return "post_ffw_norm.weight";
        case LT_GATE_UP: return "ffn_up.weight";  // llama.cpp splits it in its SwiGLU, gate half first
        case LT_GATE: return "ffn_gate.weight";
        case LT_UP: return "ffn_up.weight";
        case LT_DOWN: return "ffn_down.weight";
    }
    return "?";
}

std::string gguf_tensor_name(const decoder_tensor_info& t) {
    switch (t.field) {
        case kFieldEmbed: return "token_embd.weight";
        case kFieldNorm: return "output_norm.weight";
        case kFieldHead: return "output.weight";
        default: return "blk." + std::to_string(t.layer) + "." + gguf_layer_suffix(t.field);
    }
}

// llama3 rope scaling as llama.cpp takes it: a rope_freqs tensor of per-frequency divisors
std::vector<float> gguf_llama3_rope_factors(const model_config& c) {
    std::vector<float> f;
    const double factor = c.rope.factor, lo = c.rope.low_freq_factor, hi = c.rope.high_freq_factor;
    const double old = (double)c.rope.original_max_position_embeddings, low_wl = old / lo, high_wl = old / hi;
    for (int64_t i = 0; i < c.head_dim / 2; i++) {
        const float freq = (float)(1.0 / std::pow(c.rope.theta, (double)(float)(2 * i) / (double)c.head_dim));
        const double wl = 2.0 * M_PI / freq;
        if (wl < high_wl) f.push_back(1.0f);
        else if (wl > low_wl) f.push_back((float)factor);
        else {
            const double smooth = (old / wl - lo) / (hi - lo);
            f.push_back((float)(1.0 / ((1.0 - smooth) / factor + smooth)));
        }
    }
    return f;
}

// ------------------------------------------------------------------ vocabulary

// llama.cpp token types
enum : int32_t { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

// The pre-tokenizer regexes of the byte-level BPE families llama.cpp implements, by its names.
static const struct {
    const char* regex;
    const char* pre;
} kKnownSplits[] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "llama-bpe"},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "qwen2"},
};

const char* gguf_pre_split_regex(const std::string& pre) {
    for (const auto& k : kKnownSplits)
        if (pre == k.pre) return k.regex;
    return nullptr;
}

static bool has_type(const json& node, const char* type) {
    if (!node.is_object()) return false;
    if (node.value("type", "") == type) return true;
    for (const char* list : {"pretokenizers", "normalizers", "decoders", "processors"})
        if (node.contains(list) && node[list].is_array())
            for (const json& x : node[list])
                if (has_type(x, type)) return true;
    return false;
}

// tokenizer.ggml.pre of a byte-level BPE tokenizer.json, or fails naming what llama.cpp lacks
static std::string byte_level_pre(const json& pre, const std::string& path) {
    auto unsupported = [&](const std::string& what) {
        fail(strf("%s: field 'pre_tokenizer': %s; llama.cpp has no pre-tokenizer that splits text this way, so "
                  "it would tokenize differently from Hugging Face", path.c_str(), what.c_str()));
    };
    if (!pre.is_object()) unsupported("missing");
    const std::string type = pre.value("type", "");
    if (type == "ByteLevel") {
        if (!pre.value("use_regex", true)) unsupported("ByteLevel without its regex");
        return "gpt-2";
    }
    if (type != "Sequence" || !pre.contains("pretokenizers") || !pre["pretokenizers"].is_array())
        unsupported("type " + type);
    const json& seq = pre["pretokenizers"];
    // SmolLM: single digits, then GPT-2's byte-level regex
    if (seq.size() == 2 && seq[0].value("type", "") == "Digits" && seq[0].value("individual_digits", false) &&
        seq[1].value("type", "") == "ByteLevel" && seq[1].value("use_regex", true))
        return "smollm";
    // Llama 3, Qwen: one Split regex, then ByteLevel without its own regex
    if (seq.size() == 2 && seq[0].value("type", "") == "Split" && seq[1].value("type", "") == "ByteLevel" &&
        !seq[1].value("use_regex", true) && seq[0].contains("pattern") && seq[0]["pattern"].contains("Regex")) {
        const std::string re = seq[0]["pattern"]["Regex"].get<std::string>();
        for (const auto& k : kKnownSplits)
            if (re == k.regex) return k.pre;
        unsupported("Split regex " + json(re).dump());
    }
    unsupported("this Sequence of pre-tokenizers");
    return "";
}

struct gguf_vocab {
    std::string              model, pre;  // tokenizer.ggml.model / .pre
    std::vector<std::string> tokens;
    std::vector<float>       scores;      // SentencePiece-style only
    std::vector<int32_t>     types;
    std::vector<std::string> merges;      // byte-level only
    bool                     add_space_prefix = false;
    int64_t                  unk_id = -1;
};

static std::vector<std::pair<std::string, std::string>> read_merges(const json& m, const std::string& path) {
    std::vector<std::pair<std::string, std::string>> out;
    if (!m.is_array()) fail(strf("%s: field 'model.merges': expected a list", path.c_str()));
    out.reserve(m.size());
    for (const json& x : m) {
        if (x.is_string()) {
            const std::string s = x.get<std::string>();
            const size_t sp = s.find(' ', 1);
            if (sp == std::string::npos) fail(strf("%s: field 'model.merges': entry \"%s\" is not \"a b\"", path.c_str(), s.c_str()));
            out.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (x.is_array() && x.size() == 2 && x[0].is_string() && x[1].is_string()) {
            out.emplace_back(x[0].get<std::string>(), x[1].get<std::string>());
        } else {
            fail(strf("%s: field 'model.merges': expected \"a b\" strings or [a, b] pairs", path.c_str()));
        }
    }
    return out;
}

static gguf_vocab make_vocab(const std::string& dir, int64_t vocab_size, std::vector<std::string>* warnings) {
    const std::string path = model_file_label(dir, "tokenizer.json");
    std::string text;
    if (!model_text_file(dir, "tokenizer.json", &text))
        fail(strf("%s: missing; the GGUF needs the tokenizer (copy the base model's tokenizer files into the folder)",
                  path.c_str()));
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        fail(strf("%s: not valid JSON (%s)", path.c_str(), json_error(e).c_str()));
    }
    const json& m = j["model"];
    if (!m.is_object() || m.value("type", "BPE") != "BPE" || !m.contains("vocab") || !m["vocab"].is_object())
        fail(strf("%s: field 'model.type': only BPE tokenizers are exported (llama.cpp's WordPiece and Unigram "
                  "vocabularies differ from these files)", path.c_str()));
    gguf_vocab v;
    const bool byte_level = has_type(j["pre_tokenizer"], "ByteLevel") || has_type(j["decoder"], "ByteLevel");
    const bool byte_fallback = m.value("byte_fallback", false);
    if (!byte_level && !byte_fallback)
        fail(strf("%s: field 'model.byte_fallback': a BPE without byte-level pieces or byte fallback has no llama.cpp "
                  "vocabulary type", path.c_str()));
    v.tokens.assign(vocab_size, "");
    v.types.assign(vocab_size, TT_UNUSED);
    std::vector<bool> seen(vocab_size, false);
    auto put = [&](const std::string& tok, int64_t id, int32_t type, const char* field) {
        if (id < 0 || id >= vocab_size)
            fail(strf("%s: field '%s': token id %lld is outside the model's vocab_size %lld", path.c_str(), field,
                      (long long)id, (long long)vocab_size));
        v.tokens[id] = tok;
        v.types[id] = type;
        seen[id] = true;
    };
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
        if (!it.value().is_number_integer()) fail(strf("%s: field 'model.vocab': ids must be integers", path.c_str()));
        int32_t type = TT_NORMAL;
        const std::string& s = it.key();
        if (!byte_level && s.size() == 6 && s.rfind("<0x", 0) == 0 && s[5] == '>') type = TT_BYTE;
        put(s, it.value().get<int64_t>(), type, "model.vocab");
    }
    const std::string unk = m.value("unk_token", json(nullptr)).is_string() ? m["unk_token"].get<std::string>() : "";
    if (!unk.empty() && m["vocab"].contains(unk)) {
        v.unk_id = m["vocab"][unk].get<int64_t>();
        if (v.unk_id >= 0 && v.unk_id < vocab_size) v.types[v.unk_id] = TT_UNKNOWN;
    }
    for (const json& a : j.value("added_tokens", json::array())) {
        if (!a.is_object() || !a.contains("id") || !a.contains("content")) continue;
        const std::string content = a["content"].get<std::string>();
        if (a["id"].is_number_integer() && a["id"].get<int64_t>() >= vocab_size) {
            // Gemma 3 text models: <image_soft_token> (262144) is past the 262,144 embedding rows
            warnings->push_back(strf("added token \"%s\" (id %lld) has no row in the model's %lld embeddings; left "
                                     "out of the GGUF", content.c_str(), (long long)a["id"].get<int64_t>(),
                                     (long long)vocab_size));
            continue;
        }
        const bool special = a.value("special", false);
        // added tokens some models leave unflagged that are control tokens all the same (as
        // llama.cpp's converter judges them)
        auto wraps = [&](const char* pre, const char* post) {
            const size_t a = std::strlen(pre), z = std::strlen(post);
            return content.size() >= a + z && content.compare(0, a, pre) == 0 &&
                   content.compare(content.size() - z, z, post) == 0;
        };
        const bool looks_special = wraps("<|", "|>") || wraps("<unused", ">") || content == "<pad>" ||
                                   content == "<mask>" || content == "<2mass>" || content == "[@BOS@]";
        put(content, a["id"].get<int64_t>(), special || looks_special ? TT_CONTROL : TT_USER_DEFINED, "added_tokens");
    }
    for (int64_t i = 0; i < vocab_size; i++)  // embedding rows past the tokenizer (padded vocabularies)
        if (!seen[i]) v.tokens[i] = "[PAD" + std::to_string(i) + "]";
    const auto merges = read_merges(m.value("merges", json::array()), path);
    if (byte_level) {
        v.model = "gpt2";
        v.pre = byte_level_pre(j["pre_tokenizer"], path);
        for (const auto& [a, b] : merges) v.merges.push_back(a + " " + b);
    } else {
        // SentencePiece-style BPE (Llama 2, Mistral, Gemma): llama.cpp merges the adjacent pair whose
        // concatenation has the highest score; a token's score is minus the rank of the merge that
        // makes it, so llama.cpp merges in Hugging Face's order
        v.model = "llama";
        v.pre = "default";
        v.scores.assign(vocab_size, 0.0f);
        std::vector<bool> scored(vocab_size, false);
        for (size_t r = 0; r < merges.size(); r++) {
            const std::string s = merges[r].first + merges[r].second;
            if (!m["vocab"].contains(s)) continue;
            const int64_t id = m["vocab"][s].get<int64_t>();
            if (id >= 0 && id < vocab_size && !scored[id]) v.scores[id] = -(float)r, scored[id] = true;
        }
        // "▁" prepended to the text: a Prepend normalizer, or a Metaspace that prepends
        const json& norm = j["normalizer"];
        std::function<bool(const json&)> prepends = [&](const json& n) {
            if (!n.is_object()) return false;
            if (n.value("type", "") == "Prepend") return true;
            if (n.value("type", "") == "Metaspace")
                return n.value("prepend_scheme", std::string("always")) != "never" && n.value("add_prefix_space", true);
            if (n.contains("normalizers"))
                for (const json& x : n["normalizers"])
                    if (prepends(x)) return true;
            if (n.contains("pretokenizers"))
                for (const json& x : n["pretokenizers"])
                    if (prepends(x)) return true;
            return false;
        };
        v.add_space_prefix = prepends(norm) || prepends(j["pre_tokenizer"]);
    }
    return v;
}

// ------------------------------------------------------------------ tensors

// Destination row r of a llama q/k projection comes from this source row: llama.cpp's llama
// rotates adjacent pairs, Hugging Face the two halves of a head, so each head's rows interleave.
int64_t gguf_rope_pair_row(int64_t r, int64_t head_dim) {
    const int64_t h = r / head_dim, w = r % head_dim;
    return h * head_dim + (w % 2) * (head_dim / 2) + w / 2;
}

// The adapter alone, as llama.cpp's LoRA adapter files hold one (its convert_lora_to_gguf.py):
// general.type "adapter", adapter.type "lora", adapter.lora.alpha, and for each module the
// tensors "<weight>.lora_a" (ggml {in, r}: A as PEFT stores it) and "<weight>.lora_b" ({r, out}),
// in f32 so that nothing is rounded. llama.cpp scales by alpha / r, r read from each lora_b; a
// module whose own scale differs from alpha / r (rsLoRA, rank_pattern) has the ratio folded into B.
// q/k rows of B move as the base weight's rows do (llama.cpp's pair order).
static std::vector<std::string> export_gguf_lora_adapter(const gguf_export_options& o, const model_config& c,
                                                         const arch_def& ad,
                                                         const std::map<std::string, lora_module_delta>& lora,
                                                         const std::vector<decoder_tensor_info>& table) {
    if (lora.empty()) fail(strf("--lora_model_path %s: the adapter has no modules", o.lora_dir.c_str()));
    const lora_module_delta& first = lora.begin()->second;
    const float alpha = first.scale * (float)first.r;  // PEFT's lora_alpha when scale = alpha / r
    gguf_builder b;
    b.add_str("general.architecture", ad.gguf_name);
    b.add_str("general.type", "adapter");
    b.add_str("general.name", std::filesystem::path(o.lora_dir).lexically_normal().filename().string());
    b.add_str("adapter.type", "lora");
    b.add_f32("adapter.lora.alpha", alpha);
    for (const decoder_tensor_info& t : table) {
        if (t.layer < 0 || !t.is_matrix) continue;
        auto it = lora.find(t.name.substr(0, t.name.size() - 7));  // minus ".weight"
        if (it == lora.end()) continue;
        const lora_module_delta* d = &it->second;
        const bool permute = ad.gguf_rope_pairs && (t.field == LT_Q || t.field == LT_K);
        const float fold = d->scale * (float)d->r / alpha;  // 1 unless this module's scale differs
        const int64_t head_dim = c.head_dim;
        gguf_tensor ta, tb;
        ta.name = gguf_tensor_name(t) + ".lora_a";
        ta.ne = {d->in, d->r};
        ta.type = ggml_type::f32;
        ta.write = [d, &o](std::FILE* f) {
            if (std::fwrite(d->A.data(), 4, d->A.size(), f) != d->A.size())
                fail(strf("%s: write failed (disk full?)", o.outfile.c_str()));
        };
        tb.name = gguf_tensor_name(t) + ".lora_b";
        tb.ne = {d->r, d->out};
        tb.type = ggml_type::f32;
        tb.write = [d, permute, fold, head_dim, &o](std::FILE* f) {
            std::vector<float> rows(d->B.size());
            for (int64_t r = 0; r < d->out; r++) {
                const int64_t src = permute ? gguf_rope_pair_row(r, head_dim) : r;
                for (int64_t k = 0; k < d->r; k++)
                    rows[r * d->r + k] = fold == 1.0f ? d->B[src * d->r + k] : fold * d->B[src * d->r + k];
            }
            if (std::fwrite(rows.data(), 4, rows.size(), f) != rows.size())
                fail(strf("%s: write failed (disk full?)", o.outfile.c_str()));
        };
        b.tensors.push_back(std::move(ta));
        b.tensors.push_back(std::move(tb));
    }
    if (std::filesystem::path(o.outfile).has_parent_path())
        fs_mkdirs(std::filesystem::path(o.outfile).parent_path().string());
    gguf_write(o.outfile, b);
    return {};
}

std::vector<std::string> export_gguf(const gguf_export_options& o) {
    const ggml_type outtype = gguf_outtype(o.outtype);
    std::unique_ptr<model_files> mf = model_files_open(o.model_dir);
    const model_config& c = mf->cfg;
    const std::string cfg_path = model_file_label(o.model_dir, "config.json");
    const std::vector<decoder_tensor_info> table = decoder_tensor_table(c);
    if (!mf->gguf) {  // (a GGUF input was checked whole when opened)
        for (const auto& t : table) model_files_tensor(*mf, t);  // every tensor present, right dtype and shape
        model_files_check_unexpected(*mf, table);
    }
    // what llama.cpp's graph for this architecture needs: refusals, warnings, its own metadata
    const arch_def& ad = arch_of(c);
    gguf_arch_meta arch_meta;
    ad.gguf(c, cfg_path, arch_meta);
    std::vector<std::string> warnings = arch_meta.warnings;
    std::vector<std::string> not_whole_blocks;  // q8_0 requested, rows not whole blocks: written as f16
    std::map<std::string, lora_module_delta> lora;
    if (!o.lora_dir.empty()) lora = lora_adapter_read(o.lora_dir);
    // the adapter's modules must all be Linear weights of this model
    for (const auto& [module, d] : lora) {
        auto it = std::find_if(table.begin(), table.end(), [&](const decoder_tensor_info& t) {
            return t.name == module + ".weight" && t.is_matrix && t.layer >= 0;
        });
        if (it == table.end()) fail(strf("%s: the base model has no Linear '%s'", d.source.c_str(), module.c_str()));
        if (it->shape[0] != d.out || it->shape[1] != d.in)
            fail(strf("%s: adapter [%lld x %lld] does not fit the base weight %s", d.source.c_str(), (long long)d.out,
                      (long long)d.in, shape_str(it->shape).c_str()));
    }
    if (o.lora_adapter) return export_gguf_lora_adapter(o, c, ad, lora, table);
    const std::string tok_dir = o.model_dir;
    std::string tok_text;
    if (!model_text_file(tok_dir, "tokenizer.json", &tok_text))
        fail(strf("%s: missing; the GGUF needs the tokenizer (copy the base model's tokenizer files into the folder)",
                  fs_join(tok_dir, "tokenizer.json").c_str()));
    // loaded first: it checks every field of tokenizer.json that make_vocab reads again
    std::unique_ptr<tokenizer> tok = tokenizer_load(tok_dir);  // the special ids and BOS policy lisa.cpp uses
    gguf_vocab vocab = make_vocab(tok_dir, c.vocab_size, &warnings);
    // where llama.cpp's tokenizer will differ whatever the file says
    for (const char* e : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>",
                          "<EOT>", "<|end_of_text|>"}) {
        const int32_t id = tokenizer_token_to_id(*tok, e);
        if (id >= 0 && id < c.vocab_size && vocab.types[id] == 1)
            warnings.push_back(strf("the tokenizer has \"%s\" as an ordinary token; llama.cpp treats it as an "
                                    "end-of-generation control token and matches it as one in text", e));
    }
    if (tok_text.find("\"type\": \"NFC\"") != std::string::npos || tok_text.find("\"type\":\"NFC\"") != std::string::npos)
        warnings.push_back("the tokenizer normalizes text to NFC; llama.cpp does not, so text that is not already "
                           "NFC (rare: decomposed accents) tokenizes differently");

    gguf_builder b;
    const std::string arch = ad.gguf_name;
    auto key = [&](const char* k) { return arch + "." + k; };
    b.add_str("general.architecture", arch);
    std::string name = std::filesystem::path(o.model_dir).lexically_normal().filename().string();
    if (name.empty() || name == ".") name = std::filesystem::absolute(o.model_dir).lexically_normal().parent_path().filename().string();
    if (mf->gguf) name = gguf_str_or(*mf->gguf->file, "general.name", std::filesystem::path(o.model_dir).stem().string());
    b.add_str("general.name", name);
    b.add_u32("general.file_type", file_type_of(outtype));
    b.add_u32("general.quantization_version", 2);
    b.add_u32(key("context_length"), (uint32_t)c.max_position_embeddings);
    b.add_u32(key("embedding_length"), (uint32_t)c.hidden_size);
    b.add_u32(key("block_count"), (uint32_t)c.num_layers);
    b.add_u32(key("feed_forward_length"), (uint32_t)c.intermediate_size);
    b.add_u32(key("attention.head_count"), (uint32_t)c.num_heads);
    b.add_u32(key("attention.head_count_kv"), (uint32_t)c.num_kv_heads);
    b.add_u32(key("attention.key_length"), (uint32_t)c.head_dim);
    b.add_u32(key("attention.value_length"), (uint32_t)c.head_dim);
    b.add_u32(key("rope.dimension_count"), (uint32_t)c.rope_dim);
    b.add_f32(key("attention.layer_norm_rms_epsilon"), (float)c.rms_norm_eps);
    b.add_f32(key("rope.freq_base"), (float)c.rope.theta);
    b.add_u32(key("vocab_size"), (uint32_t)c.vocab_size);
    if (c.rope.kind == rope_kind::linear) {
        b.add_str(key("rope.scaling.type"), "linear");
        b.add_f32(key("rope.scaling.factor"), (float)c.rope.factor);
    }
    for (const gguf_arch_meta::kv& kv : arch_meta.keys) {
        if (kv.is_f32) b.add_f32(key(kv.key.c_str()), kv.f32);
        else b.add_u32(key(kv.key.c_str()), kv.u32);
    }

    // tokenizer
    b.add_str("tokenizer.ggml.model", vocab.model);
    b.add_str("tokenizer.ggml.pre", vocab.pre);
    b.add_str_array("tokenizer.ggml.tokens", vocab.tokens);
    if (!vocab.scores.empty()) b.add_f32_array("tokenizer.ggml.scores", vocab.scores);
    b.add_i32_array("tokenizer.ggml.token_type", vocab.types);
    if (!vocab.merges.empty()) b.add_str_array("tokenizer.ggml.merges", vocab.merges);
    if (vocab.model == "llama") b.add_bool("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix);
    auto in_vocab = [&](int64_t id) { return id >= 0 && id < c.vocab_size; };
    int64_t bos = tokenizer_bos_id(*tok), eos = tokenizer_eos_id(*tok), pad = tokenizer_pad_id(*tok);
    if (bos < 0 && !c.bos_token_ids.empty()) bos = c.bos_token_ids[0];
    if (eos < 0 && !c.eos_token_ids.empty()) eos = c.eos_token_ids[0];
    if (in_vocab(bos)) b.add_u32("tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (in_vocab(eos)) b.add_u32("tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (in_vocab(pad)) b.add_u32("tokenizer.ggml.padding_token_id", (uint32_t)pad);
    if (in_vocab(vocab.unk_id)) b.add_u32("tokenizer.ggml.unknown_token_id", (uint32_t)vocab.unk_id);
    // whether encoding adds BOS / EOS: what the Hugging Face tokenizer (our port of it) does
    {
        const std::vector<int32_t> plain = tokenizer_encode(*tok, "a", false), with = tokenizer_encode(*tok, "a", true);
        const bool add_bos = with.size() > plain.size() && bos >= 0 && with.front() == bos;
        const bool add_eos = with.size() > plain.size() && eos >= 0 && with.back() == eos && plain.back() != eos;
        b.add_bool("tokenizer.ggml.add_bos_token", add_bos);
        b.add_bool("tokenizer.ggml.add_eos_token", add_eos);
    }
    const std::string tcfg_path = model_file_label(tok_dir, "tokenizer_config.json");
    std::string tcfg_text;
    if (model_text_file(tok_dir, "tokenizer_config.json", &tcfg_text)) {
        json tc;
        try {
            tc = json::parse(tcfg_text);
        } catch (const json::exception& e) {
            fail(strf("%s: not valid JSON (%s)", tcfg_path.c_str(), json_error(e).c_str()));
        }
        if (tc.contains("chat_template")) {
            const json& ct = tc["chat_template"];
            if (ct.is_string()) {
                b.add_str("tokenizer.chat_template", ct.get<std::string>());
            } else if (ct.is_array()) {  // named templates: the default one
                for (const json& e : ct)
                    if (e.is_object() && e.contains("name") && e["name"] == "default" && e.contains("template") &&
                        e["template"].is_string())
                        b.add_str("tokenizer.chat_template", e["template"].get<std::string>());
            }
        }
    }

    // tensors, streamed from the mapped files
    const model_files& files = *mf;
    // The GGUF whose quantized matrices are copied as they are (never quantized again) where the
    // model still holds their values: the model itself when it is a GGUF (all but the matrices
    // an adapter changes), or the file a folder was trained from (what training left alone).
    std::unique_ptr<gguf_model> base_owned;
    const gguf_model* base = nullptr;
    if (!o.base_gguf.empty()) {
        std::error_code ec;
        if (mf->gguf && std::filesystem::equivalent(o.base_gguf, o.model_dir, ec)) {
            base = mf->gguf.get();  // the same file: nothing to compare, only the adapter changes matrices
        } else {
            base_owned = gguf_model_open(o.base_gguf);
            base = base_owned.get();
        }
    }
    size_t kept = 0;
    // A matrix is copied when the base holds it in a block type (kept whatever type was asked for:
    // no re-quantization), or in the float type it would be written in anyway (then the copy
    // undoes the bf16 rounding of a model loaded in bf16).
    auto kept_block = [&](const decoder_tensor_info& t, bool changed, ggml_type writing) -> const gguf_tensor_info* {
        if (!base || changed || t.shape.size() != 2) return nullptr;
        auto it = base->tensors.find(t.name);
        if (it == base->tensors.end()) return nullptr;
        const gguf_tensor_info* bi = it->second;
        const ggml_type bt = bi->type;
        if ((bt == ggml_type::f32 || bt == ggml_type::f16 || bt == ggml_type::bf16) && bt != writing) return nullptr;
        if (bi->ne != std::vector<int64_t>{t.shape[1], t.shape[0]}) return nullptr;
        if (base == mf->gguf.get()) return bi;
        // another model: kept only if every value is the block's, at the precision the model holds
        std::vector<float> want(t.numel), have(t.numel);
        gguf_model_read(*base, t, want.data());
        dtype held = dtype::f32;
        if (files.gguf) {
            gguf_model_read(*files.gguf, t, have.data());
        } else {
            const st_tensor& st = model_files_tensor(files, t);
            held = st.dt;
            convert_to_f32(have.data(), st.data, st.dt, t.numel);
            st_release(st);
        }
        if (held != dtype::f32) {  // the block's values rounded as the folder's dtype rounds them
            std::vector<uint8_t> narrow(t.numel * dtype_size(held));
            convert_from_f32(narrow.data(), want.data(), held, t.numel);
            convert_to_f32(want.data(), narrow.data(), held, t.numel);
        }
        return std::memcmp(want.data(), have.data(), t.numel * sizeof(float)) == 0 ? bi : nullptr;
    };
    auto add_tensor = [&](const decoder_tensor_info& t) {
        gguf_tensor gt;
        gt.name = gguf_tensor_name(t);
        const bool matrix = t.shape.size() == 2;
        const int64_t rows = t.shape[0], cols = matrix ? t.shape[1] : t.shape[0];
        gt.ne = matrix ? std::vector<int64_t>{cols, rows} : std::vector<int64_t>{cols};
        const bool permute = ad.gguf_rope_pairs &&
                             (t.field == LT_Q || t.field == LT_Q_BIAS || t.field == LT_K || t.field == LT_K_BIAS);
        // llama.cpp's norms scale by w: Gemma's (1 + w) is stored with the 1 added
        const float shift = t.kind == tensor_kind::norm ? (float)c.norm_weight_offset : 0.0f;
        const lora_module_delta* delta = nullptr;
        if (t.layer >= 0 && matrix) {
            auto it = lora.find(t.name.substr(0, t.name.size() - 7));  // minus ".weight"
            if (it != lora.end()) delta = &it->second;
        }
        // norms and biases stay f32, as llama.cpp's converter keeps them; rows that are not whole
        // blocks: q4_K falls back to q8_0 (32-value blocks), then to f16 (said once, for all, below)
        ggml_type type = matrix ? outtype : ggml_type::f32;
        bool fell_back = false;
        if (type == ggml_type::q4_K && cols % 256 != 0) type = ggml_type::q8_0, fell_back = true;
        if ((type == ggml_type::q8_0 || type == ggml_type::q4_0) && cols % 32 != 0) type = ggml_type::f16, fell_back = true;
        if (const gguf_tensor_info* bi = kept_block(t, delta != nullptr, type)) {  // the original bytes, as they are
            gt.type = bi->type;
            gt.write = [bi, &o](std::FILE* f) {
                if (std::fwrite(bi->data, 1, bi->nbytes, f) != bi->nbytes)
                    fail(strf("%s: write failed (disk full?)", o.outfile.c_str()));
                gguf_release(*bi);
            };
            kept++;
            b.tensors.push_back(std::move(gt));
            return;
        }
        gt.type = type;
        if (fell_back) not_whole_blocks.push_back(gt.name + strf(" (rows of %lld)", (long long)cols));
        const int64_t row_len = matrix ? cols : cols, n_rows = matrix ? rows : 1;
        const int64_t head_dim = c.head_dim;
        gt.write = [&files, t, row_len, n_rows, permute, shift, delta, head_dim, type, &o](std::FILE* f) {
            // the source rows: a safetensors tensor as stored, or a GGUF tensor dequantized whole
            // (its llama.cpp conventions undone) and then seen as an fp32 tensor
            std::vector<float> whole;
            st_tensor from_gguf{};
            if (files.gguf) {
                whole.resize(t.numel);
                gguf_model_read(*files.gguf, t, whole.data());
                from_gguf = st_tensor{t.name, dtype::f32, t.shape, (const uint8_t*)whole.data(), t.numel * 4, t.numel};
            }
            const st_tensor& st = files.gguf ? from_gguf : model_files_tensor(files, t);
            const size_t esz = dtype_size(st.dt);
            const int64_t chunk = std::max<int64_t>(1, ((int64_t)1 << 18) / row_len);
            std::vector<float> buf(chunk * row_len);
            std::vector<uint8_t> out(ggml_nbytes(type, chunk * row_len));
            for (int64_t r0 = 0; r0 < n_rows; r0 += chunk) {
                const int64_t nr = std::min(chunk, n_rows - r0);
                for (int64_t i = 0; i < nr; i++) {
                    float* row = buf.data() + i * row_len;
                    if (n_rows == 1 && permute) {  // a bias: permute its values like the rows they belong to
                        std::vector<float> tmp(row_len);
                        convert_to_f32(tmp.data(), st.data, st.dt, row_len);
                        for (int64_t k = 0; k < row_len; k++) row[k] = tmp[gguf_rope_pair_row(k, head_dim)];
                        continue;
                    }
                    const int64_t src = permute ? gguf_rope_pair_row(r0 + i, head_dim) : r0 + i;
                    convert_to_f32(row, st.data + (size_t)src * row_len * esz, st.dt, row_len);
                    if (delta)  // W[src, :] += scale · B[src, :]·A
                        for (int64_t k = 0; k < delta->r; k++) {
                            const float bk = delta->scale * delta->B[src * delta->r + k];
                            const float* a = delta->A.data() + k * row_len;
                            for (int64_t x = 0; x < row_len; x++) row[x] += bk * a[x];
                        }
                }
                const int64_t n = nr * row_len;
                if (shift != 0.0f)
                    for (int64_t k = 0; k < n; k++) buf[k] += shift;
                size_t nbytes = ggml_nbytes(type, n);
                switch (type) {
                    case ggml_type::f32: std::memcpy(out.data(), buf.data(), nbytes); break;
                    case ggml_type::f16:
                    case ggml_type::bf16: convert_from_f32(out.data(), buf.data(), type == ggml_type::f16 ? dtype::f16 : dtype::bf16, n); break;
                    case ggml_type::q8_0:
                    case ggml_type::q4_0:
                    case ggml_type::q4_K: ggml_quantize(type, buf.data(), out.data(), n); break;
                    default: LISA_ASSERT(false, "export_gguf", "an output type without a writer");
                }
                if (std::fwrite(out.data(), 1, nbytes, f) != nbytes)
                    fail(strf("%s: write failed (disk full?)", o.outfile.c_str()));
                if (!permute && !files.gguf)  // rows read in order: drop their mapped pages now, not after the tensor
                    st_release_bytes(st.data + (size_t)r0 * row_len * esz, (size_t)nr * row_len * esz);
            }
            if (!files.gguf) st_release(st);
        };
        b.tensors.push_back(std::move(gt));
    };
    for (const auto& t : table) {
        if (t.field == kFieldEmbed) {
            add_tensor(t);
            // RoPE divisors right after the embedding: llama3's rope_freqs, longrope's two sets
            auto add_factors = [&](const char* name, std::vector<float> rf) {
                gguf_tensor gt;
                gt.name = name;
                gt.ne = {(int64_t)rf.size()};
                gt.type = ggml_type::f32;
                gt.write = [rf, &o](std::FILE* f) {
                    if (std::fwrite(rf.data(), 4, rf.size(), f) != rf.size())
                        fail(strf("%s: write failed (disk full?)", o.outfile.c_str()));
                };
                b.tensors.push_back(std::move(gt));
            };
            if (c.rope.kind == rope_kind::llama3) add_factors("rope_freqs.weight", gguf_llama3_rope_factors(c));
            if (c.rope.kind == rope_kind::longrope) {
                add_factors("rope_factors_long.weight", c.rope.long_factor);
                add_factors("rope_factors_short.weight", c.rope.short_factor);
            }
            continue;
        }
        add_tensor(t);
    }
    if (!not_whole_blocks.empty())
        warnings.push_back(strf("%zu tensor%s with rows that are not whole %s blocks of %lld values %s written as %s: %s%s",
                                not_whole_blocks.size(), not_whole_blocks.size() == 1 ? "" : "s", ggml_type_name(outtype),
                                (long long)ggml_block_size(outtype), not_whole_blocks.size() == 1 ? "is" : "are",
                                outtype == ggml_type::q4_K ? "q8_0 (or f16 where not whole 32-value blocks either)" : "f16",
                                not_whole_blocks[0].c_str(),
                                not_whole_blocks.size() > 1 ? strf(" and %zu more", not_whole_blocks.size() - 1).c_str() : ""));
    if (o.kept) *o.kept = kept;
    if (o.on_tensor)  // progress after each tensor
        for (size_t i = 0; i < b.tensors.size(); i++) {
            auto write = b.tensors[i].write;
            const size_t n = b.tensors.size();
            b.tensors[i].write = [write, i, n, &o](std::FILE* f) {
                write(f);
                o.on_tensor(i + 1, n);
            };
        }
    if (std::filesystem::path(o.outfile).has_parent_path())
        fs_mkdirs(std::filesystem::path(o.outfile).parent_path().string());
    gguf_write(o.outfile, b);
    return warnings;
}

}  // namespace lisa
