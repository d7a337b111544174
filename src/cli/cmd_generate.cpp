// lisa generate --model_name_or_path DIR (--prompt STR | --messages FILE.json) [--max_new_tokens N]
//               [--temperature T] [--top_p P] [--top_k K] [--seed S]
//               [--conversation_template auto|NAME|FILE.jinja] [--system STR] [--lora_model_path DIR]
// lisa generate --model_name_or_path DIR --prompts_file FILE.jsonl [the same flags]: one
//               completion per prompt, each written to stdout as a JSON line (evaluation)
// lisa chat     --model_name_or_path DIR [the same flags]: an interactive conversation on stdin
// Streams the continuation to stdout; greedy at temperature 0; stops at EOS (or the template's
// end-of-turn token). With a template the prompt is the user turn (after --system, if given), or
// --messages is the conversation to continue, rendered with add_generation_prompt as Hugging Face
// would; `lisa chat` keeps the turns.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "data/dataset.h"
#include "infer/generate.h"
#include "io/fs.h"
#include "train/evaluate.h"

namespace lisa {

namespace {

using ojson = nlohmann::ordered_json;

struct gen_opts {
    std::string      model, prompt, messages, tmpl, lora, system, prompts_file;
    generate_options g;
};

void add_common(CLI::App& app, gen_opts* o, bool chat) {
    app.add_option("--model_name_or_path", o->model, "Hugging Face model folder")->required();
    app.add_option("--max_new_tokens", o->g.max_new_tokens, "most tokens to generate (default 128)")->check(CLI::PositiveNumber);
    app.add_option("--temperature", o->g.temperature, "sampling temperature; 0 = greedy (default 0)")->check(CLI::NonNegativeNumber);
    app.add_option("--top_p", o->g.top_p, "nucleus sampling mass (default 1)")->check(CLI::Range(0.0, 1.0));
    app.add_option("--top_k", o->g.top_k, "sample among the K most likely tokens; 0 = all (default 0)")->check(CLI::NonNegativeNumber);
    app.add_option("--seed", o->g.seed, "random seed for sampling (default 42)");
    app.add_option("--conversation_template", o->tmpl,
                   cli_template_help() + (chat ? " (lisa chat: auto is the default)" : ""));
    app.add_option("--system", o->system, "system prompt before the first user turn (with a template)");
    app.add_option("--lora_model_path", o->lora, "PEFT adapter folder to apply");
}

// A model, its tokenizer and the chosen template: renders conversations and generates replies.
struct session {
    std::unique_ptr<decoder_model> m;
    std::unique_ptr<tokenizer>   tok;
    dataset_options              dopt;
    model_chat_template          chat_template;
    bool                         templated = false;
    generate_options             g;

    session(const gen_opts& o) : g(o.g) {
        m = load_model_with_lora(o.model, o.lora);
        tok = load_tokenizer_of(o.model);
        if (!o.tmpl.empty()) {
            dataset_choose_template(o.tmpl, o.model, *tok, &chat_template, &dopt);
            templated = true;
        }
        if (dopt.model_template)
            for (int32_t id : tokenizer_encode(*tok, chat_template.end_of_turn, false))
                if (tokenizer_is_special(*tok, id)) g.stop_ids.push_back(id);
        if (templated && !dopt.model_template)
            for (const auto& s : chat_template_stop_strings(o.tmpl)) {
                int32_t id = tokenizer_token_to_id(*tok, s);
                if (id >= 0) g.stop_ids.push_back(id);
            }
        int32_t eos = resolve_eos_id(*tok, m->cfg);
        if (eos >= 0) g.stop_ids.push_back(eos);
        for (int64_t id : m->cfg.eos_token_ids) g.stop_ids.push_back((int32_t)id);
    }

    // Prompt ids of a conversation ending in a user turn, with the assistant header after it.
    std::vector<int32_t> prompt_of(const ojson& msgs) {
        if (dopt.model_template)  // the template writes BOS itself, as HF
            return tokenizer_encode(*tok, model_chat_template_render(chat_template, msgs, nullptr, true).text, false);
        std::vector<chat_message> cm;
        for (const auto& mm : msgs) {
            if (!mm.contains("content") || !mm["content"].is_string())
                fail("the named templates take messages with a string 'content'");
            cm.push_back({mm.value("role", ""), mm["content"].get<std::string>()});
        }
        std::vector<int32_t> ids, labels;
        chat_segments_encode(*tok, dopt.conversation_template, chat_template_render(dopt.conversation_template, cm, true),
                             false, &ids, &labels);
        return ids;
    }

    // Says so when a generation ended because the model's context was full, not because it
    // finished or reached --max_new_tokens.
    void note_context(size_t prompt_n, const std::vector<int32_t>& out) const {
        const int64_t ctx = m->cfg.max_position_embeddings;
        if ((int64_t)out.size() >= g.max_new_tokens || (int64_t)(prompt_n + out.size()) < ctx) return;
        if (!out.empty() && std::find(g.stop_ids.begin(), g.stop_ids.end(), out.back()) != g.stop_ids.end()) return;
        std::fflush(stdout);
        std::fprintf(stderr, "lisa: note: stopped after %zu new tokens: the prompt's %zu and these fill the model's "
                             "context of %lld tokens (max_position_embeddings), short of --max_new_tokens %lld\n",
                     out.size(), prompt_n, (long long)ctx, (long long)g.max_new_tokens);
    }

    // Generates from prompt ids without printing; returns the text.
    std::string complete(const std::vector<int32_t>& prompt) {
        std::vector<int32_t> out;
        generate(*m, prompt, g, [&](int32_t id) { out.push_back(id); });
        note_context(prompt.size(), out);
        return tokenizer_decode(*tok, out, true);
    }

    // Generates from prompt ids, streaming the text to stdout; returns the text.
    std::string reply(const std::vector<int32_t>& prompt) {
        std::vector<int32_t> out;
        size_t printed = 0;
        std::string text;
        auto flush = [&](bool final) {
            text = tokenizer_decode(*tok, out, true);
            size_t end = text.size();  // hold back an incomplete character
            if (!final && end >= 3 && text.compare(end - 3, 3, "\xef\xbf\xbd") == 0) end -= 3;
            if (end > printed) {
                std::fwrite(text.data() + printed, 1, end - printed, stdout);
                std::fflush(stdout);
                printed = end;
            }
        };
        generate(*m, prompt, g, [&](int32_t id) {
            out.push_back(id);
            flush(false);
        });
        flush(true);
        std::printf("\n");
        note_context(prompt.size(), out);
        return text;
    }
};

ojson read_messages(const std::string& path) {
    ojson j;
    try {
        j = ojson::parse(fs_read_text(path));
    } catch (const nlohmann::json::exception& e) {
        fail(strf("%s: not valid JSON (%s)", path.c_str(), json_error(e).c_str()));
    }
    if (j.is_object() && j.contains("messages")) j = j["messages"];
    if (!j.is_array() || j.empty())
        fail(strf("%s: expected a list of {\"role\", \"content\"} (or {\"messages\": [...]})", path.c_str()));
    for (size_t k = 0; k < j.size(); k++)
        if (!j[k].is_object() || !j[k].contains("role") || !j[k]["role"].is_string())
            fail(strf("%s: messages[%zu]: field 'role': expected a string", path.c_str(), k));
    return j;
}

// --prompts_file: a JSON Lines file, each line {"prompt": "..."} (other fields are kept and
// passed through) or a bare JSON string. Checks every line before generating anything.
std::vector<ojson> read_prompts(const std::string& path) {
    std::string text = fs_read_text(path);
    std::vector<ojson> out;
    size_t p = 0;
    int64_t line_no = 0;
    while (p < text.size()) {
        size_t e = text.find('\n', p);
        if (e == std::string::npos) e = text.size();
        std::string line = text.substr(p, e - p);
        p = e + 1;
        line_no++;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        ojson j;
        try {
            j = ojson::parse(line);
        } catch (const nlohmann::json::exception& ex) {
            fail(strf("%s: line %lld: not valid JSON (%s)", path.c_str(), (long long)line_no, json_error(ex).c_str()));
        }
        if (j.is_string()) j = ojson{{"prompt", j}};
        if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
            fail(strf("%s: line %lld: field 'prompt': expected a string (or the line a JSON string)", path.c_str(),
                      (long long)line_no));
        out.push_back(std::move(j));
    }
    if (out.empty()) fail(strf("%s: no prompts (expected JSON Lines: {\"prompt\": \"...\"} per line)", path.c_str()));
    return out;
}

}  // namespace

command_fn cmd_generate_register(CLI::App& app) {
    auto o = std::make_shared<gen_opts>();
    add_common(app, o.get(), false);
    app.add_option("--prompt", o->prompt, "text to continue (the user message with --conversation_template)");
    app.add_option("--messages", o->messages,
                   "FILE.json: a conversation to continue ([{\"role\", \"content\"}, ...]; needs a template)");
    app.add_option("--prompts_file", o->prompts_file,
                   "FILE.jsonl: {\"prompt\": ...} per line; writes {..., \"completion\": ...} per line to stdout");
    return [o] {
        if ((int)!o->prompt.empty() + (int)!o->messages.empty() + (int)!o->prompts_file.empty() != 1)
            fail("lisa generate: give --prompt, --messages or --prompts_file (one of them)");
        if (o->tmpl.empty() && !o->system.empty()) fail("--system needs --conversation_template (auto for the model's own)");
        if (!o->prompts_file.empty()) {
            std::vector<ojson> prompts = read_prompts(o->prompts_file);  // all checked before any work
            session s(*o);
            for (ojson& j : prompts) {
                const std::string p = j["prompt"].get<std::string>();
                std::vector<int32_t> ids;
                if (s.templated) {
                    ojson msgs = ojson::array();
                    if (!o->system.empty()) msgs.push_back({{"role", "system"}, {"content", o->system}});
                    msgs.push_back({{"role", "user"}, {"content", p}});
                    ids = s.prompt_of(msgs);
                } else {
                    ids = tokenizer_encode(*s.tok, p, true);
                }
                j["completion"] = s.complete(ids);
                std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
                std::fwrite(line.data(), 1, line.size(), stdout);
                std::fflush(stdout);
            }
            return;
        }
        if (o->tmpl.empty() && !o->messages.empty()) fail("--messages needs --conversation_template (auto for the model's own)");
        session s(*o);
        if (!s.templated) {
            s.reply(tokenizer_encode(*s.tok, o->prompt, true));
            return;
        }
        ojson msgs = o->messages.empty() ? ojson::array() : read_messages(o->messages);
        if (!o->system.empty()) {
            if (!msgs.empty() && msgs[0].value("role", "") == "system")
                fail("--system and a system turn in --messages: give one");
            msgs.insert(msgs.begin(), ojson{{"role", "system"}, {"content", o->system}});
        }
        if (!o->prompt.empty()) msgs.push_back({{"role", "user"}, {"content", o->prompt}});
        s.reply(s.prompt_of(msgs));
    };
}

command_fn cmd_chat_register(CLI::App& app) {
    auto o = std::make_shared<gen_opts>();
    o->tmpl = "auto";
    add_common(app, o.get(), true);
    return [o] {
        if (o->tmpl == "auto") {  // the default here: a model without a template needs one named
            model_chat_template t;
            if (!model_chat_template_load(o->model, &t))
                fail(strf("lisa chat: %s has no chat template (no chat_template in tokenizer_config.json, no "
                          "chat_template.jinja): pass --conversation_template with one of "
                          "LMFlow's names (llama3, chatml, ...) or a .jinja file, or continue plain text with lisa generate --prompt", o->model.c_str()));
        }
        session s(*o);
        const bool tty = isatty(fileno(stdin));
        ojson msgs = ojson::array();
        if (!o->system.empty()) msgs.push_back({{"role", "system"}, {"content", o->system}});
        if (tty) std::fprintf(stderr, "(a conversation; an empty line or Ctrl-D ends it)\n");
        std::string line;
        while (true) {
            if (tty) std::fprintf(stderr, "> ");
            if (!std::getline(std::cin, line) || line.empty()) break;
            msgs.push_back({{"role", "user"}, {"content", line}});
            std::string text = s.reply(s.prompt_of(msgs));
            msgs.push_back({{"role", "assistant"}, {"content", text}});
        }
    };
}

}  // namespace lisa
