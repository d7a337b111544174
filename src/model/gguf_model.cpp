#include "model/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <mutex>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "export/export_gguf.h"
#include "io/fs.h"
#include "io/safetensors.h"  // shape_str
#include "model/arch/arch.h"
#include "model/layer.h"
#include "tokenizer/unicode.h"

namespace lisa {

using json = nlohmann::json;

bool model_path_is_gguf(const std::string& path) { return gguf_is_file(path); }

// llama.cpp token types (tokenizer.ggml.token_type)
enum : int { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

[[noreturn]] static void refuse(const gguf_file& f, const std::string& key, const std::string& why) {
    fail(strf("%s: key '%s': %s", f.path.c_str(), key.c_str(), why.c_str()));
}

// ------------------------------------------------------------------ config.json

// the llama3 rope_scaling whose divisors are the file's rope_freqs (llama.cpp's converter keeps
// only the divisors; the usual parameters are searched for one that gives them back)
static json llama3_scaling_of(const gguf_file& f, const gguf_tensor_info& t, model_config probe) {
    if (t.type != ggml_type::f32 || t.ne.size() != 1 || t.ne[0] != probe.head_dim / 2)
        fail(strf("%s: tensor 'rope_freqs.weight': expected %lld f32 values (head_dim / 2)", f.path.c_str(),
                  (long long)(probe.head_dim / 2)));
    std::vector<float> want(t.ne[0]);
    std::memcpy(want.data(), t.data, want.size() * 4);
    const double factor = *std::max_element(want.begin(), want.end());
    probe.rope.kind = rope_kind::llama3;
    probe.rope.factor = factor;
    for (int64_t orig : {8192, 4096, 2048, 16384, 32768, 65536, 131072})
        for (double lo : {1.0, 2.0, 0.5, 4.0})
            for (double hi : {4.0, 2.0, 8.0, 16.0, 1.0}) {
                if (!(hi > lo)) continue;
                probe.rope.low_freq_factor = lo;
                probe.rope.high_freq_factor = hi;
                probe.rope.original_max_position_embeddings = orig;
                const std::vector<float> got = gguf_llama3_rope_factors(probe);
                bool same = got.size() == want.size();
                for (size_t i = 0; same && i < got.size(); i++) same = std::fabs(got[i] - want[i]) <= 1e-6f * std::fabs(want[i]);
                if (same)
                    return {{"rope_type", "llama3"}, {"factor", factor}, {"low_freq_factor", lo}, {"high_freq_factor", hi},
                            {"original_max_position_embeddings", orig}};
            }
    fail(strf("%s: tensor 'rope_freqs.weight': per-frequency RoPE divisors that no llama3 rope_scaling "
              "(factor %g, low/high frequency factors, original context) reproduces", f.path.c_str(), factor));
}

static json build_config(const gguf_file& f, const std::string& arch, bool* rope_pairs) {
    if (arch != "llama" && arch != "qwen2" && arch != "qwen3" && arch != "gemma3")
        refuse(f, "general.architecture", "\"" + cap_message(arch, 40) + "\" is not read (llama, qwen2, qwen3, gemma3)");
    auto key = [&](const char* k) { return arch + "." + k; };
    const gguf_tensor_info* embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd || embd->ne.size() != 2) fail(strf("%s: tensor 'token_embd.weight' is missing or not a matrix", f.path.c_str()));
    json c;
    const int64_t heads = (int64_t)gguf_uint(f, key("attention.head_count"));
    const int64_t hidden = (int64_t)gguf_uint(f, key("embedding_length"));
    if (heads <= 0 || heads > kMaxHeads) refuse(f, key("attention.head_count"), "expected 1 to 4096 heads");
    c["hidden_size"] = hidden;
    c["num_hidden_layers"] = gguf_uint(f, key("block_count"));
    c["intermediate_size"] = gguf_uint(f, key("feed_forward_length"));
    c["num_attention_heads"] = heads;
    c["num_key_value_heads"] = gguf_uint_or(f, key("attention.head_count_kv"), (uint64_t)heads);
    const uint64_t head_dim = gguf_uint_or(f, key("attention.key_length"), (uint64_t)(hidden / heads));
    if (gguf_uint_or(f, key("attention.value_length"), head_dim) != head_dim)
        refuse(f, key("attention.value_length"), "differs from attention.key_length (not a Llama-family attention)");
    c["head_dim"] = head_dim;
    if (gguf_uint_or(f, key("rope.dimension_count"), head_dim) != head_dim)
        refuse(f, key("rope.dimension_count"), "partial rotary embeddings are not read for this architecture");
    c["max_position_embeddings"] = gguf_uint_or(f, key("context_length"), 2048);
    c["rms_norm_eps"] = gguf_num(f, key("attention.layer_norm_rms_epsilon"));
    c["rope_theta"] = gguf_num_or(f, key("rope.freq_base"), 10000.0);
    c["vocab_size"] = gguf_uint_or(f, key("vocab_size"), (uint64_t)embd->ne[1]);
    c["tie_word_embeddings"] = gguf_find_tensor(f, "output.weight") == nullptr;
    c["torch_dtype"] = "float32";
    const std::string scaling = gguf_str_or(f, key("rope.scaling.type"), "none");
    if (scaling == "linear") {
        c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", gguf_num(f, key("rope.scaling.factor"))}};
    } else if (scaling != "none") {
        refuse(f, key("rope.scaling.type"), "\"" + cap_message(scaling, 40) + "\" is not read (none, linear, or llama3's rope_freqs)");
    }
    *rope_pairs = false;
    if (arch == "llama") {
        c["model_type"] = "llama";
        c["architectures"] = {"LlamaForCausalLM"};
        const bool qb = gguf_find_tensor(f, "blk.0.attn_q.bias") != nullptr, ob = gguf_find_tensor(f, "blk.0.attn_output.bias") != nullptr;
        if (qb != ob) fail(strf("%s: tensor 'blk.0.attn_%s.bias': a llama with biases on only some attention projections",
                                f.path.c_str(), qb ? "output" : "q"));
        c["attention_bias"] = qb;
        *rope_pairs = true;
        if (const gguf_tensor_info* rf = gguf_find_tensor(f, "rope_freqs.weight")) {
            json probe_cfg = c;
            probe_cfg.erase("rope_scaling");
            model_config probe = config_parse(probe_cfg.dump(), f.path);
            c["rope_scaling"] = llama3_scaling_of(f, *rf, probe);
        }
    } else if (arch == "qwen2") {
        c["model_type"] = "qwen2";
        c["architectures"] = {"Qwen2ForCausalLM"};
    } else if (arch == "qwen3") {
        c["model_type"] = "qwen3";
        c["architectures"] = {"Qwen3ForCausalLM"};
    } else if (arch == "gemma3") {
        c["model_type"] = "gemma3_text";
        c["architectures"] = {"Gemma3ForCausalLM"};
        c["query_pre_attn_scalar"] = head_dim;  // llama.cpp's gemma3 scales scores by 1/sqrt(head_dim)
        c["hidden_activation"] = "gelu_pytorch_tanh";
        c["final_logit_softcapping"] = gguf_num_or(f, key("final_logit_softcapping"), 0.0);
        c["attn_logit_softcapping"] = nullptr;
        const int64_t layers = c["num_hidden_layers"].get<int64_t>();
        const uint64_t window = gguf_uint_or(f, key("attention.sliding_window"), 0);
        const uint64_t period = gguf_uint_or(f, key("attention.sliding_window_pattern"), window ? 6 : 0);
        json types = json::array();
        for (int64_t l = 0; l < layers; l++)
            types.push_back(window && period && (l + 1) % (int64_t)period != 0 ? "sliding_attention" : "full_attention");
        c["layer_types"] = types;
        c["sliding_window"] = window ? window : 4096;
        c["rope_local_base_freq"] = gguf_num_or(f, key("rope.freq_base_swa"), 10000.0);
    } else {
        refuse(f, "general.architecture", "\"" + cap_message(arch, 40) + "\" is not read (llama, qwen2, qwen3, gemma3)");
    }
    return c;
}

// ------------------------------------------------------------------ tokenizer

static json byte_level(bool use_regex) {
    return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// The strings of a key, each valid UTF-8 (tokenizer.json is JSON text)
static std::vector<std::string> utf8_strings(const gguf_file& f, const std::string& key) {
    std::vector<std::string> v = gguf_str_array(f, key);
    for (size_t i = 0; i < v.size(); i++)
        if (utf8_lossy(v[i]) != v[i]) refuse(f, key, strf("entry %zu is not valid UTF-8", i));
    return v;
}

static void build_tokenizer(const gguf_file& f, const model_config& cfg, std::string* tok_json, std::string* tcfg_json) {
    const std::string model = gguf_str(f, "tokenizer.ggml.model");
    const std::vector<std::string> tokens = utf8_strings(f, "tokenizer.ggml.tokens");
    const int64_t n = (int64_t)tokens.size();
    if (n == 0) refuse(f, "tokenizer.ggml.tokens", "empty vocabulary");
    if (n > cfg.vocab_size)
        refuse(f, "tokenizer.ggml.tokens", strf("%lld tokens for a model with %lld embedding rows", (long long)n, (long long)cfg.vocab_size));
    std::vector<int> types(n, TT_NORMAL);
    if (gguf_find(f, "tokenizer.ggml.token_type")) {
        const std::vector<double> t = gguf_num_array(f, "tokenizer.ggml.token_type");
        if ((int64_t)t.size() != n) refuse(f, "tokenizer.ggml.token_type", strf("%zu entries for %lld tokens", t.size(), (long long)n));
        for (int64_t i = 0; i < n; i++) types[i] = (int)t[i];
    }
    json vocab = json::object();
    for (int64_t i = 0; i < n; i++)
        if (!vocab.contains(tokens[i])) vocab[tokens[i]] = i;  // (a repeated string keeps its first id)
    auto special_id = [&](const char* k) -> int64_t {
        const std::string key = std::string("tokenizer.ggml.") + k;
        if (!gguf_find(f, key)) return -1;
        const uint64_t id = gguf_uint(f, key);
        if ((int64_t)id >= n) refuse(f, key, strf("token id %llu is outside the %lld tokens", (unsigned long long)id, (long long)n));
        return (int64_t)id;
    };
    const int64_t bos = special_id("bos_token_id"), eos = special_id("eos_token_id"), unk = special_id("unknown_token_id"),
                  pad = special_id("padding_token_id");
    json added = json::array();
    for (int64_t i = 0; i < n; i++)
        if (types[i] == TT_CONTROL || types[i] == TT_UNKNOWN || types[i] == TT_USER_DEFINED)
            added.push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                             {"normalized", false}, {"special", types[i] != TT_USER_DEFINED}});
    json j = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added}, {"post_processor", nullptr}};
    json bpe = {{"type", "BPE"}, {"dropout", nullptr}, {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}};
    bool add_bos_default = false;
    if (model == "gpt2") {
        const std::string pre = gguf_str_or(f, "tokenizer.ggml.pre", "gpt-2");
        if (pre == "gpt-2" || pre == "default") {
            j["pre_tokenizer"] = byte_level(true);
        } else if (pre == "smollm") {
            j["pre_tokenizer"] = {{"type", "Sequence"},
                                  {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
        } else if (const char* re = gguf_pre_split_regex(pre)) {
            j["pre_tokenizer"] = {{"type", "Sequence"},
                                  {"pretokenizers",
                                   {{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}},
                                    byte_level(false)}}};
        } else {
            refuse(f, "tokenizer.ggml.pre", "\"" + cap_message(pre, 40) +
                                                "\" is not a pre-tokenizer lisa.cpp reads (gpt-2, llama-bpe, qwen2, smollm)");
        }
        // Qwen's tokenizer composes text to NFC first (llama.cpp skips it; Hugging Face does not)
        j["normalizer"] = pre == "qwen2" ? json{{"type", "NFC"}} : json(nullptr);
        j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
        bpe["unk_token"] = nullptr;
        bpe["fuse_unk"] = false;
        bpe["byte_fallback"] = false;
        bpe["ignore_merges"] = pre == "llama-bpe";  // as llama.cpp tokenizes Llama 3
        bpe["vocab"] = vocab;
        bpe["merges"] = gguf_find(f, "tokenizer.ggml.merges") ? json(utf8_strings(f, "tokenizer.ggml.merges")) : json::array();
    } else if (model == "llama") {
        // SentencePiece-style BPE: llama.cpp merges the adjacent pair whose concatenation scores
        // highest. As merges: every split of a token into two tokens, by the token's score.
        add_bos_default = true;
        std::vector<double> scores(n, 0.0);
        if (gguf_find(f, "tokenizer.ggml.scores")) {
            scores = gguf_num_array(f, "tokenizer.ggml.scores");
            if ((int64_t)scores.size() != n) refuse(f, "tokenizer.ggml.scores", strf("%zu entries for %lld tokens", scores.size(), (long long)n));
        }
        std::unordered_map<std::string, int64_t> id_of;
        for (int64_t i = 0; i < n; i++)
            if (types[i] == TT_NORMAL || types[i] == TT_BYTE || types[i] == TT_USER_DEFINED) id_of.emplace(tokens[i], i);
        struct merge {
            double  score;
            int64_t id, a, b;
            size_t  cut;
        };
        std::vector<merge> ms;
        for (int64_t i = 0; i < n; i++) {
            if (types[i] != TT_NORMAL && types[i] != TT_USER_DEFINED) continue;  // (Gemma's "▁▁" runs are user-defined)
            const std::string& s = tokens[i];
            for (size_t cut = 1; cut < s.size(); cut++) {
                if (((unsigned char)s[cut] & 0xC0) == 0x80) continue;  // inside a UTF-8 character
                auto a = id_of.find(s.substr(0, cut)), b = id_of.find(s.substr(cut));
                if (a != id_of.end() && b != id_of.end()) ms.push_back({scores[i], i, a->second, b->second, cut});
            }
        }
        std::sort(ms.begin(), ms.end(), [](const merge& x, const merge& y) {
            if (x.score != y.score) return x.score > y.score;
            if (x.id != y.id) return x.id < y.id;
            return x.a != y.a ? x.a < y.a : x.b < y.b;
        });
        json merges = json::array();
        for (const merge& m : ms) merges.push_back(json::array({tokens[m.a], tokens[m.b]}));
        const bool prefix = gguf_bool_or(f, "tokenizer.ggml.add_space_prefix", true);
        json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}};
        j["normalizer"] = prefix ? json{{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}}, replace}}}
                                 : replace;
        j["pre_tokenizer"] = nullptr;
        json decoders = {{{"type", "Replace"}, {"pattern", {{"String", "\xe2\x96\x81"}}}, {"content", " "}},
                         {{"type", "ByteFallback"}},
                         {{"type", "Fuse"}}};
        if (prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
        j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
        bpe["unk_token"] = unk >= 0 ? json(tokens[unk]) : json(nullptr);
        bpe["fuse_unk"] = true;
        bpe["byte_fallback"] = true;
        bpe["ignore_merges"] = false;
        bpe["vocab"] = vocab;
        bpe["merges"] = merges;
    } else {
        refuse(f, "tokenizer.ggml.model", "\"" + cap_message(model, 40) + "\" is not read (gpt2 byte-level BPE, llama SentencePiece-style BPE)");
    }
    j["model"] = bpe;
    *tok_json = j.dump();
    json tc = {{"tokenizer_class", "LlamaTokenizerFast"},  // so the BOS/EOS flags below decide, as in transformers
               {"add_bos_token", gguf_bool_or(f, "tokenizer.ggml.add_bos_token", add_bos_default)},
               {"add_eos_token", gguf_bool_or(f, "tokenizer.ggml.add_eos_token", false)},
               {"model_max_length", cfg.max_position_embeddings}};
    if (bos >= 0) tc["bos_token"] = tokens[bos];
    if (eos >= 0) tc["eos_token"] = tokens[eos];
    if (unk >= 0) tc["unk_token"] = tokens[unk];
    if (pad >= 0) tc["pad_token"] = tokens[pad];
    if (gguf_find(f, "tokenizer.chat_template")) {
        const std::string t = gguf_str(f, "tokenizer.chat_template");
        if (utf8_lossy(t) != t) refuse(f, "tokenizer.chat_template", "not valid UTF-8");
        tc["chat_template"] = t;
    }
    *tcfg_json = tc.dump(2);
}

// ------------------------------------------------------------------ the model

std::unique_ptr<gguf_model> gguf_model_open(const std::string& path) {
    auto g = std::make_unique<gguf_model>();
    g->file = gguf_open(path);
    const gguf_file& f = *g->file;
    const std::string arch = gguf_str(f, "general.architecture");
    bool rope_pairs = false;
    json c = build_config(f, arch, &rope_pairs);
    // special ids for config.json (the end-of-generation set: eos, eot, eom)
    auto id_or = [&](const char* k) { return gguf_find(f, k) ? (int64_t)gguf_uint(f, k) : (int64_t)-1; };
    if (id_or("tokenizer.ggml.bos_token_id") >= 0) c["bos_token_id"] = id_or("tokenizer.ggml.bos_token_id");
    std::vector<int64_t> eos;
    for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
        const int64_t id = id_or(k);
        if (id >= 0 && std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
    }
    if (eos.size() == 1) c["eos_token_id"] = eos[0];
    else if (!eos.empty()) c["eos_token_id"] = eos;
    g->config_json = c.dump(2);
    g->cfg = config_parse(g->config_json, path + " (its config, rebuilt from the metadata)");
    build_tokenizer(f, g->cfg, &g->tokenizer_json, &g->tokenizer_config_json);
    // tensors: every one the config implies, with its shape; nothing unknown
    std::set<std::string> used = {"rope_freqs.weight"};
    for (const decoder_tensor_info& t : decoder_tensor_table(g->cfg)) {
        const std::string name = gguf_tensor_name(t);
        const gguf_tensor_info* gt = gguf_find_tensor(f, name);
        if (!gt) fail(strf("%s: tensor '%s' is missing (the %s %s)", path.c_str(), name.c_str(), arch.c_str(), t.name.c_str()));
        const std::vector<int64_t> want = t.shape.size() == 2 ? std::vector<int64_t>{t.shape[1], t.shape[0]} : t.shape;
        if (gt->ne != want)
            fail(strf("%s: tensor '%s': dims %s, expected %s from the metadata", path.c_str(), name.c_str(),
                      shape_str(gt->ne).c_str(), shape_str(want).c_str()));
        if (t.shape.size() == 2 && ggml_block_size(gt->type) > 1) g->quantized = true;
        if (t.shape.size() == 2 && (gt->type == ggml_type::bf16 || ggml_block_size(gt->type) > 1)) g->half = true;
        g->tensors[t.name] = gt;
        used.insert(name);
    }
    for (const gguf_tensor_info& t : f.tensors)
        if (!used.count(t.name))
            fail(strf("%s: unexpected tensor '%s' for a %s with this metadata (an unsupported variant)", path.c_str(),
                      t.name.c_str(), arch.c_str()));
    (void)rope_pairs;
    return g;
}

void gguf_model_read(const gguf_model& g, const decoder_tensor_info& info, float* out) {
    auto it = g.tensors.find(info.name);
    LISA_ASSERT(it != g.tensors.end(), "gguf_model_read", "a tensor the size table does not hold");
    const gguf_tensor_info& t = *it->second;
    const arch_def& ad = arch_of(g.cfg);
    const bool permute = ad.gguf_rope_pairs &&
                         (info.field == LT_Q || info.field == LT_Q_BIAS || info.field == LT_K || info.field == LT_K_BIAS);
    const int64_t row_len = t.ne[0], rows = t.numel / row_len;
    const size_t row_bytes = ggml_nbytes(t.type, row_len);
    const int64_t hd = g.cfg.head_dim;
    if (!permute) {
        ggml_dequantize(t.type, t.data, out, t.numel);
    } else if (rows == 1) {  // a bias: its values move with the rows they belong to
        std::vector<float> tmp(row_len);
        ggml_dequantize(t.type, t.data, tmp.data(), row_len);
        for (int64_t k = 0; k < row_len; k++) out[gguf_rope_pair_row(k, hd)] = tmp[k];
    } else {  // file row r is Hugging Face row gguf_rope_pair_row(r)
        for (int64_t r = 0; r < rows; r++)
            ggml_dequantize(t.type, t.data + (size_t)r * row_bytes, out + gguf_rope_pair_row(r, hd) * row_len, row_len);
    }
    if (info.kind == tensor_kind::norm && g.cfg.norm_weight_offset != 0.0) {  // llama.cpp stores offset + w
        const float off = (float)g.cfg.norm_weight_offset;
        for (int64_t k = 0; k < t.numel; k++) out[k] -= off;
    }
    gguf_release(t);
}

ggml_type gguf_model_type(const gguf_model& g, const decoder_tensor_info& info) {
    auto it = g.tensors.find(info.name);
    LISA_ASSERT(it != g.tensors.end(), "gguf_model_type", "a tensor the size table does not hold");
    return it->second->type;
}

void gguf_model_read_raw(const gguf_model& g, const decoder_tensor_info& info, uint8_t* out) {
    const gguf_tensor_info& t = *g.tensors.at(info.name);
    const bool permute = arch_of(g.cfg).gguf_rope_pairs && (info.field == LT_Q || info.field == LT_K);
    const int64_t rows = t.numel / t.ne[0];
    const size_t row_bytes = ggml_nbytes(t.type, t.ne[0]);
    if (!permute) std::memcpy(out, t.data, t.nbytes);
    else
        for (int64_t r = 0; r < rows; r++)
            std::memcpy(out + (size_t)gguf_rope_pair_row(r, g.cfg.head_dim) * row_bytes, t.data + (size_t)r * row_bytes, row_bytes);
    gguf_release(t);
}

// GGUF models opened for their text files, by path (a process reads one or two models)
static std::mutex g_cache_mu;
static std::map<std::string, std::shared_ptr<gguf_model>> g_cache;

static std::shared_ptr<gguf_model> cached(const std::string& path) {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    auto it = g_cache.find(path);
    if (it != g_cache.end()) return it->second;
    std::shared_ptr<gguf_model> g = gguf_model_open(path);
    g_cache[path] = g;
    return g;
}

bool model_text_file(const std::string& model_path, const std::string& name, std::string* text) {
    if (!model_path_is_gguf(model_path)) {
        const std::string p = fs_join(model_path, name);
        if (!fs_is_file(p)) return false;
        *text = fs_read_text(p);
        return true;
    }
    std::shared_ptr<gguf_model> g = cached(model_path);
    if (name == "config.json") *text = g->config_json;
    else if (name == "tokenizer.json") *text = g->tokenizer_json;
    else if (name == "tokenizer_config.json") *text = g->tokenizer_config_json;
    else return false;
    return true;
}

std::string model_file_label(const std::string& model_path, const std::string& name) {
    if (!model_path_is_gguf(model_path)) return fs_join(model_path, name);
    return model_path + " (" + name + " rebuilt from its metadata)";
}

void gguf_model_write_text_files(const std::string& gguf_path, const std::string& dir) {
    std::shared_ptr<gguf_model> g = cached(gguf_path);
    fs_write_atomic(fs_join(dir, "tokenizer.json"), g->tokenizer_json);
    fs_write_atomic(fs_join(dir, "tokenizer_config.json"), g->tokenizer_config_json);
}

}  // namespace lisa
