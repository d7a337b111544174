#include "data/dataset.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "io/fs.h"

namespace lisa {

using json = nlohmann::json;

const char* dataset_type_name(dataset_type t) {
    switch (t) {
        case dataset_type::text_only: return "text_only";
        case dataset_type::text2text: return "text2text";
        case dataset_type::conversation: return "conversation";
    }
    return "?";
}

int64_t sample_label_tokens(const sample& s) {
    int64_t n = 0;
    for (size_t i = 1; i < s.labels.size(); i++) n += s.labels[i] != -100;
    return n;
}

static std::string json_kind(const json& v) {
    std::string k = v.type_name();
    if (v.is_number() || v.is_boolean()) k += " " + v.dump();
    return k;
}

// The string field `key` of instance `where`, or an error naming file, instance and field.
static const std::string& string_field(const json& obj, const char* key, const std::string& file,
                                       const std::string& where) {
    if (!obj.is_object()) fail(strf("%s: %s: expected an object, got %s", file.c_str(), where.c_str(), json_kind(obj).c_str()));
    auto it = obj.find(key);
    if (it == obj.end()) fail(strf("%s: %s: field '%s' is missing", file.c_str(), where.c_str(), key));
    if (!it->is_string())
        fail(strf("%s: %s: field '%s': expected a string, got %s", file.c_str(), where.c_str(), key,
                  json_kind(*it).c_str()));
    return it->get_ref<const std::string&>();
}

static void append(std::vector<int32_t>* v, const std::vector<int32_t>& w) { v->insert(v->end(), w.begin(), w.end()); }

dataset dataset_load(const std::string& dir, const tokenizer& tok, const dataset_options& opt) {
    if (!fs_is_dir(dir)) fail(strf("%s: --dataset_path must be a folder of LMFlow *.json files", dir.c_str()));
    if (opt.block_size < 2) fail(strf("--block_size %lld: must be at least 2", (long long)opt.block_size));
    dataset d;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        std::string p = e.path().string();
        if (e.is_regular_file() && p.size() > 5 && p.compare(p.size() - 5, 5, ".json") == 0) d.files.push_back(p);
    }
    std::sort(d.files.begin(), d.files.end());
    if (d.files.empty()) fail(strf("%s: no *.json files in the dataset folder", dir.c_str()));
    for (size_t fi = 0; fi < d.files.size(); fi++) {
        const std::string& file = d.files[fi];
        json j;
        try {
            j = json::parse(fs_read_text(file));
        } catch (const json::exception& e) {
            fail(strf("%s: not valid JSON (%s)", file.c_str(), json_error(e).c_str()));
        }
        if (!j.is_object())
            fail(strf("%s: expected a JSON object {\"type\": ..., \"instances\": [...]}, got %s", file.c_str(),
                      json_kind(j).c_str()));
        if (!j.contains("type") || !j["type"].is_string())
            fail(strf("%s: field 'type': expected \"text_only\", \"text2text\" or \"conversation\", got %s", file.c_str(),
                      j.contains("type") ? json_kind(j["type"]).c_str() : "nothing"));
        std::string ts = j["type"].get<std::string>();
        dataset_type type;
        if (ts == "text_only") type = dataset_type::text_only;
        else if (ts == "text2text") type = dataset_type::text2text;
        else if (ts == "conversation") type = dataset_type::conversation;
        else
            fail(strf("%s: field 'type': expected \"text_only\", \"text2text\" or \"conversation\", got \"%s\"",
                      file.c_str(), ts.c_str()));
        if (fi == 0) d.type = type;
        else if (type != d.type)
            fail(strf("%s: type \"%s\" differs from \"%s\" in %s (all files of a dataset must have one type)",
                      file.c_str(), ts.c_str(), dataset_type_name(d.type), d.files[0].c_str()));
        if (!j.contains("instances") || !j["instances"].is_array())
            fail(strf("%s: field 'instances': expected a list, got %s", file.c_str(),
                      j.contains("instances") ? json_kind(j["instances"]).c_str() : "nothing"));
        if (type != dataset_type::conversation && opt.eos_id < 0)
            fail(strf("%s: the tokenizer has no EOS token (set eos_token in tokenizer_config.json)", file.c_str()));
        if (type == dataset_type::conversation && opt.conversation_template.empty())
            fail(strf("%s: conversation data needs --conversation_template (one of llama3, chatml, llama2, mistral, "
                      "empty)", file.c_str()));
        const json& inst = j["instances"];
        for (size_t i = 0; i < inst.size(); i++) {
            std::string where = strf("instances[%zu]", i);
            sample s;
            if (type == dataset_type::text_only) {
                s.ids = tokenizer_encode(tok, string_field(inst[i], "text", file, where), true);
                s.ids.push_back(opt.eos_id);
                s.labels = s.ids;
            } else if (type == dataset_type::text2text) {
                const std::string& in = string_field(inst[i], "input", file, where);
                const std::string& out = string_field(inst[i], "output", file, where);
                s.ids = tokenizer_encode(tok, in, true);
                s.labels.assign(s.ids.size(), -100);
                std::vector<int32_t> c = tokenizer_encode(tok, out, false);
                c.push_back(opt.eos_id);
                append(&s.ids, c);
                append(&s.labels, c);
            } else {
                const json& o = inst[i];
                if (!o.is_object()) fail(strf("%s: %s: expected an object, got %s", file.c_str(), where.c_str(), json_kind(o).c_str()));
                std::vector<chat_message> msgs;
                if (o.contains("system") && !o["system"].is_null()) msgs.push_back({"system", string_field(o, "system", file, where)});
                if (!o.contains("messages") || !o["messages"].is_array())
                    fail(strf("%s: %s: field 'messages': expected a list of {\"role\", \"content\"}", file.c_str(), where.c_str()));
                for (size_t k = 0; k < o["messages"].size(); k++) {
                    std::string w = strf("%s.messages[%zu]", where.c_str(), k);
                    const std::string& role = string_field(o["messages"][k], "role", file, w);
                    if (role != "user" && role != "assistant")
                        fail(strf("%s: %s: field 'role': expected \"user\" or \"assistant\", got \"%s\"", file.c_str(),
                                  w.c_str(), role.c_str()));
                    msgs.push_back({role, string_field(o["messages"][k], "content", file, w)});
                }
                for (const chat_segment& seg : chat_template_render(opt.conversation_template, msgs, false)) {
                    // each segment is encoded on its own, as LMFlow's conversation templates do
                    std::vector<int32_t> ids = tokenizer_encode(tok, seg.text, false);
                    if (seg.append_eos && opt.eos_id >= 0) ids.push_back(opt.eos_id);
                    bool train = seg.trainable || opt.train_on_prompt;
                    append(&s.ids, ids);
                    for (int32_t id : ids) s.labels.push_back(train ? id : -100);
                }
            }
            d.n_instances++;
            if ((int64_t)s.ids.size() > opt.block_size) {
                s.ids.resize(opt.block_size);
                s.labels.resize(opt.block_size);
                d.n_truncated++;
            }
            if (sample_label_tokens(s) == 0) {  // nothing to learn from (e.g. completion cut away)
                d.n_dropped++;
                continue;
            }
            d.samples.push_back(std::move(s));
        }
    }
    if (d.samples.empty())
        fail(strf("%s: no usable sample (%lld instances; %lld without a label token after truncation to "
                  "--block_size %lld)", dir.c_str(), (long long)d.n_instances, (long long)d.n_dropped,
                  (long long)opt.block_size));
    return d;
}

void epoch_order_into(std::vector<size_t>* order, size_t n, uint64_t seed, int64_t epoch, bool shuffle) {
    std::vector<size_t>& v = *order;
    v.resize(n);
    for (size_t i = 0; i < n; i++) v[i] = i;
    if (!shuffle) return;
    rng r;
    rng_init(&r, seed * 0x9e3779b97f4a7c15ull + (uint64_t)epoch + 1);
    for (size_t i = n; i > 1; i--) std::swap(v[i - 1], v[rng_below(&r, i)]);  // Fisher-Yates
}

std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, bool shuffle) {
    std::vector<size_t> v;
    epoch_order_into(&v, n, seed, epoch, shuffle);
    return v;
}

void make_batch_into(batch* b, const dataset& d, const size_t* indices, size_t count, int32_t pad_id) {
    b->B = (int64_t)count;
    b->T = 0;
    b->label_tokens = 0;
    for (size_t k = 0; k < count; k++) b->T = std::max<int64_t>(b->T, (int64_t)d.samples[indices[k]].ids.size());
    b->ids.assign(b->B * b->T, pad_id < 0 ? 0 : pad_id);
    b->labels.assign(b->B * b->T, -100);
    for (int64_t r = 0; r < b->B; r++) {
        const sample& s = d.samples[indices[r]];
        std::copy(s.ids.begin(), s.ids.end(), b->ids.begin() + r * b->T);
        std::copy(s.labels.begin(), s.labels.end(), b->labels.begin() + r * b->T);
        b->label_tokens += sample_label_tokens(s);
    }
}

batch make_batch(const dataset& d, const std::vector<size_t>& indices, int32_t pad_id) {
    batch b;
    make_batch_into(&b, d, indices.data(), indices.size(), pad_id);
    return b;
}

void dataset_group_texts(dataset* d, int64_t block_size) {
    std::vector<int32_t> ids, labels;
    for (const sample& s : d->samples) {
        append(&ids, s.ids);
        append(&labels, s.labels);
    }
    std::vector<sample> blocks;
    for (size_t off = 0; off + block_size <= ids.size(); off += block_size) {
        sample s;
        s.ids.assign(ids.begin() + off, ids.begin() + off + block_size);
        s.labels.assign(labels.begin() + off, labels.begin() + off + block_size);
        if (sample_label_tokens(s) > 0) blocks.push_back(std::move(s));
    }
    if (blocks.empty())
        fail(strf("--group_texts: the dataset has %zu tokens, fewer than one block of --block_size %lld", ids.size(),
                  (long long)block_size));
    d->samples = std::move(blocks);
}

}  // namespace lisa
