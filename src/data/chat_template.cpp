// Chat templates for conversation datasets and `lisa generate` (see chat_template.h): the named
// templates, written out, and a model's own Jinja template with its trained spans.
#include "data/chat_template.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "io/fs.h"
#include "model/gguf_model.h"
#include "template/jinja.h"

namespace lisa {

std::vector<std::string> chat_template_names() { return {"llama3", "chatml", "llama2", "mistral", "empty"}; }

std::vector<std::string> chat_template_stop_strings(const std::string& name) {
    if (name == "llama3") return {"<|eot_id|>"};
    if (name == "chatml") return {"<|im_end|>"};
    return {};
}

std::vector<chat_segment> chat_template_render(const std::string& name, const std::vector<chat_message>& msgs,
                                               bool add_generation_prompt) {
    std::vector<chat_segment> out;
    auto prompt = [&](const std::string& s) { out.push_back({s, false}); };
    auto train = [&](const std::string& s) { out.push_back({s, true}); };
    std::string system;
    size_t first = 0;
    if (!msgs.empty() && msgs[0].role == "system") {
        system = msgs[0].content;
        first = 1;
    }
    bool has_system = first == 1;
    if (name == "llama3") {
        prompt("<|begin_of_text|>");
        if (has_system) prompt("<|start_header_id|>system<|end_header_id|>\n\n" + system + "<|eot_id|>");
        for (size_t i = first; i < msgs.size(); i++) {
            prompt("<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n");
            if (msgs[i].role == "assistant") train(msgs[i].content + "<|eot_id|>");
            else prompt(msgs[i].content + "<|eot_id|>");
        }
        if (add_generation_prompt) prompt("<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else if (name == "chatml") {
        if (has_system) prompt("<|im_start|>system\n" + system + "<|im_end|>\n");
        for (size_t i = first; i < msgs.size(); i++) {
            prompt("<|im_start|>" + msgs[i].role + "\n");
            if (msgs[i].role == "assistant") {
                train(msgs[i].content + "<|im_end|>");
                prompt("\n");
            } else {
                prompt(msgs[i].content + "<|im_end|>\n");
            }
        }
        if (add_generation_prompt) prompt("<|im_start|>assistant\n");
    } else if (name == "llama2") {
        bool first_user = true;
        for (size_t i = first; i < msgs.size(); i++) {
            if (msgs[i].role == "user") {
                std::string c = msgs[i].content;
                if (first_user && has_system) c = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + c;
                first_user = false;
                prompt("<s>[INST] " + c + " [/INST]");
            } else {
                train(" " + msgs[i].content + " </s>");
            }
        }
    } else if (name == "mistral") {
        prompt("<s>");
        bool first_user = true;
        for (size_t i = first; i < msgs.size(); i++) {
            if (msgs[i].role == "user") {
                std::string c = msgs[i].content;
                if (first_user && has_system) c = system + "\n\n" + c;
                first_user = false;
                prompt("[INST] " + c + " [/INST]");
            } else {
                train(msgs[i].content + "</s>");
            }
        }
    } else if (name == "empty") {
        if (has_system) prompt(system);
        for (size_t i = first; i < msgs.size(); i++) {
            if (msgs[i].role == "assistant") out.push_back({msgs[i].content, true, true});
            else prompt(msgs[i].content);
        }
    } else {
        std::string names;
        for (auto& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
        fail(strf("--conversation_template \"%s\": unknown template (available: %s)", name.c_str(), names.c_str()));
    }
    return out;
}

// ---------------------------------------------------------------- a model's own template

using ojson = nlohmann::ordered_json;

// Stands in for one assistant message when locating it: no template prints it on its own.
static const char* const kSentinel = "\x01\x02lisa-sentinel\x02\x01";

static std::string token_string(const ojson& v) {  // "tok" or {"content": "tok", ...}
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return "";
}

// The special tokens HF passes to the template (tokenizer.special_tokens_map).
static ojson special_tokens(const std::string& model_dir) {
    ojson vars = ojson::object();
    const std::string cfg_path = model_file_label(model_dir, "tokenizer_config.json");
    std::string cfg_text;
    if (!model_text_file(model_dir, "tokenizer_config.json", &cfg_text)) return vars;
    ojson cfg;
    try {
        cfg = ojson::parse(cfg_text);
    } catch (const std::exception& e) {
        fail(strf("%s: not valid JSON (%s)", cfg_path.c_str(), json_error(e).c_str()));
    }
    if (!cfg.is_object()) return vars;
    for (const char* k : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
        if (!cfg.contains(k)) continue;
        std::string t = token_string(cfg[k]);
        if (!t.empty()) vars[k] = t;
    }
    if (cfg.contains("additional_special_tokens") && cfg["additional_special_tokens"].is_array()) {
        ojson extra = ojson::array();
        for (const auto& v : cfg["additional_special_tokens"]) extra.push_back(token_string(v));
        vars["additional_special_tokens"] = extra;
    }
    return vars;
}

static std::shared_ptr<const jinja_template> parse_template(const std::string& text, const std::string& where) {
    try {
        return jinja_parse(text);
    } catch (const error& e) {
        fail(strf("%s: %s", where.c_str(), e.what()));
    }
}

bool model_chat_template_load(const std::string& model_dir, model_chat_template* out) {
    std::string text, where;
    std::string jinja_file = model_dir + "/chat_template.jinja", json_file = model_dir + "/chat_template.json",
                cfg_file = model_file_label(model_dir, "tokenizer_config.json");
    auto from_field = [&](const std::string& file, const ojson& v) -> bool {
        if (v.is_string()) {
            text = v.get<std::string>();
            where = file + ": chat_template";
            return true;
        }
        if (v.is_array()) {  // [{"name": ..., "template": ...}]: the "default" one, as HF picks it
            for (const auto& e : v)
                if (e.is_object() && e.contains("name") && e["name"] == "default" && e.contains("template") &&
                    e["template"].is_string()) {
                    text = e["template"].get<std::string>();
                    where = file + ": chat_template (\"default\")";
                    return true;
                }
            fail(strf("%s: field 'chat_template': a list of named templates without a \"default\" one", file.c_str()));
        }
        if (!v.is_null()) fail(strf("%s: field 'chat_template': expected a string or a list of {name, template}", file.c_str()));
        return false;
    };
    auto read_json = [&](const std::string& file) {
        try {
            std::string t;  // (a GGUF model's tokenizer_config.json is rebuilt from its metadata)
            if (file == cfg_file) model_text_file(model_dir, "tokenizer_config.json", &t);
            else t = fs_read_text(file);
            return ojson::parse(t);
        } catch (const std::exception& e) {
            fail(strf("%s: not valid JSON (%s)", file.c_str(), json_error(e).c_str()));
        }
    };
    bool found = false;
    if (fs_is_file(jinja_file)) {
        text = fs_read_text(jinja_file);
        where = jinja_file;
        found = true;
    } else if (fs_is_file(json_file)) {
        ojson j = read_json(json_file);
        found = j.is_object() && j.contains("chat_template") && from_field(json_file, j["chat_template"]);
    } else if (std::string t; model_text_file(model_dir, "tokenizer_config.json", &t)) {
        ojson j = read_json(cfg_file);
        found = j.is_object() && j.contains("chat_template") && from_field(cfg_file, j["chat_template"]);
    }
    if (!found) return false;
    out->where = where;
    out->tmpl = parse_template(text, where);
    out->vars = special_tokens(model_dir);
    out->end_of_turn.clear();
    return true;
}

model_chat_template model_chat_template_from_file(const std::string& path, const std::string& model_dir) {
    model_chat_template t;
    t.where = path;
    t.tmpl = parse_template(fs_read_text(path), path);
    t.vars = special_tokens(model_dir);
    return t;
}

static std::string render_text(const model_chat_template& t, const ojson& messages, const ojson& tools, bool gen,
                               std::vector<jinja_span>* spans) {
    ojson ctx = t.vars;
    ctx["messages"] = messages;
    ctx["tools"] = tools;
    ctx["documents"] = nullptr;
    ctx["add_generation_prompt"] = gen;
    try {
        return jinja_render(*t.tmpl, ctx, spans);
    } catch (const error& e) {
        fail(strf("%s: %s", t.where.c_str(), e.what()));
    }
}

void model_chat_template_probe(model_chat_template* t, const tokenizer& tok) {
    t->end_of_turn.clear();
    for (int with_system = 0; with_system < 2; with_system++) {
        ojson msgs = ojson::array();
        if (with_system) msgs.push_back({{"role", "system"}, {"content", "S"}});
        msgs.push_back({{"role", "user"}, {"content", "Hi"}});
        msgs.push_back({{"role", "assistant"}, {"content", kSentinel}});
        std::string text;
        try {
            text = render_text(*t, msgs, nullptr, false, nullptr);
        } catch (const error&) {
            continue;  // a template that insists on a system turn, say
        }
        size_t at = text.rfind(kSentinel);
        if (at == std::string::npos) return;
        size_t p = at + strlen(kSentinel), q = p;
        while (q < text.size() && (text[q] == ' ' || text[q] == '\n' || text[q] == '\t' || text[q] == '\r')) q++;
        if (q == text.size()) return;
        std::vector<int32_t> ids = tokenizer_encode(tok, text.substr(q), false);
        if (ids.empty() || !tokenizer_is_special(tok, ids[0])) return;
        std::string marker = tokenizer_token_text(tok, ids[0]);
        if (text.compare(q, marker.size(), marker) != 0) return;
        t->end_of_turn = text.substr(p, q - p) + marker;
        return;
    }
}

chat_render model_chat_template_render(const model_chat_template& t, const ojson& messages, const ojson& tools,
                                       bool add_generation_prompt) {
    chat_render r;
    std::vector<jinja_span> gen;
    r.text = render_text(t, messages, tools, add_generation_prompt, &gen);
    if (add_generation_prompt) return r;
    if (jinja_has_generation(*t.tmpl)) {  // the template marks what to learn
        for (const auto& s : gen)
            if (s.end > s.begin) r.trained.push_back({s.begin, s.end});
        std::sort(r.trained.begin(), r.trained.end());
        return r;
    }
    size_t prev_end = 0;
    for (size_t k = 0; k < messages.size(); k++) {
        if (!messages[k].is_object() || messages[k].value("role", std::string()) != "assistant") continue;
        ojson other = messages;
        other[k] = {{"role", "assistant"}, {"content", kSentinel}};
        std::string alt = render_text(t, other, tools, false, nullptr);
        size_t n = std::min(r.text.size(), alt.size()), p = 0, q = 0;
        while (p < n && r.text[p] == alt[p]) p++;
        while (q < n - p && r.text[r.text.size() - 1 - q] == alt[alt.size() - 1 - q]) q++;
        if (alt == r.text) continue;  // the template does not print this message
        size_t b = p, e = r.text.size() - q;  // e == b: an empty reply (its end of turn is still learned)
        if (b < prev_end)
            fail(strf("%s: cannot tell assistant message %zu apart in the rendered text (the template prints it "
                      "more than once?); use --train_on_prompt or a named --conversation_template",
                      t.where.c_str(), k));
        if (!t.end_of_turn.empty() && r.text.compare(e, t.end_of_turn.size(), t.end_of_turn) == 0)
            e += t.end_of_turn.size();
        r.trained.push_back({b, e});
        prev_end = e;
    }
    return r;
}

bool chat_tokenize(const tokenizer& tok, const chat_render& r, bool train_all, std::vector<int32_t>* ids,
                   std::vector<int32_t>* labels) {
    const std::string& text = r.text;
    // a token is learned if its bytes overlap a trained range: a SentencePiece token carries the
    // space before a word, so "▁Blue" is the reply's even though the range starts after the space
    auto trained_at = [&](size_t b, size_t e) {
        for (const auto& s : r.trained)
            if (b < s.second && (e > s.first || (e == b && b == s.first))) return true;
        return false;
    };
    *ids = tokenizer_encode(tok, text, false);
    labels->assign(ids->size(), -100);
    // align each token with the text: where its bytes start
    size_t pos = 0;
    bool aligned = true;
    auto is_ws = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
    for (size_t i = 0; i < ids->size() && aligned; i++) {
        std::string s = tokenizer_token_text(tok, (*ids)[i]);
        size_t start;
        if (text.compare(pos, s.size(), s) == 0) {
            start = pos;
            pos += s.size();
        } else if (!s.empty() && s[0] == ' ' && text.compare(pos, s.size() - 1, s, 1) == 0) {
            start = pos;  // a SentencePiece prefix space the text does not have
            pos += s.size() - 1;
        } else {
            size_t q = pos;  // an added token that strips the whitespace before it
            while (q < text.size() && is_ws(text[q])) q++;
            if (q > pos && text.compare(q, s.size(), s) == 0) {
                start = q;
                pos = q + s.size();
            } else {
                aligned = false;
                break;
            }
        }
        if (train_all || trained_at(start, pos)) (*labels)[i] = (*ids)[i];
    }
    if (aligned) {
        for (size_t q = pos; q < text.size(); q++) aligned &= is_ws(text[q]);
    }
    if (aligned) return true;
    // piecewise: cut the text at the span edges and encode each piece on its own
    ids->clear();
    labels->clear();
    std::vector<std::pair<size_t, bool>> cuts = {{0, false}};
    for (const auto& s : r.trained) {
        cuts.push_back({s.first, true});
        cuts.push_back({s.second, false});
    }
    cuts.push_back({text.size(), false});
    for (size_t c = 0; c + 1 < cuts.size(); c++) {
        size_t b = cuts[c].first, e = cuts[c + 1].first;
        if (e <= b) continue;
        std::vector<int32_t> part = tokenizer_encode(tok, text.substr(b, e - b), false);
        for (int32_t id : part) {
            ids->push_back(id);
            labels->push_back(train_all || cuts[c].second ? id : -100);
        }
    }
    return false;
}

}  // namespace lisa
