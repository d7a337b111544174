// Hugging Face model folder I/O: config.json + safetensors (single or sharded) in, same out.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/fs.h"
#include "io/ggml_quants.h"
#include "io/output_dir.h"
#include "io/safetensors.h"
#include "model/decoder.h"
#include "model/model_files.h"

namespace lisa {

using json = nlohmann::json;

// Tensors some checkpoints carry that hold no parameters (old Llama conversions saved RoPE buffers).
static bool is_ignorable(const std::string& name) {
    return name.find("rotary_emb.inv_freq") != std::string::npos;
}

std::unique_ptr<model_files> model_files_open(const std::string& dir) {
    if (model_path_is_gguf(dir)) {
        auto mf = std::make_unique<model_files>();
        mf->dir = dir;
        mf->gguf = gguf_model_open(dir);
        mf->cfg = mf->gguf->cfg;
        return mf;
    }
    if (!fs_is_dir(dir)) {
        if (fs_is_file(dir))
            fail(strf("%s: expected a Hugging Face model folder (config.json + *.safetensors) or a GGUF file, got another "
                      "file", dir.c_str()));
        fail(strf("%s: no such local folder. Models are read from disk, not from a hub: download it first, e.g. "
                  "`huggingface-cli download %s --local-dir models/NAME`, then pass that folder",
                  dir.c_str(), dir.c_str()));
    }
    auto mf = std::make_unique<model_files>();
    mf->dir = dir;
    std::string cfg_path = fs_join(dir, "config.json");
    if (!fs_is_file(cfg_path) && fs_is_file(fs_join(dir, "adapter_config.json")))
        fail(strf("%s is a LoRA adapter (adapter_config.json), not a model: pass its base model as "
                  "--model_name_or_path and this folder as --lora_model_path", dir.c_str()));
    if (!fs_is_file(cfg_path)) fail(strf("%s: missing; expected a Hugging Face model folder", cfg_path.c_str()));
    mf->cfg = config_load(cfg_path);

    // which files hold the weights
    std::vector<std::string> files;
    std::string index_path = fs_join(dir, "model.safetensors.index.json");
    if (fs_is_file(index_path)) {
        mf->index_path = index_path;
        json idx;
        try {
            idx = json::parse(fs_read_text(index_path));
        } catch (const json::exception& e) {
            fail(strf("%s: not valid JSON (%s)", index_path.c_str(), json_error(e).c_str()));
        }
        if (!idx.is_object() || !idx.contains("weight_map") || !idx["weight_map"].is_object())
            fail(strf("%s: field 'weight_map': expected an object mapping tensor names to files", index_path.c_str()));
        std::set<std::string> seen;
        for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
            if (!it.value().is_string())
                fail(strf("%s: field 'weight_map.%s': expected a file name", index_path.c_str(), it.key().c_str()));
            std::string f = it.value().get<std::string>();
            if (f.find('/') != std::string::npos || f.empty() || f[0] == '.')
                fail(strf("%s: field 'weight_map.%s': file name \"%s\" must be a plain name in the folder",
                          index_path.c_str(), it.key().c_str(), f.c_str()));
            mf->weight_map[it.key()] = f;
            if (seen.insert(f).second) files.push_back(f);
        }
    } else if (fs_is_file(fs_join(dir, "model.safetensors"))) {
        files.push_back("model.safetensors");
    } else if (fs_is_file(fs_join(dir, "pytorch_model.bin")) ||
               fs_is_file(fs_join(dir, "pytorch_model.bin.index.json"))) {
        fail(strf("%s: has only PyTorch .bin weights; convert them to safetensors first (e.g. load and "
                  "save_pretrained(..., safe_serialization=True) in transformers)", dir.c_str()));
    } else {
        fail(strf("%s: no model.safetensors or model.safetensors.index.json found", dir.c_str()));
    }
    mf->file_names = files;
    for (const auto& f : files) {
        mf->files.push_back(st_open(fs_join(dir, f)));
        const st_file* sf = mf->files.back().get();
        for (const auto& t : sf->tensors) {
            if (mf->where.count(t.name))
                fail(strf("%s: tensor '%s' is also in %s", sf->path.c_str(), t.name.c_str(),
                          mf->where[t.name].first->path.c_str()));
            mf->where[t.name] = {sf, &t};
        }
    }
    // One tensor stored under two names: transformers saves a tied embedding once and records
    // the dropped name in the file's metadata ({"model.embed_tokens.weight": "lm_head.weight"});
    // some savers keep only lm_head.weight with no note. Either way the stored tensor answers
    // for both names, as transformers loads it.
    for (const auto& f : mf->files)
        for (const auto& [alias, target] : f->metadata)
            if (!mf->where.count(alias) && mf->where.count(target) && alias.find('.') != std::string::npos)
                mf->where[alias] = mf->where[target];
    if (mf->cfg.tie_word_embeddings && !mf->where.count("model.embed_tokens.weight") && mf->where.count("lm_head.weight"))
        mf->where["model.embed_tokens.weight"] = mf->where["lm_head.weight"];
    return mf;
}

const st_tensor& model_files_tensor(const model_files& mf, const decoder_tensor_info& info) {
    auto it = mf.where.find(info.name);
    auto mapped = mf.weight_map.find(info.name);
    if (it == mf.where.end()) {
        std::string in = mapped != mf.weight_map.end() ? mapped->second
                         : (mf.file_names.size() == 1 ? mf.file_names[0] : "any shard");
        fail(strf("%s: tensor '%s' is missing (expected shape %s from config.json)", fs_join(mf.dir, in).c_str(),
                  info.name.c_str(), shape_str(info.shape).c_str()));
    }
    const st_tensor& t = *it->second.second;
    const std::string& path = it->second.first->path;
    if (mapped != mf.weight_map.end() && fs_join(mf.dir, mapped->second) != path)
        fail(strf("%s: tensor '%s' is in %s, not where the index says", mf.index_path.c_str(), info.name.c_str(),
                  path.c_str()));
    if (t.dt != dtype::f32 && t.dt != dtype::bf16 && t.dt != dtype::f16)
        fail(strf("%s: tensor '%s': dtype %s, expected F32, BF16 or F16", path.c_str(), info.name.c_str(),
                  dtype_name(t.dt)));
    if (t.shape != info.shape)
        fail(strf("%s: tensor '%s': shape %s, expected %s from config.json", path.c_str(), info.name.c_str(),
                  shape_str(t.shape).c_str(), shape_str(info.shape).c_str()));
    return t;
}

void model_files_check_unexpected(const model_files& mf, const std::vector<decoder_tensor_info>& table) {
    std::set<std::string> expected;
    for (const auto& info : table) expected.insert(info.name);
    for (const auto& [name, loc] : mf.where) {
        if (expected.count(name) || is_ignorable(name)) continue;
        if (name == "lm_head.weight" && mf.cfg.tie_word_embeddings) continue;  // a copy of the embedding
        fail(strf("%s: unexpected tensor '%s' for a %s with this config.json (wrong config, or an "
                  "unsupported variant)", loc.first->path.c_str(), name.c_str(), mf.cfg.architecture.c_str()));
    }
}

// A GGUF model: each tensor dequantized (and its llama.cpp conventions undone) into fp32, kept in
// bf16 when the file's matrices are bf16 or quantized (auto), as a bf16 safetensors model is.
static std::unique_ptr<decoder_model> decoder_model_load_gguf(const gguf_model& g, const std::string& path, int half_mode,
                                                              const backend* be_in) {
    const bool half = half_mode == 1 || (half_mode < 0 && g.half);
    std::unique_ptr<decoder_model> m = decoder_model_init(g.cfg, half, be_in);
    m->source_dir = path;
    const backend& be = *m->ctx.be;
    // the block-type matrices stay as the file holds them, the embedding and head included
    const bool keep_blocks = half && !g.cfg.fused_qkv && !g.cfg.fused_gate_up;
    m->q_offset.assign(m->tensors.size(), 0);
    m->q_type.assign(m->tensors.size(), 0);
    size_t q_bytes = 0;
    for (size_t ti = 0; keep_blocks && ti < m->tensors.size(); ti++) {
        const auto& info = m->tensors[ti];
        const ggml_type t = gguf_model_type(g, info);
        if (!info.is_matrix || ggml_block_size(t) == 1) continue;
        m->q_type[ti] = (uint32_t)t;
        m->q_offset[ti] = q_bytes;
        q_bytes += (ggml_nbytes(t, (int64_t)info.numel) + 63) / 64 * 64;
    }
    if (q_bytes) m->paramsq = device_array<uint8_t>(be, q_bytes);
    std::vector<float> f32;
    std::vector<uint16_t> b16;
    std::vector<uint8_t> raw;
    for (size_t ti = 0; ti < m->tensors.size(); ti++) {
        const auto& info = m->tensors[ti];
        if (m->q_type[ti] != 0) {
            raw.resize(ggml_nbytes((ggml_type)m->q_type[ti], (int64_t)info.numel));
            gguf_model_read_raw(g, info, raw.data());
            m->paramsq.write(m->q_offset[ti], raw.data(), raw.size());
            continue;
        }
        f32.resize(info.numel);
        gguf_model_read(g, info, f32.data());
        if (half && info.is_matrix) {  // only the bf16 copy: no fp32 pages until a layer trains
            b16.resize(info.numel);
            convert_from_f32(b16.data(), f32.data(), dtype::bf16, info.numel);
            m->params16.write(info.offset, b16.data(), info.numel);
        } else {
            m->params.write(info.offset, f32.data(), info.numel);
        }
    }
    (void)be;
    decoder_model_rebind(m.get());
    m->stored_dtype = half ? dtype::bf16 : dtype::f32;
    return m;
}

std::unique_ptr<decoder_model> decoder_model_load(const std::string& dir, int half_mode, const backend* be_in) {
    std::unique_ptr<model_files> mf = model_files_open(dir);
    if (mf->gguf) return decoder_model_load_gguf(*mf->gguf, dir, half_mode, be_in);
    // auto: half mode when some matrix is bf16 and none is f16 (a checkpoint mixes fp32 masters
    // with bf16 frozen matrices; both are kept exactly)
    bool any_bf16 = false, any_f16 = false;
    for (const auto& [name, loc] : mf->where) {
        const st_tensor& t = *loc.second;
        if (t.shape.size() != 2) continue;
        any_bf16 |= t.dt == dtype::bf16;
        any_f16 |= t.dt == dtype::f16;
    }
    const bool half = half_mode == 1 || (half_mode < 0 && any_bf16 && !any_f16);
    std::unique_ptr<decoder_model> m = decoder_model_init(mf->cfg, half, be_in);
    m->source_dir = dir;
    // copy every parameter into the fp32 buffer (or the bf16 one), checking dtype and shape
    std::map<dtype, size_t> dtype_bytes;
    const backend& be = *m->ctx.be;
    std::vector<float> f32;  // staging, where the device is not the host's memory
    std::vector<uint16_t> b16;
    // fp32 values of t into the parameters at `off` (converted in place when the device's memory
    // is the host's)
    auto put_f32 = [&](size_t off, const st_tensor& t) {
        if (float* h = (float*)be.mem_host(m->params.data() + off)) return convert_to_f32(h, t.data, t.dt, t.numel);
        f32.resize(t.numel);
        convert_to_f32(f32.data(), t.data, t.dt, t.numel);
        m->params.write(off, f32.data(), t.numel);
    };
    for (size_t ti = 0; ti < m->tensors.size(); ti++) {
        const auto& info = m->tensors[ti];
        const st_tensor& t = model_files_tensor(*mf, info);
        if (half && info.is_matrix) {
            if (t.dt == dtype::bf16) {
                m->params16.write(info.offset, (const uint16_t*)t.data, t.numel);
            } else {  // an fp32 master (a checkpoint's trained tensor): keep it exactly
                put_f32(info.offset, t);
                be.f32_to_bf16(m->params16.data() + info.offset, m->params.data() + info.offset, (int64_t)t.numel);
                m->materialized[ti] = true;
            }
        } else {
            put_f32(info.offset, t);
        }
        dtype_bytes[t.dt] += t.nbytes;
        st_release(t);
    }
    decoder_model_rebind(m.get());
    model_files_check_unexpected(*mf, m->tensors);
    // the stored dtype is the one holding most bytes (norms are sometimes kept in F32)
    m->stored_dtype = std::max_element(dtype_bytes.begin(), dtype_bytes.end(),
                                       [](auto& a, auto& b) { return a.second < b.second; })->first;
    return m;
}

void decoder_model_take_weights(decoder_model* m, decoder_model* c) {
    std::vector<uint32_t> keep = m->q_type;
    keep.resize(m->tensors.size(), 0);
    for (size_t i = 0; i < keep.size(); i++) {
        if (!keep[i]) continue;
        if (c->materialized[i]) {  // trained now: its master comes from the checkpoint
            keep[i] = 0;
            continue;
        }
        // the checkpoint holds this matrix in bf16: still the base's values exactly, or trained?
        const std::vector<float> base = decoder_tensor_values(*m, i);
        std::vector<uint16_t> want(base.size());
        convert_from_f32(want.data(), base.data(), dtype::bf16, base.size());
        if (c->params16.read(c->tensors[i].offset, c->tensors[i].numel) != want) keep[i] = 0;
    }
    m->params = std::move(c->params);
    m->params16 = std::move(c->params16);
    m->materialized = c->materialized;
    m->half = c->half;
    for (size_t i = 0; i < keep.size(); i++) {
        const auto& t = m->tensors[i];
        if (keep[i]) m->params16.release(t.offset, t.numel);  // computed from its blocks, as before
        else if (i < m->q_type.size() && m->q_type[i])
            m->paramsq.release(m->q_offset[i], ggml_nbytes((ggml_type)m->q_type[i], (int64_t)t.numel));
    }
    m->q_type = keep;
    decoder_model_rebind(m);
}

dtype parse_dtype_option(const std::string& s) {
    dtype d;
    if (!dtype_from_torch_name(s, &d)) fail(strf("dtype \"%s\": expected float32, bfloat16 or float16", s.c_str()));
    return d;
}

size_t parse_size_option(const std::string& s) {
    size_t i = 0, digits = 0, dots = 0;
    while (i < s.size() && (isdigit((unsigned char)s[i]) || s[i] == '.')) digits += s[i] != '.', dots += s[i] == '.', i++;
    if (digits == 0 || dots > 1)
        fail(strf("size \"%s\": expected a number with an optional unit (KB, MB, GB)", cap_message(s, 60).c_str()));
    double v = std::strtod(s.substr(0, i).c_str(), nullptr);
    std::string u = s.substr(i);
    for (auto& ch : u) ch = (char)toupper((unsigned char)ch);
    double mul = 1;
    if (u == "" || u == "B") mul = 1;
    else if (u == "KB") mul = 1e3;
    else if (u == "MB") mul = 1e6;
    else if (u == "GB") mul = 1e9;
    else if (u == "KIB") mul = 1024.0;
    else if (u == "MIB") mul = 1024.0 * 1024;
    else if (u == "GIB") mul = 1024.0 * 1024 * 1024;
    else fail(strf("size \"%s\": unknown unit \"%s\" (expected B, KB, MB, GB, KiB, MiB or GiB)", s.c_str(), u.c_str()));
    if (v * mul < 1) fail(strf("size \"%s\": must be at least one byte", s.c_str()));
    if (v * mul > 1e18) fail(strf("size \"%s\": too large", s.c_str()));
    return (size_t)(v * mul);
}

// The tokenizer of a saved model is the source's, whole: its files are copied and any other
// tokenizer file already in the folder (from a model saved there before) is removed, so an old
// special_tokens_map.json never sits beside a new tokenizer.json.
void decoder_copy_tokenizer_files(const std::string& from, const std::string& dir) {
    if (from.empty()) return;
    if (model_path_is_gguf(from)) {  // the tokenizer rebuilt from its metadata, and no other
        for (const std::string& f : tokenizer_file_names()) fs_remove(fs_join(dir, f));
        gguf_model_write_text_files(from, dir);
        return;
    }
    std::error_code ec;
    if (std::filesystem::equivalent(from, dir, ec)) return;
    for (const std::string& f : tokenizer_file_names()) {
        std::string s = fs_join(from, f), d = fs_join(dir, f);
        if (fs_is_file(s)) fs_copy_atomic(s, d);
        else fs_remove(d);
    }
}

void decoder_model_save(const decoder_model& m, const std::string& dir, const decoder_save_options& opt) {
    fs_mkdirs(dir);
    const std::string cfg_path = fs_join(dir, "config.json");
    // keep the fields of the source config we do not model (read before removing: dir may be the source)
    const std::string src = m.source_dir;
    std::string original;
    if (!src.empty()) model_text_file(src, "config.json", &original);
    fs_remove(cfg_path);  // the folder must not look complete until everything is written

    // shard greedily in table order, as save_pretrained does; each entry points at the host's view
    // of the tensor (the parameters themselves when the device's memory is the host's, else a
    // download made when its shard is written)
    std::vector<std::vector<st_write_entry>> shards(1);
    std::vector<std::vector<size_t>> shard_tensors(1);
    size_t cur = 0, total = 0;
    const backend& be = *m.ctx.be;
    for (size_t ti = 0; ti < m.tensors.size(); ti++) {
        const auto& t = m.tensors[ti];
        const bool in_bf16 = m.half && !m.materialized[ti];
        st_write_entry e{t.name, t.shape, opt.out_dtype, nullptr, dtype::f32};
        if (in_bf16) e.src_dt = dtype::bf16;
        if (opt.native_dtypes) e.dt = e.src_dt;
        size_t nb = st_entry_bytes(e);
        if (cur > 0 && cur + nb > opt.max_shard_bytes) {
            shards.emplace_back();
            shard_tensors.emplace_back();
            cur = 0;
        }
        shards.back().push_back(e);
        shard_tensors.back().push_back(ti);
        cur += nb;
        total += nb;
    }
    // the host's view of one shard's tensors (kept in `hold` while the shard is written)
    std::vector<std::vector<char>> hold;
    auto host_view = [&](size_t s) {
        hold.clear();
        for (size_t k = 0; k < shards[s].size(); k++) {
            const size_t ti = shard_tensors[s][k];
            const auto& t = m.tensors[ti];
            st_write_entry& e = shards[s][k];
            const bool b16 = e.src_dt == dtype::bf16;
            if (b16 && decoder_tensor_quantized(m, ti)) {  // a quantized base's blocks, written as bf16 values
                const std::vector<float> v = decoder_tensor_values(m, ti);
                hold.emplace_back(t.numel * 2);
                convert_from_f32(hold.back().data(), v.data(), dtype::bf16, t.numel);
                e.data = hold.back().data();
                continue;
            }
            void* dev = b16 ? (void*)(m.params16.data() + t.offset) : (void*)(m.params.data() + t.offset);
            const size_t bytes = t.numel * (b16 ? 2 : 4);
            if (void* h = be.mem_host(dev)) {
                e.data = h;
                continue;
            }
            hold.emplace_back(bytes);
            be.mem_download(hold.back().data(), dev, bytes);
            e.data = hold.back().data();
        }
        return shards[s];
    };
    std::set<std::string> written;
    const std::string index_path = fs_join(dir, "model.safetensors.index.json");
    if (shards.size() == 1) {
        st_write(fs_join(dir, "model.safetensors"), host_view(0));
        written.insert("model.safetensors");
        fs_remove(index_path);
    } else {
        json wm = json::object();
        for (size_t i = 0; i < shards.size(); i++) {
            std::string name = strf("model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
            st_write(fs_join(dir, name), host_view(i));
            written.insert(name);
            for (const auto& e : shards[i]) wm[e.name] = name;
        }
        json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", wm}};
        fs_write_atomic(index_path, idx.dump(2) + "\n");
    }
    // remove weight files of an earlier save that this one did not rewrite
    std::error_code ec;
    for (const auto& de : std::filesystem::directory_iterator(dir, ec)) {
        std::string n = de.path().filename().string();
        bool weights = n == "model.safetensors" ||
                       (n.rfind("model-", 0) == 0 && n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0);
        if (weights && !written.count(n)) fs_remove(de.path().string());
    }
    // generation_config.json: the source's, else one from the config's special tokens
    if (!src.empty() && fs_is_file(fs_join(src, "generation_config.json"))) {
        if (fs_join(src, "generation_config.json") != fs_join(dir, "generation_config.json"))
            fs_copy_atomic(fs_join(src, "generation_config.json"), fs_join(dir, "generation_config.json"));
    } else {
        json gc = {{"_from_model_config", true}};
        if (!m.cfg.bos_token_ids.empty()) gc["bos_token_id"] = m.cfg.bos_token_ids[0];
        if (m.cfg.eos_token_ids.size() == 1) gc["eos_token_id"] = m.cfg.eos_token_ids[0];
        else if (!m.cfg.eos_token_ids.empty()) gc["eos_token_id"] = m.cfg.eos_token_ids;
        fs_write_atomic(fs_join(dir, "generation_config.json"), gc.dump(2) + "\n");
    }
    decoder_copy_tokenizer_files(opt.tokenizer_from.empty() ? src : opt.tokenizer_from, dir);
    model_config c = m.cfg;
    c.torch_dtype = opt.out_dtype;
    fs_write_atomic(cfg_path, config_to_json(c, original));
}

}  // namespace lisa
