#include "model/lora.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/fs.h"
#include "io/json_reader.h"
#include "io/safetensors.h"

namespace lisa {

using json = nlohmann::json;

double lora_adapter_config::scale() const { return use_rslora ? alpha / std::sqrt((double)r) : alpha / (double)r; }

lora_adapter_config lora_config_load(const std::string& path) {
    json j;
    try {
        j = json::parse(fs_read_text(path));
    } catch (const json::exception& e) {
        fail(strf("%s: not valid JSON (%s)", path.c_str(), json_error(e).c_str()));
    }
    const json_reader r = json_reader::object(j, path, "");
    lora_adapter_config c;
    if (r.str_or("peft_type", "LORA") != "LORA") r.bad("peft_type", "\"LORA\"");
    c.r = r.pos_int_max("r", 1 << 20);
    if (!r.has("lora_alpha")) r.bad("lora_alpha", "a number");
    c.alpha = r.num_or("lora_alpha", 0);
    c.dropout = r.num_or("lora_dropout", 0.0);
    c.use_rslora = r.bool_or("use_rslora", false);
    if (r.bool_or("fan_in_fan_out", false)) r.bad("fan_in_fan_out", "false (Llama Linear layers)");
    if (r.str_or("bias", "none") != "none") r.bad("bias", "\"none\" (LoRA biases are not supported)");
    if (r.bool_or("use_dora", false)) r.bad("use_dora", "false (DoRA is not supported)");
    if (r.has("modules_to_save") && !j["modules_to_save"].empty())
        r.bad("modules_to_save", "null (fully trained extra modules are not supported)");
    if (r.has("target_modules")) {
        // PEFT also writes one regex string; the adapter's tensors say which modules it has
        if (!j["target_modules"].is_array() && !j["target_modules"].is_string())
            r.bad("target_modules", "a list of module names or a regex string");
        if (j["target_modules"].is_array())
            for (const json& t : j["target_modules"]) {
                if (!t.is_string()) r.bad("target_modules", "a list of module names or a regex string");
                c.target_modules.push_back(t.get<std::string>());
            }
    }
    return c;
}

std::string lora_config_to_json(const lora_adapter_config& c, const std::string& base_model) {
    json j = {{"peft_type", "LORA"},       {"task_type", "CAUSAL_LM"},  {"r", c.r},
              {"lora_alpha", c.alpha},     {"lora_dropout", c.dropout}, {"target_modules", c.target_modules},
              {"bias", "none"},            {"fan_in_fan_out", false},   {"use_rslora", c.use_rslora},
              {"modules_to_save", nullptr}, {"inference_mode", true},   {"init_lora_weights", true},
              {"base_model_name_or_path", base_model}};
    return j.dump(2) + "\n";
}

float* lora_module_weight(const decoder_model& m, const std::string& module, int64_t* out, int64_t* in,
                          size_t* index) {
    const std::string name = module + ".weight";
    for (size_t i = 0; i < m.tensors.size(); i++) {
        const auto& t = m.tensors[i];
        if (t.name == name && t.is_matrix && t.layer >= 0) {
            *out = t.shape[0];
            *in = t.shape[1];
            if (index) *index = i;
            return const_cast<float*>(m.params.data()) + t.offset;
        }
    }
    return nullptr;
}

std::string lora_module_name(int layer, int target) {
    std::string key = kLayerTensors[lora_target_tensor(target)].key;  // "self_attn.q_proj.weight"
    return "model.layers." + std::to_string(layer) + "." + key.substr(0, key.size() - 7);
}

// W[out, in] += scale · B·A on the model's Linear `module`, after checking the adapter fits it; a
// bf16 model holds the merged weight in fp32 from then on. `source` names the adapter in errors.
static void fold_module(decoder_model* m, const std::string& module, const float* A, const float* B, int64_t r,
                        int64_t a_in, int64_t b_out, float scale, const std::string& source) {
    int64_t out, in;
    size_t ti = 0;
    float* w = lora_module_weight(*m, module, &out, &in, &ti);
    if (!w) fail(strf("%s: the base model has no Linear '%s'", source.c_str(), module.c_str()));
    if (a_in != in || b_out != out)
        fail(strf("%s: adapter [%lld x %lld] does not fit the base weight [%lld, %lld]", source.c_str(),
                  (long long)b_out, (long long)a_in, (long long)out, (long long)in));
    decoder_materialize(m, ti, ti);
    m->ctx.be->lora_fold(w, A, B, out, in, r, scale);
}

void lora_fold_into(decoder_model* dst, const decoder_lora& lo) {
    dst->ctx.apply();
    for (int l = 0; l < (int)lo.layers.size(); l++)
        for (int t = 0; t < LORA_N; t++) {
            if (!lo.layers[l].A[t]) continue;
            const std::string module = lora_module_name(l, t);
            int64_t out, in;
            LISA_ASSERT(lora_module_weight(*dst, module, &out, &in), "lora_fold_into",
                        "the model has no weight for an adapter");
            fold_module(dst, module, lo.layers[l].A[t], lo.layers[l].B[t], lo.r, in, out, lo.scale, module);
        }
}

std::map<std::string, lora_module_delta> lora_adapter_read(const std::string& dir) {
    if (!fs_is_dir(dir)) fail(strf("%s: --lora_model_path must be a PEFT adapter folder", dir.c_str()));
    lora_adapter_config c = lora_config_load(fs_join(dir, "adapter_config.json"));
    std::string wpath = fs_join(dir, "adapter_model.safetensors");
    if (!fs_is_file(wpath)) fail(strf("%s: missing (adapter weights must be safetensors)", wpath.c_str()));
    auto f = st_open(wpath);
    const std::string prefix = "base_model.model.";
    std::set<std::string> used;
    std::map<std::string, lora_module_delta> out;
    for (const auto& t : f->tensors) {
        const std::string& n = t.name;
        size_t pa = n.rfind(".lora_A.weight");
        if (pa == std::string::npos) continue;
        if (n.compare(0, prefix.size(), prefix) != 0)
            fail(strf("%s: tensor '%s': expected a name starting with '%s'", wpath.c_str(), n.c_str(), prefix.c_str()));
        std::string module = n.substr(prefix.size(), pa - prefix.size());
        std::string bname = prefix + module + ".lora_B.weight";
        const st_tensor* tb = st_find(*f, bname);
        if (!tb) fail(strf("%s: tensor '%s' has no matching '%s'", wpath.c_str(), n.c_str(), bname.c_str()));
        if (t.shape.size() != 2 || tb->shape.size() != 2 || tb->shape[1] != t.shape[0])
            fail(strf("%s: '%s' %s and '%s' %s are not a LoRA pair [r, in] / [out, r]", wpath.c_str(), n.c_str(),
                      shape_str(t.shape).c_str(), bname.c_str(), shape_str(tb->shape).c_str()));
        lora_module_delta d;
        d.r = t.shape[0];
        d.in = t.shape[1];
        d.out = tb->shape[0];
        d.scale = (float)c.scale();
        d.A.resize(d.r * d.in);
        d.B.resize(d.out * d.r);
        convert_to_f32(d.A.data(), t.data, t.dt, t.numel);
        convert_to_f32(d.B.data(), tb->data, tb->dt, tb->numel);
        d.source = wpath + ": '" + n + "'";
        out[module] = std::move(d);
        used.insert(n);
        used.insert(bname);
    }
    for (const auto& t : f->tensors)
        if (!used.count(t.name))
            fail(strf("%s: unexpected tensor '%s' (only lora_A / lora_B pairs are supported)", wpath.c_str(),
                      t.name.c_str()));
    if (used.empty()) fail(strf("%s: no lora_A / lora_B tensors", wpath.c_str()));
    return out;
}

void lora_merge_adapter(decoder_model* m, const std::string& dir) {
    m->ctx.apply();
    const backend& be = *m->ctx.be;
    for (const auto& [module, d] : lora_adapter_read(dir)) {
        device_array<float> A, B;  // the adapter's matrices on the model's device
        A.assign(be, d.A);
        B.assign(be, d.B);
        fold_module(m, module, A.data(), B.data(), d.r, d.in, d.out, d.scale, d.source);
    }
}

}  // namespace lisa
