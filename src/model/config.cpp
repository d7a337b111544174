#include "model/config.h"
#include "model/layer.h"  // config_num_params: the parameter bound

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"

namespace lisa {

using json = nlohmann::json;

namespace {

// Typed field readers: each names the file and the field and says what was expected.
struct reader {
    const json&        j;
    const std::string& path;

    [[noreturn]] void bad(const char* key, const char* expected) const {
        std::string got = j.contains(key) ? std::string(j[key].type_name()) : "nothing";
        if (j.contains(key) && (j[key].is_number() || j[key].is_string())) got += " " + j[key].dump();
        fail(strf("%s: field '%s': expected %s, got %s", path.c_str(), key, expected, got.c_str()));
    }
    bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
    int64_t pos_int(const char* key) const {
        if (!has(key)) bad(key, "a positive integer");
        if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0) bad(key, "a positive integer");
        return j[key].get<int64_t>();
    }
    int64_t pos_int_or(const char* key, int64_t def) const { return has(key) ? pos_int(key) : def; }
    // sizes are bounded before anything is sized from them (a file may claim anything)
    int64_t pos_int_max(const char* key, int64_t max) const {
        const int64_t v = pos_int(key);
        if (v > max) bad(key, strf("a positive integer at most %lld", (long long)max).c_str());
        return v;
    }
    int64_t pos_int_max_or(const char* key, int64_t max, int64_t def) const {
        return has(key) ? pos_int_max(key, max) : def;
    }
    double num_or(const char* key, double def) const {
        if (!has(key)) return def;
        if (!j[key].is_number()) bad(key, "a number");
        return j[key].get<double>();
    }
    bool bool_or(const char* key, bool def) const {
        if (!has(key)) return def;
        if (!j[key].is_boolean()) bad(key, "true or false");
        return j[key].get<bool>();
    }
    std::string str_or(const char* key, const std::string& def) const {
        if (!has(key)) return def;
        if (!j[key].is_string()) bad(key, "a string");
        return j[key].get<std::string>();
    }
    std::vector<int64_t> ids_or_empty(const char* key) const {
        std::vector<int64_t> out;
        if (!has(key)) return out;
        if (j[key].is_number_integer()) return {j[key].get<int64_t>()};
        if (!j[key].is_array()) bad(key, "an integer or a list of integers");
        for (const json& x : j[key]) {
            if (!x.is_number_integer()) bad(key, "an integer or a list of integers");
            out.push_back(x.get<int64_t>());
        }
        return out;
    }
};

}  // namespace

llama_config config_parse(const std::string& text, const std::string& path) {
    json j;
    try {
        j = json::parse(text);
    } catch (const std::exception& e) {
        fail(strf("%s: not valid JSON (%s)", path.c_str(), json_error(e).c_str()));
    }
    if (!j.is_object()) fail(strf("%s: expected a JSON object", path.c_str()));
    reader r{j, path};
    llama_config c;

    // architecture: model_type and/or architectures[0]
    std::string arch;
    if (r.has("architectures")) {
        if (!j["architectures"].is_array() || j["architectures"].empty() || !j["architectures"][0].is_string())
            r.bad("architectures", "a list of architecture names");
        arch = j["architectures"][0].get<std::string>();
    }
    c.model_type = r.str_or("model_type", "");
    const char* supported = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM";
    if (arch.empty() && c.model_type.empty())
        fail(strf("%s: field 'model_type': expected one of llama, mistral, qwen2, qwen3, gemma3_text, got nothing "
                  "(and no 'architectures')", path.c_str()));
    // models people bring that need math lisa.cpp does not have: refused by name, with the reason
    static const struct { const char *name, *why; } kRefused[] = {
        {"Gemma3ForConditionalGeneration", "the multimodal Gemma 3 (vision tower + text); lisa.cpp trains the text-only "
                                           "Gemma3ForCausalLM (model_type gemma3_text)"},
        {"gemma3", "the multimodal Gemma 3 (vision tower + text); lisa.cpp trains the text-only Gemma3ForCausalLM "
                   "(model_type gemma3_text)"},
        {"Qwen3MoeForCausalLM", "a mixture-of-experts model; expert layers are not implemented"},
        {"qwen3_moe", "a mixture-of-experts model; expert layers are not implemented"},
        {"Qwen2MoeForCausalLM", "a mixture-of-experts model; expert layers are not implemented"},
        {"qwen2_moe", "a mixture-of-experts model; expert layers are not implemented"},
        {"MixtralForCausalLM", "a mixture-of-experts model; expert layers are not implemented"},
        {"mixtral", "a mixture-of-experts model; expert layers are not implemented"},
        {"Gemma2ForCausalLM", "Gemma 2, not implemented (Gemma 3 is: Gemma3ForCausalLM)"},
        {"gemma2", "Gemma 2, not implemented (Gemma 3 is: Gemma3ForCausalLM)"},
    };
    for (const auto& rf : kRefused) {
        if (arch == rf.name) fail(strf("%s: field 'architectures': %s is %s", path.c_str(), rf.name, rf.why));
        if (arch.empty() && c.model_type == rf.name)
            fail(strf("%s: field 'model_type': %s is %s", path.c_str(), rf.name, rf.why));
    }
    static const struct { model_arch arch; const char *type, *cls; int64_t max_pos; } kArchs[] = {
        {model_arch::llama, "llama", "LlamaForCausalLM", 2048},
        {model_arch::mistral, "mistral", "MistralForCausalLM", 4096 * 32},
        {model_arch::qwen2, "qwen2", "Qwen2ForCausalLM", 32768},
        {model_arch::qwen3, "qwen3", "Qwen3ForCausalLM", 32768},
        {model_arch::gemma3, "gemma3_text", "Gemma3ForCausalLM", 131072},
    };
    int found = -1;
    for (int i = 0; i < (int)(sizeof kArchs / sizeof kArchs[0]); i++)
        if (arch == kArchs[i].cls || (arch.empty() && c.model_type == kArchs[i].type)) found = i;
    if (found < 0)
        fail(strf("%s: field '%s': unsupported architecture \"%s\" (supported: %s)", path.c_str(),
                  arch.empty() ? "model_type" : "architectures", arch.empty() ? c.model_type.c_str() : arch.c_str(),
                  supported));
    c.arch = kArchs[found].arch;
    if (!c.model_type.empty() && c.model_type != kArchs[found].type)
        fail(strf("%s: field 'model_type': \"%s\" does not match architecture %s", path.c_str(), c.model_type.c_str(),
                  kArchs[found].cls));
    c.model_type = kArchs[found].type;
    c.architecture = kArchs[found].cls;
    const bool gemma = c.arch == model_arch::gemma3, qwen3 = c.arch == model_arch::qwen3;
    // fields that would add parts lisa.cpp does not have
    if (r.has("vision_config")) r.bad("vision_config", "nothing (vision towers are not implemented; text models only)");
    for (const char* moe : {"num_experts", "num_local_experts", "n_routed_experts"})
        if (r.has(moe) && !(j[moe].is_number_integer() && j[moe].get<int64_t>() == 0))
            r.bad(moe, "nothing (mixture-of-experts layers are not implemented)");
    if (r.bool_or("use_bidirectional_attention", false))
        r.bad("use_bidirectional_attention", "false (bidirectional attention is not implemented)");

    // generous bounds (the largest released models are far inside them) that keep every size
    // product well within int64
    c.vocab_size = r.pos_int_max("vocab_size", kMaxVocab);
    c.hidden_size = r.pos_int_max("hidden_size", kMaxHidden);
    c.intermediate_size = r.pos_int_max("intermediate_size", kMaxIntermediate);
    c.num_layers = r.pos_int_max("num_hidden_layers", kMaxLayers);
    c.num_heads = r.pos_int_max("num_attention_heads", kMaxHeads);
    c.num_kv_heads = r.pos_int_max_or("num_key_value_heads", kMaxHeads, c.num_heads);
    if (c.num_heads % c.num_kv_heads != 0)
        fail(strf("%s: field 'num_key_value_heads': %lld does not divide num_attention_heads %lld", path.c_str(),
                  (long long)c.num_kv_heads, (long long)c.num_heads));
    if (r.has("head_dim")) {
        c.head_dim = r.pos_int_max("head_dim", kMaxHeadDim);
    } else if (qwen3 || gemma) {
        c.head_dim = qwen3 ? 128 : 256;  // the defaults of Qwen3Config and Gemma3TextConfig
    } else {
        if (c.hidden_size % c.num_heads != 0)
            fail(strf("%s: field 'hidden_size': %lld is not a multiple of num_attention_heads %lld (and no head_dim)",
                      path.c_str(), (long long)c.hidden_size, (long long)c.num_heads));
        c.head_dim = c.hidden_size / c.num_heads;
    }
    if (c.head_dim % 2 != 0)
        fail(strf("%s: field 'head_dim': expected an even head size for rotary embeddings, got %lld", path.c_str(),
                  (long long)c.head_dim));
    if (c.head_dim > kMaxHeadDim)
        fail(strf("%s: field 'hidden_size': %lld / num_attention_heads gives a head size above %lld", path.c_str(),
                  (long long)c.hidden_size, (long long)kMaxHeadDim));
    c.max_position_embeddings = r.pos_int_max_or("max_position_embeddings", kMaxPositions, kArchs[found].max_pos);
    c.rms_norm_eps = r.num_or("rms_norm_eps", 1e-6);
    if (!(c.rms_norm_eps > 0)) r.bad("rms_norm_eps", "a positive number");
    c.initializer_range = r.num_or("initializer_range", 0.02);
    c.tie_word_embeddings = r.bool_or("tie_word_embeddings", gemma);  // Gemma3TextConfig ties by default

    if (gemma) {
        std::string act = r.str_or("hidden_activation", "gelu_pytorch_tanh");
        if (act != "gelu_pytorch_tanh")
            r.bad("hidden_activation", "\"gelu_pytorch_tanh\" (the only Gemma activation implemented)");
        c.hidden_act = activation::gelu_tanh;
    } else {
        std::string act = r.str_or("hidden_act", "silu");
        if (act != "silu") r.bad("hidden_act", "\"silu\" (the only activation implemented)");
    }
    if (r.num_or("attention_dropout", 0.0) != 0.0) r.bad("attention_dropout", "0 (dropout is not implemented)");

    // which layers attend through a sliding window
    std::vector<uint8_t> sliding(c.num_layers, 0);
    if (c.arch == model_arch::llama) {
        bool ab = r.bool_or("attention_bias", false);
        c.qkv_bias = c.o_bias = ab;
        if (r.bool_or("mlp_bias", false)) r.bad("mlp_bias", "false (MLP biases are not implemented)");
    } else if (c.arch == model_arch::mistral) {  // sliding_window may be null: every layer full
        c.sliding_window = r.has("sliding_window") ? r.pos_int("sliding_window") : 0;
        if (c.sliding_window > 0) sliding.assign(c.num_layers, 1);
    } else if (c.arch == model_arch::qwen2 || qwen3) {
        if (c.arch == model_arch::qwen2) {
            c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
        } else {
            c.qkv_bias = c.o_bias = r.bool_or("attention_bias", false);
            c.qk_norm = true;
        }
        // as Hugging Face: with use_sliding_window, layers from max_window_layers on use the window
        if (r.bool_or("use_sliding_window", false)) {
            c.sliding_window = r.pos_int_or("sliding_window", 4096);
            const int64_t from = r.has("max_window_layers") ? (int64_t)r.num_or("max_window_layers", 28) : 28;
            for (int64_t l = std::max<int64_t>(0, from); l < c.num_layers; l++) sliding[l] = 1;
        }
    } else {  // gemma3
        c.qk_norm = true;
        c.sandwich_norms = true;
        c.norm_weight_offset = 1.0;
        c.embed_scale = std::sqrt((double)c.hidden_size);
        c.qkv_bias = c.o_bias = r.bool_or("attention_bias", false);
        c.query_pre_attn_scalar = r.num_or("query_pre_attn_scalar", 256);
        if (!(c.query_pre_attn_scalar > 0)) r.bad("query_pre_attn_scalar", "a positive number");
        c.attn_logit_softcap = r.num_or("attn_logit_softcapping", 0.0);
        c.final_logit_softcap = r.num_or("final_logit_softcapping", 0.0);
        if (c.attn_logit_softcap < 0) r.bad("attn_logit_softcapping", "a positive number or null");
        if (c.final_logit_softcap < 0) r.bad("final_logit_softcapping", "a positive number or null");
        c.sliding_window = r.pos_int_or("sliding_window", 4096);
        const int64_t pattern = r.pos_int_or("sliding_window_pattern", 6);  // older configs: every 6th layer global
        for (int64_t l = 0; l < c.num_layers; l++) sliding[l] = (l + 1) % pattern != 0;
        c.rope_local.theta = r.num_or("rope_local_base_freq", 10000.0);
        if (!(c.rope_local.theta > 0)) r.bad("rope_local_base_freq", "a positive number");
    }
    // an explicit layer_types list (newer configs) says it per layer
    if (r.has("layer_types") && c.arch != model_arch::llama) {
        const json& lt = j["layer_types"];
        if (!lt.is_array() || (int64_t)lt.size() != c.num_layers)
            r.bad("layer_types", strf("a list of %lld entries \"sliding_attention\" / \"full_attention\"",
                                      (long long)c.num_layers).c_str());
        for (int64_t l = 0; l < c.num_layers; l++) {
            if (lt[l] == "sliding_attention") sliding[l] = 1;
            else if (lt[l] == "full_attention") sliding[l] = 0;
            else r.bad("layer_types", "entries \"sliding_attention\" or \"full_attention\"");
        }
        if (c.arch == model_arch::mistral && c.sliding_window == 0)
            for (uint8_t& sl : sliding) sl = 0;
        if ((c.arch == model_arch::qwen2 || qwen3) && c.sliding_window == 0) {
            bool any = false;
            for (uint8_t sl : sliding) any |= sl != 0;
            if (any) c.sliding_window = r.pos_int_or("sliding_window", 4096);
        }
    }
    bool any_window = false;
    for (uint8_t sl : sliding) any_window |= sl != 0;
    if (any_window && c.sliding_window > 0) {
        c.layer_window.assign(c.num_layers, 0);
        for (int64_t l = 0; l < c.num_layers; l++) c.layer_window[l] = sliding[l] ? c.sliding_window : 0;
    }
    if (gemma) c.layer_local_rope = sliding;  // local layers: rope_local_base_freq, no scaling

    // rope
    c.rope.theta = r.num_or("rope_theta", 10000.0);
    if (!(c.rope.theta > 0)) r.bad("rope_theta", "a positive number");
    if (r.has("rope_scaling")) {
        const json& rs = j["rope_scaling"];
        if (!rs.is_object()) r.bad("rope_scaling", "an object or null");
        reader rr{rs, path};
        std::string type = rr.str_or("rope_type", rr.str_or("type", "default"));
        auto bad_rs = [&](const char* key, const char* expected) {
            fail(strf("%s: field 'rope_scaling.%s': expected %s", path.c_str(), key, expected));
        };
        if (type == "default") {
            c.rope.kind = rope_kind::none;
        } else if (type == "linear") {
            c.rope.kind = rope_kind::linear;
            c.rope.factor = rr.num_or("factor", -1);
            if (!(c.rope.factor >= 1)) bad_rs("factor", "a number >= 1");
        } else if (type == "llama3") {
            c.rope.kind = rope_kind::llama3;
            c.rope.factor = rr.num_or("factor", -1);
            c.rope.low_freq_factor = rr.num_or("low_freq_factor", -1);
            c.rope.high_freq_factor = rr.num_or("high_freq_factor", -1);
            if (!rr.has("original_max_position_embeddings"))
                bad_rs("original_max_position_embeddings", "a positive integer");
            c.rope.original_max_position_embeddings = rr.pos_int("original_max_position_embeddings");
            if (!(c.rope.factor >= 1)) bad_rs("factor", "a number >= 1");
            if (!(c.rope.low_freq_factor > 0)) bad_rs("low_freq_factor", "a positive number");
            if (!(c.rope.high_freq_factor > c.rope.low_freq_factor))
                bad_rs("high_freq_factor", "a number greater than low_freq_factor");
        } else {
            fail(strf("%s: field 'rope_scaling.rope_type': unsupported rope type \"%s\" (supported: default, linear, "
                      "llama3)", path.c_str(), type.c_str()));
        }
    }

    std::string dt = r.str_or("torch_dtype", "float32");
    if (!dtype_from_torch_name(dt, &c.torch_dtype)) r.bad("torch_dtype", "\"float32\", \"bfloat16\" or \"float16\"");
    c.bos_token_ids = r.ids_or_empty("bos_token_id");
    c.eos_token_ids = r.ids_or_empty("eos_token_id");
    for (const char* key : {"bos_token_id", "eos_token_id"})
        for (int64_t id : key[0] == 'b' ? c.bos_token_ids : c.eos_token_ids)
            if (id < 0 || id >= c.vocab_size)
                r.bad(key, strf("token ids in [0, vocab_size %lld)", (long long)c.vocab_size).c_str());
    const int64_t params = config_num_params(c);
    if (params > kMaxParams)
        fail(strf("%s: fields 'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers': %lld parameters, "
                  "more than the %lld lisa.cpp handles", path.c_str(), (long long)params, (long long)kMaxParams));
    return c;
}

llama_config config_load(const std::string& path) { return config_parse(fs_read_text(path), path); }

int64_t config_layer_window(const llama_config& c, int64_t l) {
    return c.layer_window.empty() ? 0 : c.layer_window.at(l);
}

bool config_layer_local_rope(const llama_config& c, int64_t l) {
    return !c.layer_local_rope.empty() && c.layer_local_rope.at(l);
}

bool config_any_local_rope(const llama_config& c) {
    for (uint8_t x : c.layer_local_rope)
        if (x) return true;
    return false;
}

float config_attn_scale(const llama_config& c) {
    if (c.query_pre_attn_scalar > 0) return (float)(1.0 / std::sqrt(c.query_pre_attn_scalar));
    return 1.0f / std::sqrt((float)c.head_dim);
}

std::string config_to_json(const llama_config& c, const std::string& original) {
    json j = json::object();
    if (!original.empty()) {
        try {
            j = json::parse(original);
        } catch (...) {
            j = json::object();
        }
        if (!j.is_object()) j = json::object();
    }
    j["architectures"] = {c.architecture};
    j["model_type"] = c.model_type;
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["num_hidden_layers"] = c.num_layers;
    j["num_attention_heads"] = c.num_heads;
    j["num_key_value_heads"] = c.num_kv_heads;
    j["head_dim"] = c.head_dim;
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["rms_norm_eps"] = c.rms_norm_eps;
    j["initializer_range"] = c.initializer_range;
    j["rope_theta"] = c.rope.theta;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    if (c.arch == model_arch::gemma3) j["hidden_activation"] = "gelu_pytorch_tanh";
    else j["hidden_act"] = "silu";
    j["torch_dtype"] = dtype_torch_name(c.torch_dtype);
    if (c.arch == model_arch::llama) {
        j["attention_bias"] = c.qkv_bias;
        j["mlp_bias"] = false;
    }
    if (c.arch == model_arch::qwen3 || c.arch == model_arch::gemma3) j["attention_bias"] = c.qkv_bias;
    // windows: Mistral's applies to every layer; the others say it per layer
    if (c.arch == model_arch::mistral) {
        j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    } else if (c.arch != model_arch::llama) {
        json types = json::array();
        for (int64_t l = 0; l < c.num_layers; l++)
            types.push_back(config_layer_window(c, l) > 0 ? "sliding_attention" : "full_attention");
        j["layer_types"] = types;
        if (c.arch == model_arch::gemma3) {
            j["sliding_window"] = c.sliding_window;
            j.erase("sliding_window_pattern");  // layer_types says it
        } else {
            const bool any = !c.layer_window.empty();
            j["use_sliding_window"] = any;
            j["sliding_window"] = any ? json(c.sliding_window) : json(nullptr);
            if (any) {  // the first windowed layer, so that configs without layer_types read the same
                int64_t first = 0;
                while (first < c.num_layers && config_layer_window(c, first) == 0) first++;
                j["max_window_layers"] = first;
            }
        }
    }
    if (c.arch == model_arch::gemma3) {
        const double qs = c.query_pre_attn_scalar;  // an integer in Hugging Face's configs (256)
        j["query_pre_attn_scalar"] = qs == std::floor(qs) && qs < 1e15 ? json((int64_t)qs) : json(qs);
        j["rope_local_base_freq"] = c.rope_local.theta;
        j["attn_logit_softcapping"] = c.attn_logit_softcap > 0 ? json(c.attn_logit_softcap) : json(nullptr);
        j["final_logit_softcapping"] = c.final_logit_softcap > 0 ? json(c.final_logit_softcap) : json(nullptr);
    }
    if (c.rope.kind == rope_kind::none) {
        j["rope_scaling"] = nullptr;
    } else if (c.rope.kind == rope_kind::linear) {
        j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope.factor}};
    } else {
        j["rope_scaling"] = {{"rope_type", "llama3"},
                             {"factor", c.rope.factor},
                             {"low_freq_factor", c.rope.low_freq_factor},
                             {"high_freq_factor", c.rope.high_freq_factor},
                             {"original_max_position_embeddings", c.rope.original_max_position_embeddings}};
    }
    auto ids = [](const std::vector<int64_t>& v) -> json {
        if (v.empty()) return nullptr;
        if (v.size() == 1) return v[0];
        return v;
    };
    if (!c.bos_token_ids.empty() || !j.contains("bos_token_id")) j["bos_token_id"] = ids(c.bos_token_ids);
    if (!c.eos_token_ids.empty() || !j.contains("eos_token_id")) j["eos_token_id"] = ids(c.eos_token_ids);
    return j.dump(2) + "\n";
}

}  // namespace lisa
