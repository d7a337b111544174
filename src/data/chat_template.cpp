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

using ojson = nlohmann::ordered_json;

// ---------------------------------------------------------------- named templates (LMFlow's presets)
//
// Each preset as LMFlow's ConversationTemplate defines it: formatters of pieces (text with a
// {{content}} placeholder, or BOS / EOS / a token id), a starter before the first turn and a
// stopper after the last, written here from LMFlow's documented formats.

namespace {

using kind = chat_segment::kind_t;

struct piece {
    kind        k;
    const char* text;  // kind text: may hold {{content}}
    int32_t     id;    // kind token_id
};
constexpr piece T(const char* t) { return {kind::piece_text, t, -1}; }
constexpr piece BOS{kind::bos, "", -1};
constexpr piece EOS{kind::eos, "", -1};

enum class system_style {
    turn,        // the system formatter's pieces before the first user turn
    fold_llama2, // its text put inside the first user turn's content (LMFlow's llama2)
    none,        // no system formatter: a system prompt is an error (LMFlow's empty templates)
};

struct preset {
    const char*        name;
    const char*        purpose;
    std::vector<piece> user, assistant, system;
    system_style       sys = system_style::turn;
    std::vector<piece> starter, stopper;  // before the first turn (context); after the last reply (learned)
    bool               force_system = false;       // the system formatter even without a system prompt
    bool               tools_in_system = false;    // tools listed in the system prompt (hymba)
    bool               tools_joined = false;       // tools joined by "," after the system prompt (*_for_tool)
    bool               zephyr_first_user = false;  // no leading newline on the first user turn without a system
    int32_t            strip_last_id = -1;         // remove_last_sep: a token id the last reply may end with
    bool               gemma_system_warning = false;
    std::vector<const char*> markers;              // special tokens its text holds
};

const std::vector<preset>& presets() {
    static const std::vector<preset> v = [] {
        std::vector<preset> p;
        const std::vector<const char*> chatml_markers = {"<|im_start|>", "<|im_end|>"};
        auto chatml = [&](const char* name, const char* purpose) {
            preset t{name, purpose, {T("<|im_start|>user\n{{content}}<|im_end|>\n")},
                     {T("<|im_start|>assistant\n{{content}}<|im_end|>\n")},
                     {T("<|im_start|>system\n{{content}}<|im_end|>\n")}};
            t.markers = chatml_markers;
            return t;
        };
        {
            preset t{"chatglm3", "ChatGLM3", {T("<|user|>\n {{content}}")}, {T("<|assistant|>\n {{content}}")},
                     {T("<|system|>\n {{content}}")}};
            t.starter = {T("[gMASK]sop")};
            p.push_back(t);
        }
        p.push_back(chatml("chatml", "ChatML models (OpenHermes, SmolLM2, ...)"));
        {
            preset t{"deepseek_v2", "DeepSeek-V2 (also: deepseek)", {T("User: {{content}}\n\n")},
                     {T("Assistant: {{content}}"), EOS}, {T("{{content}}\n\n")}};
            t.starter = {BOS};
            p.push_back(t);
        }
        {
            preset t{"empty", "no chat format: BOS, the user's text, the reply, EOS (also: disable)", {BOS, T("{{content}}")},
                     {T("{{content}}"), EOS}, {}};
            t.sys = system_style::none;
            p.push_back(t);
        }
        {
            preset t{"empty_no_special_tokens", "no chat format and no special tokens", {T("{{content}}")},
                     {T("{{content}}")}, {}};
            t.sys = system_style::none;
            p.push_back(t);
        }
        {
            preset t{"gemma", "Gemma, Gemma 2", {T("<start_of_turn>user\n{{content}}<end_of_turn>\n")},
                     {T("<start_of_turn>model\n{{content}}<end_of_turn>\n")}, {T("{{content}}")}};
            t.starter = {BOS};
            t.gemma_system_warning = true;
            t.markers = {"<start_of_turn>", "<end_of_turn>"};
            p.push_back(t);
        }
        {
            preset t{"hymba", "Hymba (tools listed in the system prompt)", {T("<extra_id_1>User\n{{content}}\n")},
                     {T("<extra_id_1>Assistant\n{{content}}\n")}, {T("<extra_id_0>System{{content}}\n\n")}};
            t.strip_last_id = 13;  // its separator, a newline token id
            t.stopper = {EOS};
            t.force_system = true;
            t.tools_in_system = true;
            t.markers = {"<extra_id_0>", "<extra_id_1>"};
            p.push_back(t);
        }
        {
            preset t = chatml("internlm2", "InternLM2");
            t.starter = {BOS};
            p.push_back(t);
        }
        {
            preset t{"llama2", "Llama 2 chat", {BOS, T("[INST] {{content}} [/INST]")}, {T("{{content}}"), EOS},
                     {T("<<SYS>>\n{{content}}\n<</SYS>>\n\n")}};
            t.sys = system_style::fold_llama2;
            p.push_back(t);
        }
        {
            preset t{"llama3", "Llama 3, 3.1, 3.2, 3.3 instruct",
                     {T("<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>")},
                     {T("<|start_header_id|>assistant<|end_header_id|>\n\n{{content}}<|eot_id|>")},
                     {T("<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>")}};
            t.starter = {BOS};
            t.markers = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
            p.push_back(t);
            t.name = "llama3_for_tool";
            t.purpose = "Llama 3 with the tools appended to the system prompt";
            t.tools_joined = true;
            p.push_back(t);
        }
        {
            preset t{"phi3", "Phi-3", {T("<|user|>\n{{content}}<|end|>\n")}, {T("<|assistant|>\n{{content}}<|end|>\n")},
                     {T("<|system|>\n{{content}}<|end|>\n")}};
            t.starter = {BOS};
            t.stopper = {EOS};
            t.markers = {"<|user|>", "<|assistant|>", "<|end|>"};
            p.push_back(t);
        }
        p.push_back(chatml("qwen2", "Qwen2 (its separator is never removed, so as chatml)"));
        {  // LMFlow's tool-use variants: the tools joined by "," after the system prompt
            preset t = chatml("qwen2_for_tool", "Qwen2 with the tools appended to the system prompt");
            t.tools_joined = true;
            p.push_back(t);
        }
        p.push_back(chatml("yi", "Yi (chatml)"));
        {
            preset t = chatml("yi1_5", "Yi-1.5 (the system prompt as plain text)");
            t.system = {T("{{content}}")};
            p.push_back(t);
        }
        {
            preset t{"zephyr", "Zephyr", {T("\n<|user|>\n{{content}}"), EOS}, {T("\n<|assistant|>\n{{content}}"), EOS},
                     {T("<|system|>\n{{content}}"), EOS}};
            t.zephyr_first_user = true;
            p.push_back(t);
        }
        {  // ours, not LMFlow's: Mistral's instruct format, the system prompt before the first instruction
            preset t{"mistral", "Mistral instruct (lisa.cpp's; not an LMFlow name)", {T("[INST] {{content}} [/INST]")},
                     {T("{{content}}"), EOS}, {T("{{content}}\n\n")}};
            t.sys = system_style::fold_llama2;
            t.starter = {BOS};
            p.push_back(t);
        }
        return p;
    }();
    return v;
}

// LMFlow's other names for the same presets
const std::map<std::string, std::string>& aliases() {
    static const std::map<std::string, std::string> a = {{"deepseek", "deepseek_v2"}, {"disable", "empty"}};
    return a;
}

const preset* find_preset(const std::string& name) {
    auto a = aliases().find(name);
    const std::string& n = a == aliases().end() ? name : a->second;
    for (const preset& t : presets())
        if (n == t.name) return &t;
    return nullptr;
}

[[noreturn]] void unknown(const std::string& name) {
    std::string names;
    for (auto& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
    fail(strf("--conversation_template \"%s\": unknown template (available: %s)", name.c_str(), names.c_str()));
}

// Replace every {{content}} (Python's str.replace); a piece that formats to nothing becomes a
// space, as LMFlow's StringFormatter does.
std::string fill(const std::string& text, const std::string& content) {
    std::string out;
    size_t at = 0;
    for (size_t p; (p = text.find("{{content}}", at)) != std::string::npos; at = p + 11) out += text.substr(at, p - at) + content;
    out += text.substr(at);
    return out.empty() ? " " : out;
}

void emit(std::vector<chat_segment>* out, const std::vector<piece>& pieces, const std::string& content, bool train,
          int turn) {
    for (const piece& pc : pieces) {
        chat_segment s;
        s.kind = pc.k;
        s.trainable = train;
        s.turn = turn;
        s.id = pc.id;
        if (pc.k == kind::piece_text) s.text = fill(pc.text, content);
        out->push_back(s);
    }
}

// The pieces of a formatter before its {{content}} (the generation prompt of the assistant's).
std::vector<piece> opening(const std::vector<piece>& pieces, std::string* text_storage) {
    std::vector<piece> out;
    for (const piece& pc : pieces) {
        if (pc.k != kind::piece_text) {
            out.push_back(pc);
            continue;
        }
        const std::string t = pc.text;
        const size_t at = t.find("{{content}}");
        if (at == std::string::npos) {
            out.push_back(pc);
            continue;
        }
        *text_storage = t.substr(0, at);
        if (!text_storage->empty()) out.push_back({kind::piece_text, text_storage->c_str(), -1});
        break;
    }
    return out;
}

struct builtin_preset {
    const char*              name;
    const char*              purpose;
    const char*              default_system;  // qwen2_5 family: the system prompt when none is given
    std::vector<const char*> markers;
};

const std::vector<builtin_preset>& builtins() {
    static const std::vector<builtin_preset> v = {
        {"qwen2_5", "Qwen2.5 instruct", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
         {"<|im_start|>", "<|im_end|>"}},
        {"qwen2_5_1m", "Qwen2.5-1M", "You are a helpful assistant.", {"<|im_start|>", "<|im_end|>"}},
        {"qwen2_5_math", "Qwen2.5-Math", "Please reason step by step, and put your final answer within \\boxed{}.",
         {"<|im_start|>", "<|im_end|>"}},
        {"qwen_qwq", "QwQ",
         "You are a helpful and harmless assistant. You are Qwen developed by Alibaba. You should think step-by-step.",
         {"<|im_start|>", "<|im_end|>"}},
        {"qwen3", "Qwen3 (thinking blocks as Qwen3 writes them)", nullptr, {"<|im_start|>", "<|im_end|>"}},
        {"gemma3", "Gemma 3", nullptr, {"<start_of_turn>", "<end_of_turn>"}},
        {"deepseek_v3", "DeepSeek-V3", nullptr, {"<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"}},
        {"deepseek_r1", "DeepSeek-R1 (reasoning before </think> left out of earlier replies)", nullptr,
         {"<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"}},
        {"deepseek_r1_distill", "DeepSeek-R1-Distill (Llama / Qwen)", nullptr,
         {"<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"}},
    };
    return v;
}

const builtin_preset* find_builtin(const std::string& name) {
    for (const builtin_preset& b : builtins())
        if (name == b.name) return &b;
    return nullptr;
}

}  // namespace

std::vector<std::string> chat_template_names() {
    std::vector<std::string> v;
    for (const preset& t : presets()) v.push_back(t.name);
    for (const builtin_preset& b : builtins()) v.push_back(b.name);
    for (const auto& [a, _] : aliases()) v.push_back(a);
    return v;
}

bool chat_template_is_named(const std::string& name) { return find_preset(name) != nullptr; }

std::string chat_template_purpose(const std::string& name) {
    const preset* t = find_preset(name);
    if (const builtin_preset* b = find_builtin(name)) return b->purpose;
    return t ? t->purpose : "";
}

std::vector<std::string> chat_template_markers(const std::string& name) {
    if (const builtin_preset* b = find_builtin(name)) return std::vector<std::string>(b->markers.begin(), b->markers.end());
    const preset* t = find_preset(name);
    if (!t) unknown(name);
    return std::vector<std::string>(t->markers.begin(), t->markers.end());
}

std::vector<std::string> chat_template_stop_strings(const std::string& name) {
    const preset* t = find_preset(name);
    if (!t) return {};
    std::vector<std::string> stops;
    // the assistant turn's closing marker (a special token), else the next user turn's opening
    for (const piece& pc : t->assistant)
        if (pc.k == kind::piece_text) {
            std::string tail = pc.text;
            size_t at = tail.find("{{content}}");
            if (at == std::string::npos) continue;
            tail = tail.substr(at + 11);
            while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
            if (!tail.empty()) stops.push_back(tail);
        }
    if (stops.empty())
        for (const piece& pc : t->user)
            if (pc.k == kind::piece_text) {
                std::string head = pc.text;
                head = head.substr(0, head.find("{{content}}"));
                while (!head.empty() && (head.front() == '\n' || head.front() == ' ')) head.erase(head.begin());
                while (!head.empty() && (head.back() == '\n' || head.back() == ' ')) head.pop_back();
                if (!head.empty()) stops.push_back(head);
                break;
            }
    return stops;
}

std::vector<chat_segment> chat_template_render(const std::string& name, const std::vector<chat_message>& msgs_in,
                                               bool add_generation_prompt, const nlohmann::ordered_json* tools,
                                               std::vector<std::string>* warnings) {
    const preset* t = find_preset(name);
    if (!t) unknown(name);
    auto warn = [&](const std::string& w) {
        if (warnings && std::find(warnings->begin(), warnings->end(), w) == warnings->end()) warnings->push_back(w);
    };
    // LMFlow's split: the system prompt apart, then (user, assistant) pairs
    std::string system;
    bool has_system = false;
    size_t first = 0;
    if (!msgs_in.empty() && msgs_in[0].role == "system") {
        system = msgs_in[0].content;
        has_system = true;
        first = 1;
    }
    size_t end = msgs_in.size();
    if (!add_generation_prompt && (end - first) % 2 == 1) end--;  // a trailing user turn is dropped
    for (size_t i = first; i < end; i++)
        if (msgs_in[i].role != ((i - first) % 2 == 0 ? "user" : "assistant"))
            fail(strf("--conversation_template %s: messages must alternate user and assistant, starting with the user "
                      "(after an optional system prompt)", name.c_str()));
    // a blank system prompt is none (LMFlow: `system.replace(" ", "")` empty)
    bool blank = true;
    for (char c : system) blank &= c == ' ';
    if (blank) has_system = false;
    std::string tool_text;
    const bool have_tools = tools && tools->is_array() && !tools->empty();
    if (have_tools && t->tools_in_system) {
        for (const auto& v : *tools) {
            if (!v.is_string())
                fail(strf("--conversation_template %s: field 'tools': expected a list of strings (the template lists "
                          "each as <tool> TEXT </tool>)", name.c_str()));
            tool_text += "\n<tool> " + v.get<std::string>() + " </tool>";
        }
    } else if (have_tools && t->tools_joined) {
        for (size_t k = 0; k < tools->size(); k++) {
            if (!(*tools)[k].is_string())
                fail(strf("--conversation_template %s: field 'tools': expected a list of strings (the template joins "
                          "them with \",\" after the system prompt)", name.c_str()));
            tool_text += (k ? "," : "") + (*tools)[k].get<std::string>();
        }
    } else if (have_tools) {
        warn(strf("the %s template does not show tools: they are ignored (as LMFlow does; put them in the system "
                  "prompt to train on them)", t->name));
    }
    if (has_system && t->sys == system_style::none)
        fail(strf("--conversation_template %s: the data has a system prompt but the template has no place for one "
                  "(LMFlow refuses it too); leave it out or choose another template", name.c_str()));
    if (has_system && t->gemma_system_warning)
        warn("gemma has no system turn: the system prompt goes right after BOS, before the first user turn, without "
             "markup (as LMFlow does)");
    std::vector<chat_segment> out;
    emit(&out, t->starter, "", false, -1);
    std::string sys_text = has_system ? system : "";
    if (t->tools_in_system || t->tools_joined) sys_text += tool_text;
    const bool sys_turn = t->sys == system_style::turn && (!sys_text.empty() || t->force_system);
    if (sys_turn) emit(&out, t->system, sys_text, false, has_system ? 0 : -1);
    std::string folded;  // llama2: the system prompt's text inside the first user turn
    if (t->sys == system_style::fold_llama2 && has_system)
        for (const piece& pc : t->system)
            if (pc.k == kind::piece_text) folded += fill(pc.text, system);
    for (size_t i = first; i < end; i++) {
        const bool user = msgs_in[i].role == "user";
        if (user) {
            std::string content = msgs_in[i].content;
            if (i == first) content = folded + content;
            std::vector<piece> u = t->user;
            std::string storage;
            if (i == first && t->zephyr_first_user && !has_system && !u.empty() && u[0].k == kind::piece_text) {
                storage = u[0].text;
                size_t nl = storage.find('\n');
                if (nl != std::string::npos) storage.erase(nl, 1);
                u[0].text = storage.c_str();
                emit(&out, u, content, false, (int)i);
            } else {
                emit(&out, u, content, false, (int)i);
            }
        } else {
            emit(&out, t->assistant, msgs_in[i].content, true, (int)i);
        }
    }
    if (add_generation_prompt) {
        std::string storage;
        emit(&out, opening(t->assistant, &storage), "", false, -1);
        return out;
    }
    // after the last reply: remove its separator, then the stopper (both the reply's)
    int last = -1;
    for (size_t k = 0; k < out.size(); k++)
        if (out[k].trainable) last = (int)k;
    if (last >= 0 && t->strip_last_id >= 0) out[(size_t)last].strip_trailing_id = t->strip_last_id;
    if (last >= 0) emit(&out, t->stopper, "", true, out[(size_t)last].turn);
    return out;
}

void chat_segments_encode(const tokenizer& tok, const std::string& name, const std::vector<chat_segment>& segs,
                          bool train_all, std::vector<int32_t>* ids, std::vector<int32_t>* labels, std::vector<int>* turn) {
    ids->clear();
    labels->clear();
    if (turn) turn->clear();
    for (const chat_segment& s : segs) {
        std::vector<int32_t> part;
        if (s.kind == kind::piece_text) {
            part = tokenizer_encode(tok, s.text, false);
        } else if (s.kind == kind::token_id) {
            part = {s.id};
        } else {
            const int32_t id = s.kind == kind::bos ? tokenizer_bos_id(tok) : tokenizer_eos_id(tok);
            if (id < 0)
                fail(strf("--conversation_template %s: the template writes the tokenizer's %s token, and this tokenizer "
                          "has none", name.c_str(), s.kind == kind::bos ? "BOS" : "EOS"));
            part = {id};
        }
        if (s.strip_trailing_id >= 0 && !part.empty() && part.back() == s.strip_trailing_id) part.pop_back();
        for (int32_t id : part) {
            ids->push_back(id);
            labels->push_back(train_all || s.trainable ? id : -100);
            if (turn) turn->push_back(s.turn);
        }
    }
}

// ---------------------------------------------------------------- LMFlow's Jinja presets, written out

namespace {

// Python's str.strip / lstrip / rstrip of one character set
std::string lstrip(std::string s, const char* set) {
    s.erase(0, s.find_first_not_of(set) == std::string::npos ? s.size() : s.find_first_not_of(set));
    return s;
}
std::string rstrip(std::string s, const char* set) {
    const size_t e = s.find_last_not_of(set);
    s.erase(e == std::string::npos ? 0 : e + 1);
    return s;
}
// Python's s.split(sep)[-1] and [0]
std::string after_last(const std::string& s, const std::string& sep) {
    const size_t p = s.rfind(sep);
    return p == std::string::npos ? s : s.substr(p + sep.size());
}
std::string before_first(const std::string& s, const std::string& sep) {
    const size_t p = s.find(sep);
    return p == std::string::npos ? s : s.substr(0, p);
}
// Jinja's `| trim`: surrounding whitespace off
std::string trim_ws(const std::string& s) { return rstrip(lstrip(s, " \t\n\r\f\v"), " \t\n\r\f\v"); }

}  // namespace

bool chat_template_is_builtin_jinja(const std::string& name) { return find_builtin(name) != nullptr; }

void chat_template_builtin(const std::string& name, const std::string& bos_token, model_chat_template* out) {
    const builtin_preset* b = find_builtin(name);
    LISA_ASSERT(b, "chat_template_builtin", "not one of LMFlow's Jinja presets");
    *out = model_chat_template{};
    out->where = "LMFlow's " + name + " template";
    out->builtin = name;
    out->vars = ojson::object();
    out->vars["bos_token"] = bos_token;
    out->end_of_turn = b->markers.back();  // what ends a reply (generation stops there)
}


// The rendering of a conversation of system / user / assistant turns by one of them: the text
// and the {% generation %} ranges (what LMFlow learns).
static chat_render builtin_render(const model_chat_template& t, const ojson& messages, const ojson& tools, bool gen) {
    const builtin_preset* b = find_builtin(t.builtin);
    chat_render r;
    std::string& out = r.text;
    auto learn = [&](const std::string& s) {
        r.trained.push_back({out.size(), out.size() + s.size()});
        out += s;
    };
    if (tools.is_array() && !tools.empty())
        fail(strf("%s: tools are not shown by lisa.cpp's rendering of it yet; the model's own template "
                  "(--conversation_template auto) shows them", t.where.c_str()));
    std::vector<std::pair<std::string, std::string>> m;  // role, content
    for (size_t k = 0; k < messages.size(); k++) {
        const ojson& x = messages[k];
        const std::string role = x.is_object() ? x.value("role", std::string()) : "";
        if (role != "system" && role != "user" && role != "assistant")
            fail(strf("%s: messages[%zu]: role \"%s\": only system, user and assistant turns (tool turns and tool "
                      "calls: the model's own template, --conversation_template auto)", t.where.c_str(), k,
                      role.c_str()));
        if (!x.contains("content") || !x["content"].is_string() || x.contains("tool_calls"))
            fail(strf("%s: messages[%zu]: expected a string 'content' and no tool calls", t.where.c_str(), k));
        m.push_back({role, x["content"].get<std::string>()});
    }
    const std::string name = t.builtin;
    const std::string bos = t.vars.value("bos_token", std::string());
    if (b->default_system) {  // qwen2_5 family
        const bool sys0 = !m.empty() && m[0].first == "system";
        out += "<|im_start|>system\n" + (sys0 ? m[0].second : std::string(b->default_system)) + "<|im_end|>\n";
        for (size_t k = 0; k < m.size(); k++) {
            if (m[k].first == "assistant") {
                out += "<|im_start|>assistant\n";
                learn(m[k].second + "<|im_end|>\n");
            } else if (m[k].first == "user" || k > 0) {
                out += "<|im_start|>" + m[k].first + "\n" + m[k].second + "<|im_end|>\n";
            }
        }
        if (gen) out += "<|im_start|>assistant\n";
    } else if (name == "qwen3") {
        if (!m.empty() && m[0].first == "system") out += "<|im_start|>system\n" + m[0].second + "<|im_end|>\n";
        size_t last_query = m.empty() ? 0 : m.size() - 1;  // the last user turn
        for (size_t k = m.size(); k-- > 0;)
            if (m[k].first == "user") {
                last_query = k;
                break;
            }
        for (size_t k = 0; k < m.size(); k++) {
            if (m[k].first == "assistant") {
                const std::string& c = m[k].second;
                std::string content = c, reasoning;
                if (c.find("</think>") != std::string::npos) {
                    content = lstrip(after_last(c, "</think>"), "\n");
                    reasoning = lstrip(after_last(rstrip(before_first(c, "</think>"), "\n"), "<think>"), "\n");
                }
                std::string turn;
                if (k > last_query && (k + 1 == m.size() || !reasoning.empty()))
                    turn = "<|im_start|>assistant\n<think>\n" + rstrip(lstrip(reasoning, "\n"), "\n") + "\n</think>\n\n" +
                           lstrip(content, "\n");
                else
                    turn = "<|im_start|>assistant\n" + content;
                learn(turn + "<|im_end|>\n");
            } else if (m[k].first == "user" || k > 0) {
                out += "<|im_start|>" + m[k].first + "\n" + m[k].second + "<|im_end|>\n";
            }
        }
        if (gen) out += "<|im_start|>assistant\n";
    } else if (name == "gemma3") {
        out += bos;
        std::string prefix;
        size_t first = 0;
        if (!m.empty() && m[0].first == "system") prefix = m[0].second + "\n\n", first = 1;
        for (size_t k = first; k < m.size(); k++) {
            if ((m[k].first == "user") != ((k - first) % 2 == 0))
                fail(strf("%s: conversation roles must alternate user/assistant/user/assistant/...", t.where.c_str()));
            const bool model = m[k].first == "assistant";
            out += "<start_of_turn>" + std::string(model ? "model" : m[k].first) + "\n" + (k == first ? prefix : "");
            // (LMFlow's generation block holds the newline its template writes before the block's end)
            if (model) learn(trim_ws(m[k].second) + "<end_of_turn>\n\n");
            else out += trim_ws(m[k].second) + "<end_of_turn>\n";
        }
        if (gen) out += "<start_of_turn>model\n";
    } else {  // deepseek_v3, deepseek_r1, deepseek_r1_distill
        std::string system;
        bool first_sp = true;
        for (const auto& [role, c] : m)
            if (role == "system") {
                if (name == "deepseek_r1_distill") system = c;  // the last one
                else system += (first_sp ? "" : "\n\n") + c;
                first_sp = false;
            }
        out += bos + system;
        for (const auto& [role, c] : m) {
            if (role == "user") out += "<｜User｜>" + c;
            if (role == "assistant") {
                std::string content = c;
                if (name != "deepseek_v3" && content.find("</think>") != std::string::npos)
                    content = after_last(content, "</think>");
                out += "<｜Assistant｜>";
                learn(content + "<｜end▁of▁sentence｜>");
            }
        }
        if (gen) out += name == "deepseek_r1_distill" ? "<｜Assistant｜><think>\n" : "<｜Assistant｜>";
    }
    if (gen) r.trained.clear();
    return r;
}

// ---------------------------------------------------------------- a model's own template


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
    if (!t.builtin.empty()) return builtin_render(t, messages, tools, add_generation_prompt);
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
