#include "model/config.h"

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
        fail(strf("%s: not valid JSON (%s)", path.c_str(), e.what()));
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
    if (arch.empty() && c.model_type.empty())
        fail(strf("%s: field 'model_type': expected \"llama\", \"mistral\" or \"qwen2\", got nothing "
                  "(and no 'architectures')", path.c_str()));
    if (arch == "LlamaForCausalLM" || (arch.empty() && c.model_type == "llama")) c.arch = model_arch::llama;
    else if (arch == "MistralForCausalLM" || (arch.empty() && c.model_type == "mistral")) c.arch = model_arch::mistral;
    else if (arch == "Qwen2ForCausalLM" || (arch.empty() && c.model_type == "qwen2")) c.arch = model_arch::qwen2;
    else
        fail(strf("%s: field '%s': unsupported architecture \"%s\" (supported: LlamaForCausalLM, "
                  "MistralForCausalLM, Qwen2ForCausalLM)", path.c_str(), arch.empty() ? "model_type" : "architectures",
                  arch.empty() ? c.model_type.c_str() : arch.c_str()));
    static const char* kTypes[] = {"llama", "mistral", "qwen2"};
    static const char* kArchs[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
    if (!c.model_type.empty() && c.model_type != kTypes[(int)c.arch])
        fail(strf("%s: field 'model_type': \"%s\" does not match architecture %s", path.c_str(), c.model_type.c_str(),
                  kArchs[(int)c.arch]));
    c.model_type = kTypes[(int)c.arch];
    c.architecture = kArchs[(int)c.arch];

    c.vocab_size = r.pos_int("vocab_size");
    c.hidden_size = r.pos_int("hidden_size");
    c.intermediate_size = r.pos_int("intermediate_size");
    c.num_layers = r.pos_int("num_hidden_layers");
    c.num_heads = r.pos_int("num_attention_heads");
    c.num_kv_heads = r.pos_int_or("num_key_value_heads", c.num_heads);
    if (c.num_heads % c.num_kv_heads != 0)
        fail(strf("%s: field 'num_key_value_heads': %lld does not divide num_attention_heads %lld", path.c_str(),
                  (long long)c.num_kv_heads, (long long)c.num_heads));
    if (r.has("head_dim")) {
        c.head_dim = r.pos_int("head_dim");
    } else {
        if (c.hidden_size % c.num_heads != 0)
            fail(strf("%s: field 'hidden_size': %lld is not a multiple of num_attention_heads %lld (and no head_dim)",
                      path.c_str(), (long long)c.hidden_size, (long long)c.num_heads));
        c.head_dim = c.hidden_size / c.num_heads;
    }
    if (c.head_dim % 2 != 0)
        fail(strf("%s: field 'head_dim': expected an even head size for rotary embeddings, got %lld", path.c_str(),
                  (long long)c.head_dim));
    static const int64_t kDefaultMaxPos[] = {2048, 4096 * 32, 32768};
    c.max_position_embeddings = r.pos_int_or("max_position_embeddings", kDefaultMaxPos[(int)c.arch]);
    c.rms_norm_eps = r.num_or("rms_norm_eps", 1e-6);
    if (!(c.rms_norm_eps > 0)) r.bad("rms_norm_eps", "a positive number");
    c.initializer_range = r.num_or("initializer_range", 0.02);
    c.tie_word_embeddings = r.bool_or("tie_word_embeddings", false);

    std::string act = r.str_or("hidden_act", "silu");
    if (act != "silu") r.bad("hidden_act", "\"silu\" (the only activation implemented)");
    if (r.num_or("attention_dropout", 0.0) != 0.0) r.bad("attention_dropout", "0 (dropout is not implemented)");

    if (c.arch == model_arch::llama) {
        bool ab = r.bool_or("attention_bias", false);
        c.qkv_bias = c.o_bias = ab;
        if (r.bool_or("mlp_bias", false)) r.bad("mlp_bias", "false (MLP biases are not implemented)");
    } else if (c.arch == model_arch::qwen2) {
        c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
        if (r.bool_or("use_sliding_window", false)) {
            // whichever layers use it, a window at least as long as the batch changes nothing;
            // shorter batches are checked when activations are sized (llama_acts_init)
            c.sliding_window = r.pos_int_or("sliding_window", 4096);
        }
    } else {  // mistral: sliding_window may be null
        c.sliding_window = r.has("sliding_window") ? r.pos_int("sliding_window") : 0;
    }

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
    return c;
}

llama_config config_load(const std::string& path) { return config_parse(fs_read_text(path), path); }

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
    j["hidden_act"] = "silu";
    j["torch_dtype"] = dtype_torch_name(c.torch_dtype);
    if (c.arch == model_arch::llama) {
        j["attention_bias"] = c.qkv_bias;
        j["mlp_bias"] = false;
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
