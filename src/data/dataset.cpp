#include "data/dataset.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "io/fs.h"

namespace lisa {

using json = nlohmann::ordered_json;

const char* dataset_type_name(dataset_type t) {
    switch (t) {
        case dataset_type::text_only: return "text_only";
        case dataset_type::text2text: return "text2text";
        case dataset_type::conversation: return "conversation";
        case dataset_type::preference: return "preference";
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

// The string field `key` of record `where`, or an error naming file, record and field.
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

static bool ends_with(const std::string& s, const char* suffix) {
    size_t n = strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

void dataset_choose_template(const std::string& name, const std::string& model_dir, const tokenizer& tok,
                             model_chat_template* storage, dataset_options* opt) {
    opt->model_template = nullptr;
    opt->conversation_template.clear();
    if (chat_template_is_named(name)) {  // its markers must be single tokens of this tokenizer, or the text means nothing to it
        for (const std::string& mk : chat_template_markers(name))
            if (tokenizer_token_to_id(tok, mk) < 0)
                fail(strf("--conversation_template %s: the tokenizer of %s has no %s token (the template is for another "
                          "model family; auto uses the model's own template)", name.c_str(), model_dir.c_str(), mk.c_str()));
        opt->conversation_template = name;
        return;
    }
    if (chat_template_is_builtin_jinja(name)) {  // LMFlow's Jinja presets: rendered whole, tokenized as HF does
        for (const std::string& mk : chat_template_markers(name))
            if (tokenizer_token_to_id(tok, mk) < 0)
                fail(strf("--conversation_template %s: the tokenizer of %s has no %s token (the template is for another "
                          "model family; auto uses the model's own template)", name.c_str(), model_dir.c_str(), mk.c_str()));
        const int32_t bos = tokenizer_bos_id(tok);
        if ((name == "gemma3" || name.rfind("deepseek", 0) == 0) && bos < 0)
            fail(strf("--conversation_template %s: the template writes the tokenizer's BOS token, and the tokenizer of %s "
                      "has none", name.c_str(), model_dir.c_str()));
        chat_template_builtin(name, bos >= 0 ? tokenizer_token_text(tok, bos) : "", storage);
        opt->model_template = storage;
        return;
    }
    if (ends_with(name, ".jinja")) {
        if (!fs_is_file(name)) fail(strf("--conversation_template %s: no such file", name.c_str()));
        *storage = model_chat_template_from_file(name, model_dir);
    } else if (name.empty() || name == "auto") {
        if (!model_chat_template_load(model_dir, storage)) {
            if (name == "auto")
                fail(strf("--conversation_template auto: %s has no chat template (no chat_template in "
                          "tokenizer_config.json, no chat_template.jinja); name a template (lisa train --help lists "
                          "them) or a .jinja file", model_dir.c_str()));
            return;
        }
    } else {
        std::string names;
        for (auto& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
        fail(strf("--conversation_template \"%s\": unknown template (available: auto, %s, or a .jinja file)",
                  name.c_str(), names.c_str()));
    }
    model_chat_template_probe(storage, tok);
    opt->model_template = storage;
}

namespace {

// One record, read into the LMFlow type it maps to.
struct record {
    dataset_type type;
    std::string  text, input, output;  // text_only / text2text
    json         messages, tools;      // conversation: [{"role", "content", ...}], tools or null
};

// Checks a conversation's turns: objects with a known role and a string (or, for templates
// that take them, list) content; the named templates take system (first), user and assistant.
void check_messages(const json& msgs, bool named_template, const std::string& file, const std::string& where) {
    if (!msgs.is_array() || msgs.empty())
        fail(strf("%s: %s: field 'messages': expected a non-empty list of {\"role\", \"content\"}", file.c_str(), where.c_str()));
    for (size_t k = 0; k < msgs.size(); k++) {
        std::string w = strf("%s.messages[%zu]", where.c_str(), k);
        const std::string& role = string_field(msgs[k], "role", file, w);
        bool ok = role == "user" || role == "assistant" || (role == "system" && (!named_template || k == 0)) ||
                  (role == "tool" && !named_template);
        if (!ok)
            fail(strf("%s: %s: field 'role': expected %s, got \"%s\"", file.c_str(), w.c_str(),
                      named_template ? "\"user\" or \"assistant\" (or \"system\" first)"
                                     : "\"system\", \"user\", \"assistant\" or \"tool\"",
                      role.c_str()));
        if (named_template) {  // after an optional system turn: user, assistant, user, ...
            size_t first = msgs[0].value("role", "") == "system" ? 1 : 0;
            if (k >= first && role != "system") {
                const char* want = (k - first) % 2 == 0 ? "user" : "assistant";
                if (role != want)
                    fail(strf("%s: %s: field 'role': \"%s\" where a %s turn is due (the named templates need user and "
                              "assistant turns to alternate, starting with the user)", file.c_str(), w.c_str(),
                              role.c_str(), want));
            }
        }
        auto c = msgs[k].find("content");
        bool tool_call = role == "assistant" && msgs[k].contains("tool_calls") && !named_template;
        if (c == msgs[k].end() && !tool_call) fail(strf("%s: %s: field 'content' is missing", file.c_str(), w.c_str()));
        if (c != msgs[k].end() && !c->is_string() && !(named_template ? false : (c->is_array() || (c->is_null() && tool_call))))
            fail(strf("%s: %s: field 'content': expected a string, got %s", file.c_str(), w.c_str(), json_kind(*c).c_str()));
    }
}

record read_record(const json& o, const std::string& lmflow_type, bool named_template, const std::string& file,
                   const std::string& where) {
    if (!o.is_object()) fail(strf("%s: %s: expected an object, got %s", file.c_str(), where.c_str(), json_kind(o).c_str()));
    record r;
    r.tools = nullptr;
    std::string shape = lmflow_type;
    if (shape.empty()) {  // recognise the record by its fields
        if (o.contains("messages")) shape = "conversation";
        else if (o.contains("conversations")) shape = "sharegpt";
        else if (o.contains("instruction")) shape = "alpaca";
        else if (o.contains("text")) shape = "text_only";
        else if (o.contains("input") || o.contains("output")) shape = "text2text";
        else
            fail(strf("%s: %s: unknown record: expected fields \"messages\" (chat), \"conversations\" (ShareGPT), "
                      "\"instruction\" (Alpaca), \"text\", \"input\"/\"output\" or \"chosen\"/\"rejected\" (preference)",
                      file.c_str(), where.c_str()));
    }
    if (shape == "text_only") {
        r.type = dataset_type::text_only;
        r.text = string_field(o, "text", file, where);
    } else if (shape == "text2text") {
        r.type = dataset_type::text2text;
        r.input = string_field(o, "input", file, where);
        r.output = string_field(o, "output", file, where);
    } else if (shape == "conversation") {
        r.type = dataset_type::conversation;
        r.messages = json::array();
        if (o.contains("system") && !o["system"].is_null())
            r.messages.push_back({{"role", "system"}, {"content", string_field(o, "system", file, where)}});
        if (!o.contains("messages") || !o["messages"].is_array())
            fail(strf("%s: %s: field 'messages': expected a list of {\"role\", \"content\"}", file.c_str(), where.c_str()));
        for (const auto& m : o["messages"]) r.messages.push_back(m);
        check_messages(r.messages, named_template, file, where);
        if (r.messages.size() > 0 && r.messages[0].value("role", "") == "system" && o.contains("system") &&
            !o["system"].is_null() && o["messages"].size() > 0 && o["messages"][0].value("role", "") == "system")
            fail(strf("%s: %s: a system prompt both in field 'system' and as messages[0]", file.c_str(), where.c_str()));
        if (o.contains("tools") && !o["tools"].is_null()) {
            if (!o["tools"].is_array()) fail(strf("%s: %s: field 'tools': expected a list", file.c_str(), where.c_str()));
            r.tools = o["tools"];  // (a named template shows them or ignores them with a note, as LMFlow)
        }
    } else if (shape == "sharegpt") {
        r.type = dataset_type::conversation;
        r.messages = json::array();
        const json& turns = o["conversations"];
        if (!turns.is_array()) fail(strf("%s: %s: field 'conversations': expected a list of {\"from\", \"value\"}", file.c_str(), where.c_str()));
        if (o.contains("system") && !o["system"].is_null())
            r.messages.push_back({{"role", "system"}, {"content", string_field(o, "system", file, where)}});
        for (size_t k = 0; k < turns.size(); k++) {
            std::string w = strf("%s.conversations[%zu]", where.c_str(), k);
            const std::string& from = string_field(turns[k], "from", file, w);
            std::string role = from == "human" || from == "user" ? "user"
                             : from == "gpt" || from == "assistant" || from == "model" ? "assistant"
                             : from == "system" ? "system" : "";
            if (role.empty())
                fail(strf("%s: %s: field 'from': expected \"human\", \"gpt\" or \"system\", got \"%s\"", file.c_str(),
                          w.c_str(), from.c_str()));
            r.messages.push_back({{"role", role}, {"content", string_field(turns[k], "value", file, w)}});
        }
        check_messages(r.messages, named_template, file, where);
    } else if (shape == "alpaca") {
        r.type = dataset_type::conversation;
        std::string user = string_field(o, "instruction", file, where);
        if (o.contains("input") && !o["input"].is_null()) {
            const std::string& in = string_field(o, "input", file, where);
            if (!in.empty()) user += "\n\n" + in;
        }
        r.messages = json::array();
        if (o.contains("system") && !o["system"].is_null())
            r.messages.push_back({{"role", "system"}, {"content", string_field(o, "system", file, where)}});
        r.messages.push_back({{"role", "user"}, {"content", user}});
        r.messages.push_back({{"role", "assistant"}, {"content", string_field(o, "output", file, where)}});
    } else {
        fail(strf("%s: field 'type': expected \"text_only\", \"text2text\" or \"conversation\", got \"%s\"", file.c_str(),
                  shape.c_str()));
    }
    return r;
}

// A preference record: a prompt and two replies, as plain text or as chat turns.
struct pref_record {
    bool        chat = false;
    std::string prompt, chosen, rejected;             // plain text
    json        prompt_msgs, chosen_msgs, rejected_msgs;  // chat: the shared turns, each reply's turns
    json        tools;
};

// A turn's role, or "" when the turn is not an object with a string role (check_messages says why).
static std::string role_of(const json& m) {
    if (!m.is_object()) return "";
    auto r = m.find("role");
    return r != m.end() && r->is_string() ? r->get<std::string>() : "";
}

// A reply or a prompt given as chat turns: a list of messages, or LMFlow's {"system"?, "messages"}.
static json turns_of(const json& v, const char* field, const std::string& file, const std::string& where) {
    if (v.is_array()) return v;
    if (v.is_object() && v.contains("messages") && v["messages"].is_array()) {
        json msgs = json::array();
        if (v.contains("system") && v["system"].is_string() && !v["system"].get<std::string>().empty())
            msgs.push_back({{"role", "system"}, {"content", v["system"]}});
        for (const auto& m : v["messages"]) msgs.push_back(m);
        return msgs;
    }
    fail(strf("%s: %s: field '%s': expected a string, a list of {\"role\", \"content\"} or {\"messages\": [...]}, "
              "got %s", file.c_str(), where.c_str(), field, json_kind(v).c_str()));
}

pref_record read_pref_record(const json& o, bool named_template, const std::string& file, const std::string& where) {
    if (!o.is_object()) fail(strf("%s: %s: expected an object, got %s", file.c_str(), where.c_str(), json_kind(o).c_str()));
    for (const char* k : {"chosen", "rejected"})
        if (!o.contains(k) || o[k].is_null())
            fail(strf("%s: %s: field '%s' is missing (a preference record has \"chosen\" and \"rejected\")",
                      file.c_str(), where.c_str(), k));
    pref_record r;
    const json& c = o["chosen"];
    const json& rj = o["rejected"];
    const json* prompt = o.contains("prompt") && !o["prompt"].is_null() ? &o["prompt"] : nullptr;
    if (c.is_string() != rj.is_string())
        fail(strf("%s: %s: fields 'chosen' and 'rejected': expected both strings or both chat turns", file.c_str(),
                  where.c_str()));
    if (c.is_string() && (!prompt || prompt->is_string())) {  // plain text
        if (!prompt) fail(strf("%s: %s: field 'prompt' is missing (text replies need the prompt they answer)",
                               file.c_str(), where.c_str()));
        r.prompt = prompt->get<std::string>();
        r.chosen = c.get<std::string>();
        r.rejected = rj.get<std::string>();
        for (const auto& [k, v] : {std::pair<const char*, const std::string*>{"chosen", &r.chosen}, {"rejected", &r.rejected}})
            if (v->empty()) fail(strf("%s: %s: field '%s': an empty reply", file.c_str(), where.c_str(), k));
        return r;
    }
    r.chat = true;
    json cm, rm;
    if (c.is_string()) {  // explicit chat prompt, each reply one assistant turn
        cm = json::array({{{"role", "assistant"}, {"content", c}}});
        rm = json::array({{{"role", "assistant"}, {"content", rj}}});
        r.prompt_msgs = turns_of(*prompt, "prompt", file, where);
    } else {
        cm = turns_of(c, "chosen", file, where);
        rm = turns_of(rj, "rejected", file, where);
        if (prompt && prompt->is_array()) {  // explicit
            r.prompt_msgs = *prompt;
        } else {  // implicit: the turns both conversations share
            size_t k = 0;
            while (k < cm.size() && k < rm.size() && cm[k] == rm[k]) k++;
            // the shared turns end before the last assistant turn of either
            while (k > 0 && (k >= cm.size() || k >= rm.size())) k--;
            r.prompt_msgs = json::array();
            for (size_t i = 0; i < k; i++) r.prompt_msgs.push_back(cm[i]);
            cm = json(cm.begin() + (long)k, cm.end());
            rm = json(rm.begin() + (long)k, rm.end());
            if (k == 0 && prompt && prompt->is_string())  // a string prompt the conversations do not repeat
                r.prompt_msgs.push_back({{"role", "user"}, {"content", *prompt}});
        }
    }
    if (o.contains("system") && o["system"].is_string() && !o["system"].get<std::string>().empty() &&
        (r.prompt_msgs.empty() || role_of(r.prompt_msgs[0]) != "system"))
        r.prompt_msgs.insert(r.prompt_msgs.begin(), json{{"role", "system"}, {"content", o["system"]}});
    for (const auto& [k, msgs] : {std::pair<const char*, const json*>{"chosen", &cm}, {"rejected", &rm}}) {
        json whole = r.prompt_msgs;
        for (const auto& m : *msgs) whole.push_back(m);
        check_messages(whole, named_template, file, where + "." + k);  // every turn an object with a role first
        if (msgs->empty() || role_of((*msgs)[msgs->size() - 1]) != "assistant")
            fail(strf("%s: %s: field '%s': the reply must end with an assistant turn after the prompt's turns",
                      file.c_str(), where.c_str(), k));
        for (const auto& m : *msgs)
            if (role_of(m) == "assistant" && m.contains("content") && m["content"].is_string() &&
                m["content"].get<std::string>().empty())
                fail(strf("%s: %s: field '%s': an empty reply", file.c_str(), where.c_str(), k));
    }
    r.chosen_msgs = cm;
    r.rejected_msgs = rm;
    const json* tools = c.is_object() && c.contains("tools") ? &c["tools"] : o.contains("tools") ? &o["tools"] : nullptr;
    r.tools = nullptr;
    if (tools && tools->is_array() && !tools->empty() && !(tools->size() == 1 && (*tools)[0] == ""))
        r.tools = *tools;
    return r;
}

}  // namespace

// A conversation with a named (LMFlow) template: encoded piece by piece as LMFlow does; what
// LMFlow passes over (a trailing user turn, tools the template does not show) noted once.
static void named_encode(const json& messages, const json& tools, const tokenizer& tok, const dataset_options& opt,
                         bool train_all, dataset* d, std::vector<int32_t>* ids, std::vector<int32_t>* labels,
                         std::vector<int>* turn) {
    std::vector<chat_message> msgs;
    for (const auto& m : messages) msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    std::vector<std::string> warnings;
    const auto segs = chat_template_render(opt.conversation_template, msgs, false, tools.is_null() ? nullptr : &tools,
                                           &warnings);
    chat_segments_encode(tok, opt.conversation_template, segs, train_all, ids, labels, turn);
    const size_t first = !msgs.empty() && msgs[0].role == "system" ? 1 : 0;
    if (msgs.size() > first && msgs.back().role == "user")
        warnings.push_back("conversations ending with a user turn: that turn is left out (as LMFlow does)");
    for (const std::string& w : warnings)
        if (std::find(d->notes.begin(), d->notes.end(), w) == d->notes.end()) d->notes.push_back(w);
}

// Token ids and labels of one record.
static sample make_sample(const record& r, const tokenizer& tok, const dataset_options& opt, dataset* d) {
    sample s;
    if (r.type == dataset_type::text_only) {
        s.ids = tokenizer_encode(tok, r.text, true);
        s.ids.push_back(opt.eos_id);
        s.labels = s.ids;
    } else if (r.type == dataset_type::text2text) {
        s.ids = tokenizer_encode(tok, r.input, true);
        s.labels.assign(s.ids.size(), -100);
        std::vector<int32_t> c = tokenizer_encode(tok, r.output, false);
        c.push_back(opt.eos_id);
        append(&s.ids, c);
        append(&s.labels, c);
    } else if (opt.model_template) {
        chat_render cr = model_chat_template_render(*opt.model_template, r.messages, r.tools, false);
        if (!chat_tokenize(tok, cr, opt.train_on_prompt, &s.ids, &s.labels)) d->n_piecewise++;
    } else {
        named_encode(r.messages, r.tools, tok, opt, opt.train_on_prompt, d, &s.ids, &s.labels, nullptr);
    }
    return s;
}

// The two samples of a preference record: the prompt's tokens (unlabelled) then each reply's. In
// chat form the reply's turns are rendered after the prompt's, and the prompt's own rendering
// (with the generation prompt) must be where the conversation's tokens start.
static void make_pref_samples(const pref_record& r, const tokenizer& tok, const dataset_options& opt, dataset* d,
                              sample* chosen, sample* rejected) {
    if (!r.chat) {
        const std::vector<int32_t> p = tokenizer_encode(tok, r.prompt, true);
        for (const auto& [reply, s] : {std::pair<const std::string*, sample*>{&r.chosen, chosen}, {&r.rejected, rejected}}) {
            s->ids = p;
            s->labels.assign(p.size(), -100);
            std::vector<int32_t> c = tokenizer_encode(tok, *reply, false);
            c.push_back(opt.eos_id);
            append(&s->ids, c);
            append(&s->labels, c);
        }
        return;
    }
    if (!opt.model_template) {  // named: LMFlow's pieces; the reply is every turn after the prompt's
        for (const auto& [turns, s] : {std::pair<const json*, sample*>{&r.chosen_msgs, chosen}, {&r.rejected_msgs, rejected}}) {
            json whole = r.prompt_msgs;
            for (const auto& m : *turns) whole.push_back(m);
            std::vector<int> turn;
            named_encode(whole, r.tools, tok, opt, false, d, &s->ids, &s->labels, &turn);
            for (size_t i = 0; i < s->ids.size(); i++)
                if (turn[i] < (int)r.prompt_msgs.size()) s->labels[i] = -100;  // the prompt's turns are context
        }
        return;
    }
    // the prompt alone, as generation would start from it
    std::vector<int32_t> prompt_ids, unused;
    chat_render pr = model_chat_template_render(*opt.model_template, r.prompt_msgs, r.tools, true);
    chat_tokenize(tok, pr, false, &prompt_ids, &unused);
    for (const auto& [turns, s] : {std::pair<const json*, sample*>{&r.chosen_msgs, chosen}, {&r.rejected_msgs, rejected}}) {
        record whole;
        whole.type = dataset_type::conversation;
        whole.messages = r.prompt_msgs;
        for (const auto& m : *turns) whole.messages.push_back(m);
        whole.tools = r.tools;
        dataset_options o = opt;
        o.train_on_prompt = false;
        *s = make_sample(whole, tok, o, d);
        if (s->ids.size() < prompt_ids.size() || !std::equal(prompt_ids.begin(), prompt_ids.end(), s->ids.begin()))
            fail("the chat template renders the prompt differently inside the conversation than alone (with the "
                 "generation prompt): the reply's tokens cannot be told from the prompt's");
        for (size_t i = 0; i < prompt_ids.size(); i++) s->labels[i] = -100;  // the prompt's turns are context
    }
}

dataset dataset_load(const std::string& dir, const tokenizer& tok, const dataset_options& opt) {
    if (opt.block_size < 2) fail(strf("--block_size %lld: must be at least 2", (long long)opt.block_size));
    dataset d;
    if (fs_is_file(dir)) {
        if (!ends_with(dir, ".json") && !ends_with(dir, ".jsonl"))
            fail(strf("%s: expected a .json or .jsonl dataset file, or a folder of them", dir.c_str()));
        d.files.push_back(dir);
    } else if (!fs_is_dir(dir)) {
        fail(strf("%s: no such dataset file or folder", dir.c_str()));
    } else {
        for (const auto& e : std::filesystem::directory_iterator(dir)) {
            std::string p = e.path().string();
            if (!e.is_regular_file() || !(ends_with(p, ".json") || ends_with(p, ".jsonl"))) continue;
            if (e.path().filename() == "dataset_info.json") {
                d.notes.push_back(p + ": LLaMA-Factory's description of datasets, not data; skipped (pass the data "
                                      "file itself as --dataset_path)");
                continue;
            }
            d.files.push_back(p);
        }
        std::sort(d.files.begin(), d.files.end());
        if (d.files.empty()) fail(strf("%s: no *.json or *.jsonl files in the dataset folder", dir.c_str()));
    }
    bool named = opt.model_template == nullptr;
    std::string first_where;  // where the dataset's type was set, for the mixed-type error
    auto add = [&](const record& r, const std::string& file, const std::string& where) {
        if (d.n_instances == 0) {
            d.type = r.type;
            first_where = file + ": " + where;
        } else if (r.type != d.type) {
            fail(strf("%s: %s: a %s record, but %s is %s (all records of a dataset must have one type)", file.c_str(),
                      where.c_str(), dataset_type_name(r.type), first_where.c_str(), dataset_type_name(d.type)));
        }
        if (r.type != dataset_type::conversation && opt.eos_id < 0)
            fail(strf("%s: the tokenizer has no EOS token (set eos_token in tokenizer_config.json)", file.c_str()));
        if (r.type == dataset_type::conversation && named && opt.conversation_template.empty())
            fail(strf("%s: %s: conversation data needs a chat template: the model has none, so pass "
                      "--conversation_template (an LMFlow name such as llama3, chatml, qwen2, gemma, phi3, or a .jinja file)",
                      file.c_str(), where.c_str()));
        sample s;
        try {
            s = make_sample(r, tok, opt, &d);
        } catch (const error& e) {
            fail(strf("%s: %s: %s", file.c_str(), where.c_str(), e.what()));
        }
        d.n_instances++;
        if (opt.truncate && (int64_t)s.ids.size() > opt.block_size) {
            s.ids.resize(opt.block_size);
            s.labels.resize(opt.block_size);
            d.n_truncated++;
        }
        if (sample_label_tokens(s) == 0) {  // nothing to learn from (e.g. completion cut away)
            d.n_dropped++;
            return;
        }
        d.samples.push_back(std::move(s));
        d.sources.push_back(file + ": " + where);
    };
    // a preference record: two samples, kept or dropped together
    auto add_pair = [&](const json& o, const std::string& file, const std::string& where) {
        if (d.n_instances == 0) {
            d.type = dataset_type::preference;
            first_where = file + ": " + where;
        } else if (d.type != dataset_type::preference) {
            fail(strf("%s: %s: a preference record, but %s is %s (all records of a dataset must have one type)",
                      file.c_str(), where.c_str(), first_where.c_str(), dataset_type_name(d.type)));
        }
        const pref_record r = read_pref_record(o, named, file, where);
        if (!r.chat && opt.eos_id < 0)
            fail(strf("%s: the tokenizer has no EOS token (set eos_token in tokenizer_config.json)", file.c_str()));
        if (r.chat && named && opt.conversation_template.empty())
            fail(strf("%s: %s: chat preference data needs a chat template: the model has none, so pass "
                      "--conversation_template (an LMFlow name such as llama3, chatml, qwen2, gemma, phi3, or a .jinja file)",
                      file.c_str(), where.c_str()));
        sample c, rj;
        try {
            make_pref_samples(r, tok, opt, &d, &c, &rj);
        } catch (const error& e) {
            fail(strf("%s: %s: %s", file.c_str(), where.c_str(), e.what()));
        }
        if (c.ids == rj.ids) fail(strf("%s: %s: fields 'chosen' and 'rejected' are the same reply", file.c_str(), where.c_str()));
        d.n_instances++;
        bool cut = false;
        for (sample* s : {&c, &rj})
            if (opt.truncate && (int64_t)s->ids.size() > opt.block_size) {
                s->ids.resize(opt.block_size);
                s->labels.resize(opt.block_size);
                cut = true;
            }
        d.n_truncated += cut;
        if (sample_label_tokens(c) == 0 || sample_label_tokens(rj) == 0) {  // the prompt fills the block
            d.n_dropped++;
            if (d.n_dropped <= 3)
                d.notes.push_back(strf("%s: %s: the prompt leaves no room for a reply at --block_size %lld; the pair "
                                       "is not trained on", file.c_str(), where.c_str(), (long long)opt.block_size));
            return;
        }
        d.samples.push_back(std::move(c));
        d.samples.push_back(std::move(rj));
        d.sources.push_back(file + ": " + where + " (chosen)");
        d.sources.push_back(file + ": " + where + " (rejected)");
    };
    auto add_json = [&](const json& o, const std::string& lmflow_type, const std::string& file, const std::string& where) {
        if (lmflow_type == "paired_conversation" || (lmflow_type.empty() && o.is_object() && o.contains("chosen")))
            add_pair(o, file, where);
        else
            add(read_record(o, lmflow_type, named, file, where), file, where);
    };
    for (const std::string& file : d.files) {
        std::string content = fs_read_text(file);
        if (ends_with(file, ".jsonl")) {
            size_t p = 0;
            int64_t line = 0;
            while (p < content.size()) {
                size_t q = content.find('\n', p);
                if (q == std::string::npos) q = content.size();
                line++;
                std::string text = content.substr(p, q - p);
                p = q + 1;
                if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
                std::string where = strf("line %lld", (long long)line);
                json o;
                try {
                    o = json::parse(text);
                } catch (const json::exception& e) {
                    fail(strf("%s: %s: not valid JSON (%s)", file.c_str(), where.c_str(), json_error(e).c_str()));
                }
                add_json(o, "", file, where);
            }
            continue;
        }
        json j;
        try {
            j = json::parse(content);
        } catch (const json::exception& e) {
            fail(strf("%s: not valid JSON (%s)", file.c_str(), json_error(e).c_str()));
        }
        if (j.is_array()) {  // a list of records (Alpaca's and ShareGPT's files are)
            for (size_t i = 0; i < j.size(); i++) {
                std::string where = strf("[%zu]", i);
                add_json(j[i], "", file, where);
            }
            continue;
        }
        if (!j.is_object())
            fail(strf("%s: expected a JSON object {\"type\": ..., \"instances\": [...]} or a list of records, got %s",
                      file.c_str(), json_kind(j).c_str()));
        if (!j.contains("type") || !j["type"].is_string())
            fail(strf("%s: field 'type': expected \"text_only\", \"text2text\", \"conversation\" or "
                      "\"paired_conversation\", got %s", file.c_str(),
                      j.contains("type") ? json_kind(j["type"]).c_str() : "nothing"));
        std::string ts = j["type"].get<std::string>();
        if (ts != "text_only" && ts != "text2text" && ts != "conversation" && ts != "paired_conversation")
            fail(strf("%s: field 'type': expected \"text_only\", \"text2text\", \"conversation\" or "
                      "\"paired_conversation\", got \"%s\"", file.c_str(), ts.c_str()));
        if (!j.contains("instances") || !j["instances"].is_array())
            fail(strf("%s: field 'instances': expected a list, got %s", file.c_str(),
                      j.contains("instances") ? json_kind(j["instances"]).c_str() : "nothing"));
        const json& inst = j["instances"];
        for (size_t i = 0; i < inst.size(); i++) {
            std::string where = strf("instances[%zu]", i);
            add_json(inst[i], ts, file, where);
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

void order_group_by_length(std::vector<size_t>* order, const dataset& d, size_t mega) {
    std::vector<size_t>& v = *order;
    mega = std::max<size_t>(1, mega);
    // ties by sample index: a total order, so the result is the same everywhere, and std::sort
    // needs no buffer (this runs in the step loop at each epoch)
    for (size_t i = 0; i < v.size(); i += mega)
        std::sort(v.begin() + i, v.begin() + std::min(v.size(), i + mega), [&](size_t a, size_t b) {
            const size_t la = d.samples[a].ids.size(), lb = d.samples[b].ids.size();
            return la != lb ? la > lb : a < b;
        });
}

// positions of sample s (its own, when packed) into out
static void sample_positions(const sample& s, int32_t* out) {
    if (!s.pos.empty()) std::copy(s.pos.begin(), s.pos.end(), out);
    else
        for (size_t i = 0; i < s.ids.size(); i++) out[i] = (int32_t)i;
}

void make_batch_into(batch* b, const dataset& d, const size_t* indices, size_t count, int32_t pad_id,
                     batch_layout layout) {
    b->label_tokens = b->tokens = 0;
    bool packed = false;
    for (size_t k = 0; k < count; k++) {
        const sample& s = d.samples[indices[k]];
        b->tokens += (int64_t)s.ids.size();
        b->label_tokens += sample_label_tokens(s);
        packed |= !s.pos.empty();
    }
    if (layout == batch_layout::padding_free) {
        b->B = 1;
        b->T = b->tokens;
        b->ids.resize(b->T);
        b->labels.resize(b->T);
        b->pos.resize(b->T);
        int64_t at = 0;
        for (size_t k = 0; k < count; k++) {
            const sample& s = d.samples[indices[k]];
            std::copy(s.ids.begin(), s.ids.end(), b->ids.begin() + at);
            std::copy(s.labels.begin(), s.labels.end(), b->labels.begin() + at);
            sample_positions(s, b->pos.data() + at);
            at += (int64_t)s.ids.size();
        }
        return;
    }
    b->B = (int64_t)count;
    b->T = 0;
    for (size_t k = 0; k < count; k++) b->T = std::max<int64_t>(b->T, (int64_t)d.samples[indices[k]].ids.size());
    b->ids.assign(b->B * b->T, pad_id < 0 ? 0 : pad_id);
    b->labels.assign(b->B * b->T, -100);
    b->pos.clear();
    if (packed) b->pos.resize(b->B * b->T);
    for (int64_t r = 0; r < b->B; r++) {
        const sample& s = d.samples[indices[r]];
        std::copy(s.ids.begin(), s.ids.end(), b->ids.begin() + r * b->T);
        std::copy(s.labels.begin(), s.labels.end(), b->labels.begin() + r * b->T);
        if (packed) {  // the padding continues the row's last sample (never attended, never trained)
            int32_t* p = b->pos.data() + r * b->T;
            sample_positions(s, p);
            for (int64_t t = (int64_t)s.ids.size(); t < b->T; t++) p[t] = t == 0 ? 0 : p[t - 1] + 1;
        }
    }
}

batch make_batch(const dataset& d, const std::vector<size_t>& indices, int32_t pad_id, batch_layout layout) {
    batch b;
    make_batch_into(&b, d, indices.data(), indices.size(), pad_id, layout);
    return b;
}

double padding_fraction(const dataset& d, const std::vector<size_t>& order, size_t batch_size) {
    double padded = 0, real = 0;
    batch_size = std::max<size_t>(1, batch_size);
    for (size_t i = 0; i < order.size(); i += batch_size) {
        size_t longest = 0, n = 0;
        for (size_t k = i; k < std::min(order.size(), i + batch_size); k++, n++) {
            longest = std::max(longest, d.samples[order[k]].ids.size());
            real += (double)d.samples[order[k]].ids.size();
        }
        padded += (double)(longest * n);
    }
    return padded > 0 ? 1.0 - real / padded : 0.0;
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
    d->sources.assign(d->samples.size(), "--group_texts block");
}

void dataset_pack(dataset* d, int64_t block_size) {
    std::vector<sample> rows;
    std::vector<std::string> sources;
    sample row;
    std::string row_source;
    auto flush = [&] {
        if (!row.ids.empty() && sample_label_tokens(row) > 0) {
            rows.push_back(std::move(row));
            sources.push_back(row_source);
        }
        row = sample();
        row_source.clear();
    };
    // a piece of a sample into the open row, as a sample of its own: its first token predicts
    // nothing here (in a row of several, position 0 is never a target)
    auto put = [&](const sample& s, size_t from, size_t n, const std::string& source) {
        if (row_source.empty()) row_source = "--packing row: " + source;
        for (size_t i = 0; i < n; i++) {
            row.ids.push_back(s.ids[from + i]);
            row.labels.push_back(i == 0 ? -100 : s.labels[from + i]);
            row.pos.push_back((int32_t)i);
        }
    };
    for (size_t k = 0; k < d->samples.size(); k++) {
        const sample& s = d->samples[k];
        const std::string& source = k < d->sources.size() ? d->sources[k] : std::string();
        size_t n = s.ids.size(), from = 0;
        if ((int64_t)(row.ids.size() + n) > block_size) flush();  // whole samples only
        while ((int64_t)(n - from) > block_size) {  // longer than a row: full rows, then the rest
            put(s, from, (size_t)block_size, source);
            flush();
            from += (size_t)block_size;
        }
        if (n > from) put(s, from, n - from, source);
    }
    flush();
    if (rows.empty()) fail("--packing: no sample has a token to learn from");
    d->samples = std::move(rows);
    d->sources = std::move(sources);
}

}  // namespace lisa
