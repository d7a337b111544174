#include "train/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/fs.h"
#include "io/safetensors.h"
#include "model/model_files.h"

namespace lisa {

using json = nlohmann::json;
namespace fsys = std::filesystem;

// "name.tmp.<pid>" (fs_write_atomic's temporary) or "checkpoint-N.tmp" (checkpoint_save's)
static bool is_leftover(const std::string& n) {
    const size_t t = n.rfind(".tmp");
    if (t == std::string::npos) return false;
    if (t + 4 == n.size()) return n.rfind("checkpoint-", 0) == 0;
    if (n[t + 4] != '.' || t + 5 == n.size()) return false;
    for (size_t i = t + 5; i < n.size(); i++)
        if (n[i] < '0' || n[i] > '9') return false;
    return true;
}

std::vector<std::string> checkpoint_clean_leftovers(const std::string& output_dir) {
    std::vector<std::string> removed;
    std::error_code ec;
    std::vector<fsys::path> paths;
    for (const auto& e : fsys::directory_iterator(output_dir, ec)) paths.push_back(e.path());
    for (const auto& dir : paths) {  // also inside checkpoint folders: a kill during a save
        if (fsys::is_directory(dir, ec) && dir.filename().string().rfind("checkpoint-", 0) == 0 &&
            !is_leftover(dir.filename().string()))
            for (const auto& e : fsys::directory_iterator(dir, ec))
                if (is_leftover(e.path().filename().string())) paths.push_back(e.path());
    }
    for (const auto& p : paths) {
        if (!is_leftover(p.filename().string())) continue;
        fsys::remove_all(p, ec);
        if (!ec) removed.push_back(p.string());
    }
    return removed;
}

std::vector<std::string> checkpoint_prune(const std::string& output_dir, int64_t keep, const std::string& protect) {
    std::vector<std::pair<int64_t, std::string>> found;
    std::error_code ec;
    for (const auto& e : fsys::directory_iterator(output_dir, ec)) {
        const std::string n = e.path().filename().string();
        if (n.rfind("checkpoint-", 0) != 0 || !fs_is_file(fs_join(e.path().string(), "trainer_state.json"))) continue;
        char* end;
        const long long s = std::strtoll(n.c_str() + 11, &end, 10);
        if (*end == '\0' && end != n.c_str() + 11) found.emplace_back(s, e.path().string());
    }
    std::sort(found.begin(), found.end());
    std::vector<std::string> removed;
    for (size_t i = 0; i + (size_t)keep < found.size(); i++) {
        if (!protect.empty() && fsys::equivalent(found[i].second, protect, ec)) continue;
        fsys::remove_all(found[i].second, ec);
        if (!ec) removed.push_back(found[i].second);
    }
    return removed;
}

std::string checkpoint_damage(const std::string& ckpt) {
    try {
        const std::string state = fs_join(ckpt, "trainer_state.json");
        if (!fs_is_file(state)) return "trainer_state.json is missing";
        json st;
        try {
            st = json::parse(fs_read_text(state));
        } catch (const json::exception& e) {
            return "trainer_state.json is not valid JSON (" + json_error(e) + ")";
        }
        if (!st.is_object() || !st.contains("global_step") || !st["global_step"].is_number_integer())
            return "trainer_state.json has no integer field 'global_step'";
        if (!fs_is_file(fs_join(ckpt, "optimizer.safetensors"))) return "optimizer.safetensors is missing";
        st_open(fs_join(ckpt, "optimizer.safetensors"));  // header, sizes, every offset within the file
        model_files_open(ckpt);                            // config.json and every weight file, likewise
    } catch (const error& e) {
        return e.what();
    }
    return "";
}

std::string checkpoint_resolve(const std::string& request, const std::string& output_dir,
                               const std::function<void(const std::string&)>& note) {
    if (request.empty()) return "";
    if (request != "latest") {
        if (!fs_is_dir(request))
            fail(strf("--resume_from_checkpoint %s: no such checkpoint folder", request.c_str()));
        const std::string damage = checkpoint_damage(request);
        if (!damage.empty())
            fail(strf("--resume_from_checkpoint %s: the checkpoint is damaged: %s", request.c_str(), cap_message(damage).c_str()));
        return request;
    }
    std::vector<std::pair<long long, std::string>> found;
    std::error_code ec;
    for (const auto& e : fsys::directory_iterator(output_dir, ec)) {
        std::string n = e.path().filename().string();
        if (n.rfind("checkpoint-", 0) != 0 || n.size() == 11 || !e.is_directory(ec)) continue;
        char* end;
        long long s = std::strtoll(n.c_str() + 11, &end, 10);
        if (*end == '\0') found.emplace_back(s, e.path().string());
    }
    if (found.empty()) fail(strf("--resume_from_checkpoint latest: no checkpoint-N folder in %s", output_dir.c_str()));
    std::sort(found.rbegin(), found.rend());  // newest first
    std::vector<std::string> damaged;
    for (const auto& [step, path] : found) {
        const std::string damage = checkpoint_damage(path);
        if (damage.empty()) {
            if (!damaged.empty() && note)
                note(strf("--resume_from_checkpoint latest: %s; resuming from %s, the newest complete checkpoint",
                          cap_message(damaged[0]).c_str(), path.c_str()));
            return path;
        }
        damaged.push_back(strf("%s is damaged (%s)", path.c_str(), damage.c_str()));
    }
    fail(strf("--resume_from_checkpoint latest: no complete checkpoint in %s: %s", output_dir.c_str(),
              cap_message(damaged[0]).c_str()));
}

std::string checkpoint_save(const std::string& output_dir, const decoder_model& m, train_policy& policy,
                            const checkpoint_info& info,
                            const std::vector<std::pair<std::vector<float>, std::vector<float>>>* moments) {
    const std::string final_dir = fs_join(output_dir, strf("checkpoint-%lld", (long long)info.step));
    const std::string tmp = final_dir + ".tmp";
    std::error_code ec;
    fsys::remove_all(tmp, ec);
    decoder_save_options so;  // fp32 masters: resuming continues from the exact weights
    so.out_dtype = dtype::f32;
    so.native_dtypes = m.half;  // bf16 models: frozen tensors stay bf16 (exact), masters fp32
    so.max_shard_bytes = parse_size_option(info.max_shard_size);
    so.tokenizer_from = info.tokenizer_from;
    decoder_model_save(m, tmp, so);
    std::vector<st_write_entry> es;
    std::vector<std::vector<float>> hold;  // downloaded moments and extra state, alive until written
    hold.reserve(2 * policy.groups().size() + policy.extra_state().size());
    auto host = [&](const backend& be, const float* dev, size_t n) {
        hold.push_back(device_read(be, dev, n));
        return hold.back().data();
    };
    json steps = json::object();
    for (size_t k = 0; k < policy.groups().size(); k++) {
        param_group* g = policy.groups()[k];
        const bool whole = g->sharded() && moments;
        LISA_ASSERT(!g->sharded() || moments, "checkpoint_save", "a sharded group needs its gathered moments");
        const backend& be = *g->state.be();
        es.push_back({g->name + ".m", {(int64_t)g->n}, dtype::f32, whole ? (*moments)[k].first.data() : host(be, g->m(), g->n), dtype::f32});
        es.push_back({g->name + ".v", {(int64_t)g->n}, dtype::f32, whole ? (*moments)[k].second.data() : host(be, g->v(), g->n), dtype::f32});
        steps[g->name] = g->step;
    }
    for (const state_span& x : policy.extra_state())
        es.push_back({x.name, {(int64_t)x.n}, dtype::f32, host(*x.be, x.data, x.n), dtype::f32});
    st_write(fs_join(tmp, "optimizer.safetensors"), es);
    json st = {{"global_step", info.step}, {"total_steps", info.total_steps},
               {"method", train_method_name(policy.method())}, {"seed", info.seed}, {"group_steps", steps}};
    st.update(policy.state_json());
    fs_write_atomic(fs_join(tmp, "trainer_state.json"), st.dump(2) + "\n");
    fsys::remove_all(final_dir, ec);
    fsys::rename(tmp, final_dir, ec);
    if (ec) fail(strf("%s: cannot move the checkpoint into place (%s)", final_dir.c_str(), ec.message().c_str()));
    return final_dir;
}

json checkpoint_read_state(const std::string& ckpt, train_method method) {
    json st;
    try {
        st = json::parse(fs_read_text(fs_join(ckpt, "trainer_state.json")));
    } catch (const json::exception& e) {
        fail(strf("%s/trainer_state.json: not valid JSON (%s)", ckpt.c_str(), json_error(e).c_str()));
    }
    if (!st.is_object() || st.value("method", std::string()) != train_method_name(method))
        fail(strf("%s: checkpoint was written by --method %s, not %s", ckpt.c_str(),
                  st.is_object() ? st.value("method", std::string("?")).c_str() : "?", train_method_name(method)));
    if (!st.contains("global_step") || !st["global_step"].is_number_integer() || st["global_step"].get<int64_t>() < 0)
        fail(strf("%s/trainer_state.json: field 'global_step': expected a non-negative integer", ckpt.c_str()));
    return st;
}

void checkpoint_load_optimizer(const std::string& ckpt, const json& st, const std::vector<param_group*>& groups,
                               const std::vector<state_span>& extra) {
    auto f = st_open(fs_join(ckpt, "optimizer.safetensors"));
    // elements [lo, hi) of a tensor of n (the whole tensor unless the group is sharded)
    auto read = [&](const backend& be, const std::string& name, float* dst, size_t n, size_t lo, size_t hi) {
        const st_tensor* t = st_find(*f, name);
        if (!t || t->dt != dtype::f32 || t->numel != n)
            fail(strf("%s/optimizer.safetensors: tensor '%s' missing or of the wrong size (expected %zu)",
                      ckpt.c_str(), name.c_str(), n));
        device_write(be, dst, (const float*)t->data + lo, hi - lo);
    };
    const json steps = st.value("group_steps", json::object());
    for (param_group* g : groups) {
        read(*g->state.be(), g->name + ".m", g->m(), g->n, g->lo, g->hi);
        read(*g->state.be(), g->name + ".v", g->v(), g->n, g->lo, g->hi);
        g->step = steps.value(g->name, (int64_t)0);
    }
    for (const state_span& x : extra) read(*x.be, x.name, x.data, x.n, 0, x.n);
}

}  // namespace lisa
