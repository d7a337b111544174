// LoRA (Hu et al. 2021, PEFT's layout): the base stays frozen; low-rank adapters A [r, in] and
// B [out, r] on the chosen Linear modules train, computed unmerged (y += s·B·A·x). The result is
// a PEFT adapter folder, and with --save_aggregated_lora the merged model too.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "model/lora.h"
#include "train/policy.h"

namespace lisa {

namespace {

class lora_policy final : public train_policy {
  public:
    explicit lora_policy(const train_options& o) : o_(o) {
        cfg_.r = o.lora_r;
        cfg_.alpha = o.lora_alpha;
        cfg_.dropout = o.lora_dropout;
        cfg_.target_modules = o.lora_target_modules;
    }

    train_method method() const override { return train_method::lora; }

    void setup(policy_env& env) override {
        decoder_model* m = env.model();
        LISA_ASSERT(m, "lora setup", "LoRA attaches adapters to a model");
        const int L = env.num_layers();
        // the modules of this model the names say (split names on a fused model: the fused module)
        std::vector<int> targets;
        std::vector<std::string> names;
        for (const auto& name : o_.lora_target_modules) {
            const int t = lora_target_find(m->cfg, name);
            if (t < 0) {
                std::string have;
                for (int k = 0; k < LORA_N; k++)
                    if (lora_target_present(m->cfg, k)) have += std::string(have.empty() ? "" : ", ") + lora_target_name(k);
                fail(strf("--lora_target_modules: unknown module \"%s\" (this %s has %s)", name.c_str(),
                          m->cfg.architecture.c_str(), have.c_str()));
            }
            if (std::find(targets.begin(), targets.end(), t) != targets.end()) continue;
            targets.push_back(t);
            names.push_back(lora_target_name(t));
        }
        cfg_.target_modules = names;  // as PEFT will look them up in this model
        m->lora.r = o_.lora_r;
        m->lora.scale = (float)cfg_.scale();
        m->lora.dropout = (float)o_.lora_dropout;
        m->lora.layers.assign(L, decoder_lora_layer{});
        // sizes, then one buffer for all A and B
        struct item {
            int     l, t;
            int64_t out, in;
        };
        std::vector<item> items;
        std::vector<param_group::span> spans;
        size_t total = 0;
        for (int l = 0; l < L; l++)
            for (int t : targets) {
                int64_t out, in;
                lora_module_weight(*m, lora_module_name(l, t), &out, &in);
                items.push_back({l, t, out, in});
                spans.push_back({total, (size_t)(o_.lora_r * (in + out)), true});
                total += (size_t)o_.lora_r * (in + out);
            }
        const backend& be = *m->ctx.be;
        weights_ = device_array<float>(be, total);
        int shard, shards;
        env.shard_info(&shard, &shards);
        fixed_.push_back(param_group_make(be, "lora", weights_.data(), spans, false, shard, shards));
        fixed_.back().role = group_role::adapters;
        param_group& g = fixed_.back();
        decoder_grads* gr = env.grads();
        rng r;
        rng_init(&r, o_.seed ^ 0x10a4ull);
        for (size_t i = 0; i < items.size(); i++) {
            const item& it = items[i];
            const size_t off = spans[i].off;
            float* A = weights_.data() + off;
            float* B = A + o_.lora_r * it.in;
            // as PEFT: A ~ kaiming_uniform(a=√5) = U(-1/√in, 1/√in), B = 0 (the adapter starts as a no-op)
            double bound = 1.0 / std::sqrt((double)it.in);
            std::vector<float> a0((size_t)(o_.lora_r * it.in));
            for (float& x : a0) x = (float)((2 * rng_uniform(&r) - 1) * bound);
            weights_.write(off, a0.data(), a0.size());
            m->lora.layers[it.l].A[it.t] = A;
            m->lora.layers[it.l].B[it.t] = B;
            gr->lora[it.l].A[it.t] = g.grad() + off;
            gr->lora[it.l].B[it.t] = g.grad() + off + o_.lora_r * it.in;
        }
    }

    std::vector<state_span> extra_state() override { return {{"lora.weights", weights_.data(), weights_.size(), weights_.be()}}; }

    void save_result(policy_env& env, const result_settings& s) override {
        const decoder_model& m = *env.model();
        // PEFT adapter: adapter_model.safetensors, then the merged model if asked, config last
        std::vector<st_write_entry> es;
        const std::vector<float> host = weights_.host_copy();  // A and B of every adapter
        auto at = [&](const float* dev) { return host.data() + (dev - weights_.data()); };
        for (int l = 0; l < (int)m.cfg.num_layers; l++)
            for (int t = 0; t < LORA_N; t++) {
                if (!m.lora.layers[l].A[t]) continue;
                const std::string module = lora_module_name(l, t);
                int64_t out, in;
                lora_module_weight(m, module, &out, &in);
                const std::string name = "base_model.model." + module;
                es.push_back({name + ".lora_A.weight", {o_.lora_r, in}, dtype::f32, at(m.lora.layers[l].A[t]), dtype::f32});
                es.push_back({name + ".lora_B.weight", {out, o_.lora_r}, dtype::f32, at(m.lora.layers[l].B[t]), dtype::f32});
            }
        fs_remove(fs_join(s.dir, "adapter_config.json"));
        st_write(fs_join(s.dir, "adapter_model.safetensors"), es);
        if (o_.save_aggregated_lora) {
            auto merged = std::make_unique<decoder_model>(m);  // the base, with the adapter folded in
            merged->lora = decoder_lora{};
            decoder_model_rebind(merged.get());
            lora_fold_into(merged.get(), m.lora);
            decoder_save_options so;
            so.out_dtype = s.out_dtype;
            so.max_shard_bytes = s.max_shard_bytes;
            so.tokenizer_from = s.base_model;
            decoder_model_save(*merged, s.dir, so);
        } else {
            decoder_copy_tokenizer_files(s.base_model, s.dir);
        }
        fs_write_atomic(fs_join(s.dir, "adapter_config.json"), lora_config_to_json(cfg_, s.base_model));
    }

  private:
    const train_options& o_;
    lora_adapter_config  cfg_;
    device_array<float>  weights_;  // every adapter's A and B, one buffer
};

}  // namespace

std::unique_ptr<train_policy> policy_make_lora(const train_options& o) { return std::make_unique<lora_policy>(o); }

void policy_validate_lora(const train_options& o) {
    if (o.lora_r < 1) fail("--lora_r must be at least 1");
    if (o.lora_dropout < 0 || o.lora_dropout >= 1) fail("--lora_dropout must be in [0, 1)");
}

}  // namespace lisa
