#include "train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/lora.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

using json = nlohmann::json;
namespace fsys = std::filesystem;

static std::atomic<bool> g_stop{false};
void train_request_stop() { g_stop = true; }

static double proc_status_kib(const char* key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    size_t k = std::strlen(key);
    while (std::getline(f, line))
        if (line.compare(0, k, key) == 0) return std::atof(line.c_str() + k);
    return 0;
}
double current_rss_mib() { return proc_status_kib("VmRSS:") / 1024.0; }
double peak_rss_mib() { return proc_status_kib("VmHWM:") / 1024.0; }

std::vector<int> lisa_draw_layers(uint64_t seed, int64_t interval, int n_layers, int gamma) {
    rng r;
    rng_init(&r, seed ^ (0x5851f42d4c957f2dull * (uint64_t)(interval + 1)));
    std::vector<int> all(n_layers);
    for (int i = 0; i < n_layers; i++) all[i] = i;
    for (int i = 0; i < gamma; i++) std::swap(all[i], all[i + rng_below(&r, n_layers - i)]);  // partial shuffle
    std::vector<int> pick(all.begin(), all.begin() + gamma);
    std::sort(pick.begin(), pick.end());
    return pick;
}

namespace {

// A trainable span of parameters and its optimizer state (grad, m, v): one contiguous block.
struct group {
    std::string        name;            // "embed", "norm", "head", "layer.3", "lora"
    float*             param = nullptr; // first parameter of the span
    size_t             n = 0;
    std::vector<float> state;           // [grad | m | v], allocated once ([m | v] when sparse)
    int64_t            step = 0;        // AdamW steps of this state (bias correction)
    bool               sparse = false;  // untied embedding: gradient kept per touched row elsewhere
    struct span {
        size_t off, len;
        bool   decay;
    };
    std::vector<span> spans;            // per tensor: weight decay or not
    float* grad() { return sparse ? nullptr : state.data(); }
    float* m() { return state.data() + (sparse ? 0 : n); }
    float* v() { return m() + n; }
};

// Weight decay applies to matrices, not to norms and biases (as Hugging Face's Trainer).
bool decays(const llama_tensor_info& t) { return t.is_matrix && t.name.find("norm") == std::string::npos; }

struct trainer {
    const train_options&         o;
    const train_callbacks&       cb;
    std::unique_ptr<llama_model> m;
    std::unique_ptr<tokenizer>   tok;
    dataset                      data, eval_data;
    bool                         has_eval = false;
    dtype                        out_dtype = dtype::f32;
    llama_grads                  gr;
    std::vector<group>           fixed;        // embed / norm / head / all layers (full) / lora
    std::vector<group>           slots;        // LISA: γ layer blocks
    std::vector<int>             active;       // LISA: layers bound to the slots
    std::vector<size_t>          layer_first;  // index of each layer's first tensor
    std::vector<float>           lora_buf;     // LoRA A/B weights
    llama_embed_rows             embed_rows;   // sparse gradient of an untied embedding
    lora_adapter_config          lora_cfg;
    llama_acts                   acts, eval_acts;
    int64_t                      total_steps = 0, steps_per_epoch = 0, warmup = 0, step = 0;
    int32_t                      pad_id = 0;
    std::string                  last_checkpoint;
    std::FILE*                   log = nullptr;

    trainer(const train_options& opt, const train_callbacks& c) : o(opt), cb(c) {}
    ~trainer() {
        if (log) std::fclose(log);
    }

    void info(const std::string& s) {
        if (cb.on_info) cb.on_info(s);
    }
    void write_log(const json& j) {
        std::string line = j.dump();
        if (log) {
            std::fprintf(log, "%s\n", line.c_str());
            std::fflush(log);
        }
        if (cb.on_log) cb.on_log(line);
    }

    // ---------------------------------------------------------------- setup
    void validate() {
        if (o.method != "lisa" && o.method != "full" && o.method != "lora")
            fail(strf("--method \"%s\": expected lisa, full or lora", o.method.c_str()));
        if (!lr_kind_valid(o.lr_scheduler_type))
            fail(strf("--lr_scheduler_type \"%s\": expected linear, cosine, constant or constant_with_warmup",
                      o.lr_scheduler_type.c_str()));
        if (o.output_model_path.empty()) fail("--output_model_path is required");
        if (o.per_device_train_batch_size < 1) fail("--per_device_train_batch_size must be at least 1");
        if (o.gradient_accumulation_steps < 1) fail("--gradient_accumulation_steps must be at least 1");
        if (o.lisa_interval_steps < 1) fail("--lisa_interval_steps must be at least 1");
        if (!(o.adam.lr >= 0)) fail("--learning_rate must be >= 0");
        if (o.max_steps <= 0 && !(o.num_train_epochs > 0)) fail("--num_train_epochs must be > 0 (or set --max_steps)");
        if (o.warmup_ratio < 0 || o.warmup_ratio > 1) fail("--warmup_ratio must be in [0, 1]");
        if (o.method == "lora" && o.lora_r < 1) fail("--lora_r must be at least 1");
        if (o.method == "lora" && (o.lora_dropout < 0 || o.lora_dropout >= 1)) fail("--lora_dropout must be in [0, 1)");
    }

    std::string resolve_checkpoint() {
        if (o.resume_from_checkpoint.empty()) return "";
        if (o.resume_from_checkpoint != "latest") {
            if (!fs_is_file(fs_join(o.resume_from_checkpoint, "trainer_state.json")))
                fail(strf("--resume_from_checkpoint %s: not a checkpoint folder (no trainer_state.json)",
                          o.resume_from_checkpoint.c_str()));
            return o.resume_from_checkpoint;
        }
        int64_t best = -1;
        std::string path;
        std::error_code ec;
        for (const auto& e : fsys::directory_iterator(o.output_model_path, ec)) {
            std::string n = e.path().filename().string();
            if (n.rfind("checkpoint-", 0) != 0 || !fs_is_file(fs_join(e.path().string(), "trainer_state.json"))) continue;
            char* end;
            long long s = std::strtoll(n.c_str() + 11, &end, 10);
            if (*end == '\0' && s > best) best = s, path = e.path().string();
        }
        if (best < 0)
            fail(strf("--resume_from_checkpoint latest: no checkpoint-N folder in %s", o.output_model_path.c_str()));
        return path;
    }

    void load(const std::string& ckpt) {
        m = llama_model_load(o.model_name_or_path);
        out_dtype = o.torch_dtype.empty() ? m->stored_dtype : parse_dtype_option(o.torch_dtype);
        if (!ckpt.empty()) {  // weights as of the checkpoint (fp32), config and tokenizer from the base
            auto c = llama_model_load(ckpt, m->half ? 1 : 0);  // the base's mode, masters exact
            if (c->params.size() != m->params.size())
                fail(strf("%s: checkpoint does not match --model_name_or_path %s", ckpt.c_str(),
                          o.model_name_or_path.c_str()));
            m->params = std::move(c->params);
            m->params16 = std::move(c->params16);
            m->materialized = c->materialized;
            m->half = c->half;
            llama_model_rebind(m.get());
        }
        if (o.train_data) {  // pre-tokenized samples (benchmarks)
            data = *o.train_data;
            pad_id = 0;
            set_steps();
            return;
        }
        tok = tokenizer_load(o.model_name_or_path);
        dataset_options dopt;
        int64_t max_pos = m->cfg.max_position_embeddings;
        dopt.block_size = o.block_size > 0 ? o.block_size : std::min<int64_t>(1024, max_pos);
        if (dopt.block_size > max_pos)
            fail(strf("--block_size %lld exceeds the model's max_position_embeddings %lld", (long long)dopt.block_size,
                      (long long)max_pos));
        dopt.conversation_template = o.conversation_template;
        dopt.train_on_prompt = o.train_on_prompt;
        dopt.eos_id = tokenizer_eos_id(*tok) >= 0 ? tokenizer_eos_id(*tok)
                      : m->cfg.eos_token_ids.empty() ? -1 : (int32_t)m->cfg.eos_token_ids[0];
        pad_id = tokenizer_pad_id(*tok) >= 0 ? tokenizer_pad_id(*tok) : std::max(0, dopt.eos_id);
        data = dataset_load(o.dataset_path, *tok, dopt);
        if (o.group_texts) dataset_group_texts(&data, dopt.block_size);
        if (data.n_dropped > 0)
            info(strf("data: dropped %lld of %lld samples with no label token left after truncation to %lld tokens",
                      (long long)data.n_dropped, (long long)data.n_instances, (long long)dopt.block_size));
        if (!o.eval_dataset_path.empty()) {
            eval_data = dataset_load(o.eval_dataset_path, *tok, dopt);
            if (o.group_texts) dataset_group_texts(&eval_data, dopt.block_size);
            has_eval = true;
        }
        set_steps();
    }

    void set_steps() {
        int64_t n_batches = ((int64_t)data.samples.size() + o.per_device_train_batch_size - 1) /
                            o.per_device_train_batch_size;
        steps_per_epoch = std::max<int64_t>(1, n_batches / o.gradient_accumulation_steps);
        total_steps = o.max_steps > 0 ? o.max_steps : (int64_t)std::ceil(o.num_train_epochs * steps_per_epoch);
        warmup = o.warmup_steps > 0 ? o.warmup_steps : (int64_t)std::ceil(o.warmup_ratio * total_steps);
    }

    group make_group(const std::string& name, size_t first_tensor, size_t last_tensor, bool sparse = false) {
        llama_materialize(m.get(), first_tensor, last_tensor);  // bf16 models: fp32 masters of what trains
        group g;
        g.sparse = sparse;
        g.name = name;
        const auto& t0 = m->tensors[first_tensor];
        g.param = m->params.data() + t0.offset;
        for (size_t i = first_tensor; i <= last_tensor; i++) {
            const auto& t = m->tensors[i];
            g.spans.push_back({t.offset - t0.offset, t.numel, decays(t)});
            g.n += t.numel;
        }
        g.state.assign((sparse ? 2 : 3) * g.n, 0.0f);
        return g;
    }

    // binds a group's gradient block to its tensors' gradient pointers
    void bind(group& g, size_t first_tensor, size_t last_tensor) {
        const size_t base = m->tensors[first_tensor].offset;
        for (size_t i = first_tensor; i <= last_tensor; i++)
            *llama_weight_slot(&gr.g, *m, i) = g.grad() + (m->tensors[i].offset - base);
        if (m->cfg.tie_word_embeddings) gr.g.lm_head = gr.g.embed;
    }

    size_t tensor_index(const std::string& name) {
        for (size_t i = 0; i < m->tensors.size(); i++)
            if (m->tensors[i].name == name) return i;
        fail("tensor_index: " + name);
    }

    void setup_groups() {
        const int L = (int)m->cfg.num_layers;
        gr.g = llama_weights{};
        gr.g.layers.assign(L, llama_layer_weights{});
        gr.lora.assign(L, llama_lora_layer{});
        layer_first.assign(L + 1, 0);
        for (size_t i = 0; i < m->tensors.size(); i++)
            if (m->tensors[i].layer >= 0 && (i == 0 || m->tensors[i - 1].layer != m->tensors[i].layer))
                layer_first[m->tensors[i].layer] = i;
        layer_first[L] = tensor_index("model.norm.weight");
        const size_t emb = tensor_index("model.embed_tokens.weight"), norm = layer_first[L];
        if (o.method == "lora") {
            setup_lora();
            return;
        }
        bool train_emb = o.method == "full" || o.lisa_train_embeddings;
        bool train_head = o.method == "full" || o.lisa_train_head;
        if (m->cfg.tie_word_embeddings && train_head && !train_emb)
            info("the LM head is tied to the embedding: it follows --lisa_train_embeddings 0 and stays frozen");
        if (train_emb && !m->cfg.tie_word_embeddings) {
            // an untied embedding gets gradient rows only for the tokens of the step
            fixed.push_back(make_group("embed", emb, emb, true));
            embed_rows.row_of.assign(m->cfg.vocab_size, -1);
            gr.embed_rows = &embed_rows;
        } else if (train_emb) {
            fixed.push_back(make_group("embed", emb, emb));
            bind(fixed.back(), emb, emb);
        }
        fixed.push_back(make_group("norm", norm, norm));  // the final norm: D values, always trained
        bind(fixed.back(), norm, norm);
        if (!m->cfg.tie_word_embeddings && train_head) {
            size_t head = tensor_index("lm_head.weight");
            fixed.push_back(make_group("head", head, head));
            bind(fixed.back(), head, head);
        }
        if (o.method == "full") {
            for (int l = 0; l < L; l++) {
                fixed.push_back(make_group(strf("layer.%d", l), layer_first[l], layer_first[l + 1] - 1));
                bind(fixed.back(), layer_first[l], layer_first[l + 1] - 1);
            }
            return;
        }
        int gamma = (int)o.lisa_activated_layers;
        if (gamma < 1 || gamma > L)
            fail(strf("--lisa_activated_layers %d: expected 1..%d (the model has %d decoder layers)", gamma, L, L));
        for (int k = 0; k < gamma; k++) slots.push_back(make_group("slot", layer_first[0], layer_first[1] - 1));
    }

    void setup_lora() {
        const int L = (int)m->cfg.num_layers;
        lora_cfg.r = o.lora_r;
        lora_cfg.alpha = o.lora_alpha;
        lora_cfg.dropout = o.lora_dropout;
        lora_cfg.target_modules = o.lora_target_modules;
        std::vector<int> targets;
        for (const auto& name : o.lora_target_modules) {
            int t = -1;
            for (int k = 0; k < LORA_N; k++)
                if (name == lora_target_name(k)) t = k;
            if (t < 0)
                fail(strf("--lora_target_modules: unknown module \"%s\" (expected q_proj, k_proj, v_proj, o_proj, "
                          "gate_proj, up_proj, down_proj)", name.c_str()));
            targets.push_back(t);
        }
        m->lora.r = o.lora_r;
        m->lora.scale = (float)lora_cfg.scale();
        m->lora.dropout = (float)o.lora_dropout;
        m->lora.layers.assign(L, llama_lora_layer{});
        // sizes, then one buffer for all A and B
        struct item {
            int     l, t;
            int64_t out, in;
        };
        std::vector<item> items;
        size_t total = 0;
        for (int l = 0; l < L; l++)
            for (int t : targets) {
                int64_t out, in;
                lora_module_weight(*m, strf("model.layers.%d.%s.%s", l, t <= LORA_O ? "self_attn" : "mlp",
                                            lora_target_name(t)), &out, &in);
                items.push_back({l, t, out, in});
                total += (size_t)o.lora_r * (in + out);
            }
        lora_buf.assign(total, 0.0f);
        group g;
        g.name = "lora";
        g.param = lora_buf.data();
        g.n = total;
        g.state.assign(3 * total, 0.0f);
        rng r;
        rng_init(&r, o.seed ^ 0x10a4ull);
        size_t off = 0;
        for (const auto& it : items) {
            float* A = lora_buf.data() + off;
            float* B = A + o.lora_r * it.in;
            // as PEFT: A ~ kaiming_uniform(a=√5) = U(-1/√in, 1/√in), B = 0 (the adapter starts as a no-op)
            double bound = 1.0 / std::sqrt((double)it.in);
            for (int64_t k = 0; k < o.lora_r * it.in; k++) A[k] = (float)((2 * rng_uniform(&r) - 1) * bound);
            m->lora.layers[it.l].A[it.t] = A;
            m->lora.layers[it.l].B[it.t] = B;
            gr.lora[it.l].A[it.t] = g.grad() + off;
            gr.lora[it.l].B[it.t] = g.grad() + off + o.lora_r * it.in;
            g.spans.push_back({off, (size_t)(o.lora_r * (it.in + it.out)), true});
            off += o.lora_r * (it.in + it.out);
        }
        fixed.push_back(std::move(g));
    }

    // LISA: bind the slots to the layers of interval k, with fresh (zero) state
    void lisa_activate(int64_t interval) {
        if (o.method != "lisa") return;
        const int L = (int)m->cfg.num_layers;
        std::vector<int> next = lisa_draw_layers(o.seed, interval, L, (int)o.lisa_activated_layers);
        for (int l : active) {
            gr.g.layers[l] = llama_layer_weights{};
            // leaving: bf16 models write the master back to bf16 and free its fp32 pages
            if (std::find(next.begin(), next.end(), l) == next.end())
                llama_dematerialize(m.get(), layer_first[l], layer_first[l + 1] - 1);
        }
        active = next;
        for (size_t k = 0; k < slots.size(); k++) {
            group& g = slots[k];
            int l = active[k];
            g.name = strf("layer.%d", l);
            llama_materialize(m.get(), layer_first[l], layer_first[l + 1] - 1);
            g.param = m->params.data() + m->tensors[layer_first[l]].offset;
            std::fill(g.state.begin(), g.state.end(), 0.0f);
            g.step = 0;
            bind(g, layer_first[l], layer_first[l + 1] - 1);
        }
        std::string ls;
        for (int l : active) ls += (ls.empty() ? "" : ", ") + std::to_string(l);
        info(strf("lisa: step %lld: active layers [%s], optimizer state %.2f MiB", (long long)step, ls.c_str(),
                  optimizer_state_bytes() / 1048576.0));
    }

    size_t optimizer_state_bytes() {
        size_t b = 0;
        for (auto& g : fixed) b += 2 * g.n * sizeof(float);
        for (auto& g : slots) b += 2 * g.n * sizeof(float);
        return b;
    }

    std::vector<group*> groups() {
        std::vector<group*> v;
        for (auto& g : fixed) v.push_back(&g);
        for (auto& g : slots) v.push_back(&g);
        return v;
    }

    // ---------------------------------------------------------------- checkpoints
    void save_checkpoint() {
        const std::string final_dir = fs_join(o.output_model_path, strf("checkpoint-%lld", (long long)step));
        const std::string tmp = final_dir + ".tmp";
        std::error_code ec;
        fsys::remove_all(tmp, ec);
        llama_save_options so;  // fp32 masters: resuming continues from the exact weights
        so.out_dtype = dtype::f32;
        so.native_dtypes = m->half;  // bf16 models: frozen tensors stay bf16 (exact), masters fp32
        so.max_shard_bytes = parse_size_option(o.max_shard_size);
        so.tokenizer_from = o.model_name_or_path;
        llama_model_save(*m, tmp, so);
        std::vector<st_write_entry> es;
        json steps = json::object();
        for (group* g : groups()) {
            es.push_back({g->name + ".m", {(int64_t)g->n}, dtype::f32, g->m(), dtype::f32});
            es.push_back({g->name + ".v", {(int64_t)g->n}, dtype::f32, g->v(), dtype::f32});
            steps[g->name] = g->step;
        }
        if (o.method == "lora") es.push_back({"lora.weights", {(int64_t)lora_buf.size()}, dtype::f32, lora_buf.data(), dtype::f32});
        st_write(fs_join(tmp, "optimizer.safetensors"), es);
        json st = {{"global_step", step}, {"total_steps", total_steps}, {"method", o.method}, {"seed", o.seed},
                   {"active_layers", active}, {"group_steps", steps}};
        fs_write_atomic(fs_join(tmp, "trainer_state.json"), st.dump(2) + "\n");
        fsys::remove_all(final_dir, ec);
        fsys::rename(tmp, final_dir, ec);
        if (ec) fail(strf("%s: cannot move the checkpoint into place (%s)", final_dir.c_str(), ec.message().c_str()));
        last_checkpoint = final_dir;
        info(strf("saved %s", final_dir.c_str()));
    }

    void load_checkpoint_state(const std::string& ckpt) {
        json st;
        try {
            st = json::parse(fs_read_text(fs_join(ckpt, "trainer_state.json")));
        } catch (const json::exception& e) {
            fail(strf("%s/trainer_state.json: not valid JSON (%s)", ckpt.c_str(), e.what()));
        }
        if (st.value("method", std::string()) != o.method)
            fail(strf("%s: checkpoint was written by --method %s, not %s", ckpt.c_str(),
                      st.value("method", std::string("?")).c_str(), o.method.c_str()));
        step = st.value("global_step", (int64_t)0);
        // A checkpoint at an interval boundary was written before that step's switch: the next
        // draw starts with fresh state, and the leaving layers' masters go back to bf16 exactly
        // as the switch would have done.
        const bool boundary = o.method == "lisa" && step % o.lisa_interval_steps == 0;
        if (o.method == "lisa") {
            lisa_activate(step / o.lisa_interval_steps);
            for (int l = 0; l < (int)m->cfg.num_layers; l++)
                if (std::find(active.begin(), active.end(), l) == active.end())
                    llama_dematerialize(m.get(), layer_first[l], layer_first[l + 1] - 1);
            if (!boundary && st.value("active_layers", std::vector<int>{}) != active)
                fail(strf("%s: checkpoint's active layers differ from the draw for step %lld (was --seed or "
                          "--lisa_interval_steps changed?)", ckpt.c_str(), (long long)step));
        }
        auto f = st_open(fs_join(ckpt, "optimizer.safetensors"));
        auto read = [&](const std::string& name, float* dst, size_t n) {
            const st_tensor* t = st_find(*f, name);
            if (!t || t->dt != dtype::f32 || t->numel != n)
                fail(strf("%s/optimizer.safetensors: tensor '%s' missing or of the wrong size (expected %zu)",
                          ckpt.c_str(), name.c_str(), n));
            std::memcpy(dst, t->data, n * sizeof(float));
        };
        for (auto& g : fixed) {
            read(g.name + ".m", g.m(), g.n);
            read(g.name + ".v", g.v(), g.n);
            g.step = st["group_steps"].value(g.name, (int64_t)0);
        }
        if (!boundary)
            for (auto& g : slots) {
                read(g.name + ".m", g.m(), g.n);
                read(g.name + ".v", g.v(), g.n);
                g.step = st["group_steps"].value(g.name, (int64_t)0);
            }
        if (o.method == "lora") read("lora.weights", lora_buf.data(), lora_buf.size());
        last_checkpoint = ckpt;
        info(strf("resumed from %s at step %lld", ckpt.c_str(), (long long)step));
    }

    // ---------------------------------------------------------------- the loop
    double eval_loss() {
        double sum = 0;
        int64_t n = 0;
        auto order = epoch_order(eval_data.samples.size(), 0, 0, false);
        for (size_t i = 0; i < order.size(); i += o.per_device_eval_batch_size) {
            std::vector<size_t> idx(order.begin() + i,
                                    order.begin() + std::min(order.size(), i + (size_t)o.per_device_eval_batch_size));
            batch b = make_batch(eval_data, idx, pad_id);
            llama_acts_init(&eval_acts, *m, b.B, b.T);
            int64_t k = 0;
            sum += llama_forward_backward(*m, &eval_acts, nullptr, b.ids.data(), b.labels.data(), 0.0f, &k);
            n += k;
        }
        return sum / (double)n;
    }

    // Every option as used (defaults resolved), written to training_args.json at the start.
    json args_json() const {
        return {{"method", o.method},
                {"model_name_or_path", o.model_name_or_path},
                {"dataset_path", o.dataset_path},
                {"eval_dataset_path", o.eval_dataset_path},
                {"output_model_path", o.output_model_path},
                {"lisa_activated_layers", o.lisa_activated_layers},
                {"lisa_interval_steps", o.lisa_interval_steps},
                {"lisa_train_embeddings", o.lisa_train_embeddings},
                {"lisa_train_head", o.lisa_train_head},
                {"lora_r", o.lora_r},
                {"lora_alpha", o.lora_alpha},
                {"lora_dropout", o.lora_dropout},
                {"lora_target_modules", o.lora_target_modules},
                {"save_aggregated_lora", o.save_aggregated_lora},
                {"block_size", o.block_size > 0 ? o.block_size : std::min<int64_t>(1024, m->cfg.max_position_embeddings)},
                {"conversation_template", o.conversation_template},
                {"train_on_prompt", o.train_on_prompt},
                {"group_texts", o.group_texts},
                {"gradient_checkpointing", o.gradient_checkpointing},
                {"learning_rate", o.adam.lr},
                {"adam_beta1", o.adam.beta1},
                {"adam_beta2", o.adam.beta2},
                {"adam_epsilon", o.adam.eps},
                {"weight_decay", o.adam.weight_decay},
                {"max_grad_norm", o.max_grad_norm},
                {"lr_scheduler_type", o.lr_scheduler_type},
                {"warmup_steps", warmup},
                {"warmup_ratio", o.warmup_ratio},
                {"num_train_epochs", o.num_train_epochs},
                {"max_steps", total_steps},
                {"per_device_train_batch_size", o.per_device_train_batch_size},
                {"per_device_eval_batch_size", o.per_device_eval_batch_size},
                {"gradient_accumulation_steps", o.gradient_accumulation_steps},
                {"seed", o.seed},
                {"logging_steps", o.logging_steps},
                {"save_steps", o.save_steps},
                {"eval_steps", o.eval_steps},
                {"resume_from_checkpoint", o.resume_from_checkpoint},
                {"torch_dtype", dtype_torch_name(out_dtype)},
                {"max_shard_size", o.max_shard_size},
                {"run_name", o.run_name}};
    }

    train_result run() {
        validate();
        fs_mkdirs(o.output_model_path);
        std::string ckpt = resolve_checkpoint();
        load(ckpt);
        setup_groups();
        if (!ckpt.empty()) load_checkpoint_state(ckpt);
        fs_write_atomic(fs_join(o.output_model_path, "training_args.json"), args_json().dump(2) + "\n");
        log = std::fopen(fs_join(o.output_model_path, "trainer_log.jsonl").c_str(), ckpt.empty() ? "w" : "a");
        if (!log) fail(strf("%s/trainer_log.jsonl: cannot open for writing", o.output_model_path.c_str()));
        info(strf("train: %s, %zu samples, %lld steps (%lld per epoch), batch %lld x %lld accumulation",
                  o.method.c_str(), data.samples.size(), (long long)total_steps, (long long)steps_per_epoch,
                  (long long)o.per_device_train_batch_size, (long long)o.gradient_accumulation_steps));

        train_result res;
        const auto t_start = std::chrono::steady_clock::now();
        auto t_log = t_start;
        int64_t tokens_since_log = 0, tokens_total = 0, steps_this_run = 0, steps_since_log = 0;
        double loss_since_log = 0, loss_logged_sum = 0;
        int64_t logged = 0;
        int64_t cur_epoch = -1;
        std::vector<size_t> order;
        adamw_hparams h = o.adam;
        while (step < total_steps) {
            if (o.method == "lisa" && (step % o.lisa_interval_steps == 0 || active.empty()))
                lisa_activate(step / o.lisa_interval_steps);
            const int64_t epoch = step / steps_per_epoch, in_epoch = step % steps_per_epoch;
            if (epoch != cur_epoch) {
                order = epoch_order(data.samples.size(), o.seed, epoch, o.shuffle);
                cur_epoch = epoch;
            }
            // the micro-batches of this step, and the label tokens of all of them (the loss is the
            // mean over the whole accumulated batch)
            std::vector<batch> mbs;
            int64_t label_tokens = 0;
            for (int64_t a = 0; a < o.gradient_accumulation_steps; a++) {
                size_t b0 = (size_t)((in_epoch * o.gradient_accumulation_steps + a) * o.per_device_train_batch_size);
                if (b0 >= order.size()) break;
                size_t b1 = std::min(order.size(), b0 + (size_t)o.per_device_train_batch_size);
                mbs.push_back(make_batch(data, std::vector<size_t>(order.begin() + b0, order.begin() + b1), pad_id));
                label_tokens += mbs.back().label_tokens;
            }
            for (group* g : groups())
                if (g->sparse) embed_rows.clear();
                else std::fill(g->grad(), g->grad() + g->n, 0.0f);
            double loss_sum = 0;
            for (size_t k = 0; k < mbs.size(); k++) {
                batch& b = mbs[k];
                m->lora.dropout_seed = o.seed * 0x2545f4914f6cdd1dull + (uint64_t)(step * 1000 + (int64_t)k);
                llama_acts_init(&acts, *m, b.B, b.T, o.gradient_checkpointing);
                loss_sum += llama_forward_backward(*m, &acts, &gr, b.ids.data(), b.labels.data(),
                                                   1.0f / (float)std::max<int64_t>(1, label_tokens), nullptr);
                for (int64_t i = 0; i < b.B * b.T; i++) tokens_since_log += b.labels[i] != -100 || b.ids[i] != pad_id;
            }
            const double loss = loss_sum / (double)std::max<int64_t>(1, label_tokens);
            auto diverged = [&](const char* what) {
                fail(strf("step %lld: %s; stopping without saving a model. %s", (long long)step, what,
                          last_checkpoint.empty() ? "No checkpoint was written (see --save_steps)."
                                                  : ("The last checkpoint is " + last_checkpoint).c_str()));
            };
            if (!std::isfinite(loss)) diverged(std::isnan(loss) ? "the loss is NaN" : "the loss is infinite");
            // global gradient norm over trainable tensors, clipping
            double ss = 0;
            for (group* g : groups())
                ss += g->sparse ? sum_of_squares(embed_rows.grad.data(), embed_rows.rows.size() * m->cfg.hidden_size)
                                : sum_of_squares(g->grad(), g->n);
            const double norm = std::sqrt(ss);
            if (!std::isfinite(norm)) diverged("the gradient norm is not finite");
            // clipping coefficient, applied inside the AdamW pass
            const float clip = o.max_grad_norm > 0 && norm > o.max_grad_norm ? (float)(o.max_grad_norm / (norm + 1e-6)) : 1.0f;
            h.lr = lr_at(o.lr_scheduler_type, o.adam.lr, step, warmup, total_steps);
            for (group* g : groups()) {
                g->step++;
                if (g->sparse) {
                    adamw_update_rows(g->param, embed_rows.grad.data(), embed_rows.row_of.data(), g->m(), g->v(),
                                      m->cfg.vocab_size, m->cfg.hidden_size, h, g->step, true, clip);
                    continue;
                }
                for (const auto& sp : g->spans)
                    adamw_update(g->param + sp.off, g->grad() + sp.off, g->m() + sp.off, g->v() + sp.off, sp.len, h,
                                 g->step, sp.decay, clip);
            }
            step++;
            steps_this_run++;
            steps_since_log++;
            loss_since_log += loss;
            auto now = std::chrono::steady_clock::now();
            double elapsed = std::chrono::duration<double>(now - t_start).count();
            if (cb.on_progress) {
                double per_step = elapsed / (double)steps_this_run;
                cb.on_progress(step, total_steps, loss, (tokens_total + tokens_since_log) / std::max(1e-9, elapsed),
                               per_step * (double)(total_steps - step));
            }
            if (step % std::max<int64_t>(1, o.logging_steps) == 0 || step == total_steps) {
                double dt = std::chrono::duration<double>(now - t_log).count();
                json j = {{"step", step},
                          {"epoch", (double)step / (double)steps_per_epoch},
                          {"loss", loss_since_log / (double)steps_since_log},
                          {"learning_rate", h.lr},
                          {"grad_norm", norm},
                          {"tokens_per_second", tokens_since_log / std::max(1e-9, dt)},
                          {"rss_mib", current_rss_mib()},
                          {"optimizer_state_bytes", optimizer_state_bytes()}};
                if (o.method == "lisa") j["active_layers"] = active;
                write_log(j);
                loss_logged_sum += loss_since_log / (double)steps_since_log;
                logged++;
                tokens_total += tokens_since_log;
                tokens_since_log = 0;
                loss_since_log = 0;
                steps_since_log = 0;
                t_log = now;
            }
            if (has_eval && o.eval_steps > 0 && (step % o.eval_steps == 0 || step == total_steps))
                write_log({{"step", step}, {"eval_loss", eval_loss()}});
            bool stop = g_stop.load();
            if ((o.save_steps > 0 && step % o.save_steps == 0 && step < total_steps) || (stop && step < total_steps))
                save_checkpoint();
            if (stop && step < total_steps) {
                res.interrupted = true;
                break;
            }
        }
        tokens_total += tokens_since_log;
        double runtime = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        res.global_step = step;
        res.train_loss = logged ? loss_logged_sum / (double)logged : 0.0;
        res.train_runtime = runtime;
        res.tokens_per_second = tokens_total / std::max(1e-9, runtime);
        res.steps_per_second = steps_this_run / std::max(1e-9, runtime);
        res.peak_rss_mib = peak_rss_mib();
        if (res.interrupted || !o.save_model) return res;
        save_final(res);
        return res;
    }

    void save_final(const train_result& res) {
        if (o.method == "lora") {
            // PEFT adapter: adapter_model.safetensors (+ config last), and the merged model if asked
            std::vector<st_write_entry> es;
            for (int l = 0; l < (int)m->cfg.num_layers; l++)
                for (int t = 0; t < LORA_N; t++) {
                    if (!m->lora.layers[l].A[t]) continue;
                    std::string mod = strf("base_model.model.model.layers.%d.%s.%s", l,
                                           t <= LORA_O ? "self_attn" : "mlp", lora_target_name(t));
                    int64_t out, in;
                    lora_module_weight(*m, mod.substr(17), &out, &in);
                    es.push_back({mod + ".lora_A.weight", {o.lora_r, in}, dtype::f32, m->lora.layers[l].A[t], dtype::f32});
                    es.push_back({mod + ".lora_B.weight", {out, o.lora_r}, dtype::f32, m->lora.layers[l].B[t], dtype::f32});
                }
            fs_remove(fs_join(o.output_model_path, "adapter_config.json"));
            st_write(fs_join(o.output_model_path, "adapter_model.safetensors"), es);
            if (o.save_aggregated_lora) {
                auto copy = std::make_unique<llama_model>(*m);  // the base, with the adapter folded in
                copy->lora = llama_lora{};
                llama_model_rebind(copy.get());
                fold_lora(copy.get());
                llama_save_options so;
                so.out_dtype = out_dtype;
                so.max_shard_bytes = parse_size_option(o.max_shard_size);
                so.tokenizer_from = o.model_name_or_path;
                llama_model_save(*copy, o.output_model_path, so);
            } else {
                for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"})
                    if (fs_is_file(fs_join(o.model_name_or_path, f)))
                        fs_copy_atomic(fs_join(o.model_name_or_path, f), fs_join(o.output_model_path, f));
            }
            fs_write_atomic(fs_join(o.output_model_path, "adapter_config.json"),
                            lora_config_to_json(lora_cfg, o.model_name_or_path));
        } else {
            llama_save_options so;
            so.out_dtype = out_dtype;
            so.max_shard_bytes = parse_size_option(o.max_shard_size);
            so.tokenizer_from = o.model_name_or_path;
            llama_model_save(*m, o.output_model_path, so);
        }
        json r = {{"train_runtime", res.train_runtime},       {"train_loss", res.train_loss},
                  {"train_tokens_per_second", res.tokens_per_second}, {"train_steps_per_second", res.steps_per_second},
                  {"peak_rss_mib", res.peak_rss_mib},         {"global_step", res.global_step}};
        fs_write_atomic(fs_join(o.output_model_path, "train_results.json"), r.dump(2) + "\n");
    }

    // W += scale · B·A for every adapter (into a plain model copy)
    void fold_lora(llama_model* dst) {
        const int64_t r = m->lora.r;
        for (int l = 0; l < (int)m->cfg.num_layers; l++)
            for (int t = 0; t < LORA_N; t++) {
                const float* A = m->lora.layers[l].A[t];
                if (!A) continue;
                const float* B = m->lora.layers[l].B[t];
                int64_t out, in;
                size_t ti = 0;
                float* w = lora_module_weight(*dst, strf("model.layers.%d.%s.%s", l, t <= LORA_O ? "self_attn" : "mlp",
                                                         lora_target_name(t)), &out, &in, &ti);
                llama_materialize(dst, ti, ti);
                for (int64_t i = 0; i < out; i++)
                    for (int64_t k = 0; k < r; k++) {
                        float b = m->lora.scale * B[i * r + k];
                        for (int64_t j = 0; j < in; j++) w[i * in + j] += b * A[k * in + j];
                    }
            }
    }
};

}  // namespace

train_result train_run(const train_options& opt, const train_callbacks& cb) {
    // a stop requested before the loop starts is honoured after the first step; the flag is
    // cleared when the run ends, so a library caller can train again
    struct clear_stop {
        ~clear_stop() { g_stop = false; }
    } clear;
    trainer t(opt, cb);
    return t.run();
}

}  // namespace lisa
