#include "model/config.h"
#include "model/arch/arch.h"
#include "model/layer.h"  // config_num_params: the parameter bound

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"

namespace lisa {

using json = nlohmann::json;

void config_read_silu(const json_reader& r) {
    std::string act = r.str_or("hidden_act", "silu");
    if (act != "silu") r.bad("hidden_act", "\"silu\" (the only activation implemented)");
}

bool config_read_layer_types(const json_reader& r, int64_t num_layers, std::vector<uint8_t>& sliding) {
    if (!r.has("layer_types")) return false;
    const json& lt = r.j["layer_types"];
    if (!lt.is_array() || (int64_t)lt.size() != num_layers)
        r.bad("layer_types", strf("a list of %lld entries \"sliding_attention\" / \"full_attention\"",
                                  (long long)num_layers).c_str());
    for (int64_t l = 0; l < num_layers; l++) {
        if (lt[l] == "sliding_attention") sliding[l] = 1;
        else if (lt[l] == "full_attention") sliding[l] = 0;
        else r.bad("layer_types", "entries \"sliding_attention\" or \"full_attention\"");
    }
    return true;
}

model_config config_parse(const std::string& text, const std::string& path) {
    json j;
    try {
        j = json::parse(text);
    } catch (const std::exception& e) {
        fail(strf("%s: not valid JSON (%s)", path.c_str(), json_error(e).c_str()));
    }
    if (!j.is_object()) fail(strf("%s: expected a JSON object", path.c_str()));
    json_reader r{j, path};
    model_config c;

    // architecture: model_type and/or architectures[0]
    std::string cls;
    if (r.has("architectures")) {
        if (!j["architectures"].is_array() || j["architectures"].empty() || !j["architectures"][0].is_string())
            r.bad("architectures", "a list of architecture names");
        cls = j["architectures"][0].get<std::string>();
    }
    c.model_type = r.str_or("model_type", "");
    std::string types, classes;  // for messages: what the registry lists
    for (const arch_def* a : arch_all()) {
        types += std::string(types.empty() ? "" : ", ") + a->model_type;
        classes += std::string(classes.empty() ? "" : ", ") + a->cls;
    }
    if (cls.empty() && c.model_type.empty())
        fail(strf("%s: field 'model_type': expected one of %s, got nothing (and no 'architectures')", path.c_str(),
                  types.c_str()));
    // models people bring that need math lisa.cpp does not have: refused by name, with the reason
    if (const char* why = arch_refused_why(cls.empty() ? c.model_type : cls))
        fail(strf("%s: field '%s': %s is %s", path.c_str(), cls.empty() ? "model_type" : "architectures",
                  (cls.empty() ? c.model_type : cls).c_str(), why));
    const arch_def* def = arch_find(cls, c.model_type);
    if (!def)
        fail(strf("%s: field '%s': unsupported architecture \"%s\" (supported: %s)", path.c_str(),
                  cls.empty() ? "model_type" : "architectures", cls.empty() ? c.model_type.c_str() : cls.c_str(),
                  classes.c_str()));
    c.arch = def;
    if (!c.model_type.empty() && c.model_type != def->model_type)
        fail(strf("%s: field 'model_type': \"%s\" does not match architecture %s", path.c_str(), c.model_type.c_str(),
                  def->cls));
    c.model_type = def->model_type;
    c.architecture = def->cls;
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
    } else if (def->default_head_dim > 0) {  // the default of the architecture's config class
        c.head_dim = def->default_head_dim;
    } else {
        if (c.hidden_size % c.num_heads != 0)
            fail(strf("%s: field 'hidden_size': %lld is not a multiple of num_attention_heads %lld (and no head_dim)",
                      path.c_str(), (long long)c.hidden_size, (long long)c.num_heads));
        c.head_dim = c.hidden_size / c.num_heads;
    }
    c.rope_dim = c.head_dim;  // an architecture may rotate fewer (Phi-3's partial_rotary_factor)
    if (c.head_dim % 2 != 0)
        fail(strf("%s: field 'head_dim': expected an even head size for rotary embeddings, got %lld", path.c_str(),
                  (long long)c.head_dim));
    if (c.head_dim > kMaxHeadDim)
        fail(strf("%s: field 'hidden_size': %lld / num_attention_heads gives a head size above %lld", path.c_str(),
                  (long long)c.hidden_size, (long long)kMaxHeadDim));
    c.max_position_embeddings = r.pos_int_max_or("max_position_embeddings", kMaxPositions, def->default_max_positions);
    c.rms_norm_eps = r.num_or("rms_norm_eps", 1e-6);
    if (!(c.rms_norm_eps > 0)) r.bad("rms_norm_eps", "a positive number");
    c.initializer_range = r.num_or("initializer_range", 0.02);
    c.tie_word_embeddings = r.bool_or("tie_word_embeddings", def->default_tied);

    if (r.num_or("attention_dropout", 0.0) != 0.0) r.bad("attention_dropout", "0 (dropout is not implemented)");

    // what makes the architecture itself, and which layers attend through a sliding window
    std::vector<uint8_t> sliding(c.num_layers, 0);
    def->parse(r, c, sliding);
    bool any_window = false;
    for (uint8_t sl : sliding) any_window |= sl != 0;
    if (any_window && c.sliding_window > 0) {
        c.layer_window.assign(c.num_layers, 0);
        for (int64_t l = 0; l < c.num_layers; l++) c.layer_window[l] = sliding[l] ? c.sliding_window : 0;
    }

    // rope
    c.rope.theta = r.num_or("rope_theta", def->default_rope_theta);
    if (!(c.rope.theta > 0)) r.bad("rope_theta", "a positive number");
    if (r.has("rope_scaling")) {
        const json& rs = j["rope_scaling"];
        if (!rs.is_object()) r.bad("rope_scaling", "an object or null");
        json_reader rr{rs, path, "rope_scaling"};
        std::string type = rr.str_or("rope_type", rr.str_or("type", "default"));
        auto bad_rs = [&](const char* key, const char* expected) { rr.bad(key, expected); };
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
        } else if (type == "longrope") {  // Phi-3 (as Hugging Face's _compute_longrope_parameters)
            c.rope.kind = rope_kind::longrope;
            const int64_t n = c.rope_dim / 2;
            for (const char* key : {"short_factor", "long_factor"}) {
                const std::string expected = strf("a list of %lld positive numbers (rotary dimensions / 2)", (long long)n);
                if (!rr.has(key) || !rs[key].is_array() || (int64_t)rs[key].size() != n) bad_rs(key, expected.c_str());
                std::vector<float>& f = key[0] == 's' ? c.rope.short_factor : c.rope.long_factor;
                for (const json& x : rs[key]) {
                    if (!x.is_number() || !(x.get<double>() > 0)) bad_rs(key, expected.c_str());
                    f.push_back(x.get<float>());
                }
            }
            // the pretraining context: config.json's own field (Phi-3), else rope_scaling's
            double factor = rr.num_or("factor", 1.0);
            if (r.has("original_max_position_embeddings") || rr.has("original_max_position_embeddings")) {
                c.rope.original_max_position_embeddings = r.has("original_max_position_embeddings")
                                                              ? r.pos_int("original_max_position_embeddings")
                                                              : rr.pos_int("original_max_position_embeddings");
                factor = (double)c.max_position_embeddings / (double)c.rope.original_max_position_embeddings;
            } else {
                c.rope.original_max_position_embeddings = c.max_position_embeddings;
            }
            c.rope.factor = factor;
            if (rr.has("attention_factor")) {
                c.rope.attention_factor = rr.num_or("attention_factor", 1.0);
                if (!(c.rope.attention_factor > 0)) bad_rs("attention_factor", "a positive number");
            } else {
                c.rope.attention_factor =
                    factor <= 1.0 ? 1.0
                                  : std::sqrt(1.0 + std::log(factor) /
                                                        std::log((double)c.rope.original_max_position_embeddings));
            }
        } else {
            fail(strf("%s: field 'rope_scaling.rope_type': unsupported rope type \"%s\" (supported: default, linear, "
                      "llama3, longrope)", path.c_str(), type.c_str()));
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

model_config config_load(const std::string& path) { return config_parse(fs_read_text(path), path); }

int64_t config_layer_window(const model_config& c, int64_t l) {
    return c.layer_window.empty() ? 0 : c.layer_window.at(l);
}

bool config_layer_local_rope(const model_config& c, int64_t l) {
    return !c.layer_local_rope.empty() && c.layer_local_rope.at(l);
}

bool config_layer_rope(const model_config& c, int64_t l) {
    return c.layer_no_rope.empty() || !c.layer_no_rope.at(l);
}

bool config_any_local_rope(const model_config& c) {
    for (uint8_t x : c.layer_local_rope)
        if (x) return true;
    return false;
}

float config_attn_scale(const model_config& c) {
    if (c.query_pre_attn_scalar > 0) return (float)(1.0 / std::sqrt(c.query_pre_attn_scalar));
    return 1.0f / std::sqrt((float)c.head_dim);
}

std::string config_to_json(const model_config& c, const std::string& original) {
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
    j["torch_dtype"] = dtype_torch_name(c.torch_dtype);
    arch_of(c).write(c, j);  // activation, biases, windows and the rest that is the architecture's own
    if (c.rope.kind == rope_kind::none) {
        j["rope_scaling"] = nullptr;
    } else if (c.rope.kind == rope_kind::linear) {
        j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope.factor}};
    } else if (c.rope.kind == rope_kind::longrope) {
        j["rope_scaling"] = {{"rope_type", "longrope"},
                             {"short_factor", c.rope.short_factor},
                             {"long_factor", c.rope.long_factor},
                             {"attention_factor", c.rope.attention_factor}};
        j["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
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
