// lisa generate --model_name_or_path DIR --prompt STR [--max_new_tokens N] [--temperature T]
//               [--top_p P] [--top_k K] [--seed S] [--conversation_template auto|NAME|FILE.jinja]
//               [--system STR] [--lora_model_path DIR]
// Streams the continuation to stdout; greedy at temperature 0; stops at EOS (or the template's
// end-of-turn token). With a template the prompt is the user turn (after --system, if given),
// rendered with add_generation_prompt as Hugging Face would.
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "train/evaluate.h"
#include "core/error.h"
#include "data/dataset.h"
#include "infer/generate.h"

namespace lisa {

command_fn cmd_generate_register(CLI::App& app) {
    struct opts {
        std::string      model, prompt, tmpl, lora, system;
        generate_options g;
    };
    auto o = std::make_shared<opts>();
    app.add_option("--model_name_or_path", o->model, "Hugging Face model folder")->required();
    app.add_option("--prompt", o->prompt, "text to continue (the user message with --conversation_template)")->required();
    app.add_option("--max_new_tokens", o->g.max_new_tokens, "most tokens to generate (default 128)")->check(CLI::PositiveNumber);
    app.add_option("--temperature", o->g.temperature, "sampling temperature; 0 = greedy (default 0)")->check(CLI::NonNegativeNumber);
    app.add_option("--top_p", o->g.top_p, "nucleus sampling mass (default 1)")->check(CLI::Range(0.0, 1.0));
    app.add_option("--top_k", o->g.top_k, "sample among the K most likely tokens; 0 = all (default 0)")->check(CLI::NonNegativeNumber);
    app.add_option("--seed", o->g.seed, "random seed for sampling (default 42)");
    app.add_option("--conversation_template", o->tmpl,
                   "wrap the prompt as a user turn: auto (the model's own template), llama3, chatml, llama2, mistral, "
                   "empty, or a .jinja file");
    app.add_option("--system", o->system, "system prompt before the user turn (with --conversation_template)");
    app.add_option("--lora_model_path", o->lora, "PEFT adapter folder to apply");
    return [o] {
        auto m = load_model_with_lora(o->model, o->lora);
        auto tok = load_tokenizer_of(o->model);
        std::vector<int32_t> prompt;
        dataset_options dopt;
        model_chat_template chat_template;
        if (!o->tmpl.empty()) dataset_choose_template(o->tmpl, o->model, *tok, &chat_template, &dopt);
        if (o->tmpl.empty()) {
            if (!o->system.empty()) fail("--system needs --conversation_template (auto for the model's own)");
            prompt = tokenizer_encode(*tok, o->prompt, true);
        } else if (dopt.model_template) {
            nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
            if (!o->system.empty()) msgs.push_back({{"role", "system"}, {"content", o->system}});
            msgs.push_back({{"role", "user"}, {"content", o->prompt}});
            chat_render r = model_chat_template_render(chat_template, msgs, nullptr, true);
            prompt = tokenizer_encode(*tok, r.text, false);  // the template writes BOS itself, as HF
            std::vector<int32_t> eot = tokenizer_encode(*tok, chat_template.end_of_turn, false);
            for (int32_t id : eot)
                if (tokenizer_is_special(*tok, id)) o->g.stop_ids.push_back(id);
        } else {
            std::vector<chat_message> msgs;
            if (!o->system.empty()) msgs.push_back({"system", o->system});
            msgs.push_back({"user", o->prompt});
            for (const auto& seg : chat_template_render(o->tmpl, msgs, true)) {
                auto ids = tokenizer_encode(*tok, seg.text, false);
                prompt.insert(prompt.end(), ids.begin(), ids.end());
            }
            for (const auto& s : chat_template_stop_strings(o->tmpl)) {
                int32_t id = tokenizer_token_to_id(*tok, s);
                if (id >= 0) o->g.stop_ids.push_back(id);
            }
        }
        int32_t eos = resolve_eos_id(*tok, m->cfg);
        if (eos >= 0) o->g.stop_ids.push_back(eos);
        for (int64_t id : m->cfg.eos_token_ids) o->g.stop_ids.push_back((int32_t)id);
        // stream: print the newly decoded text after each token, holding back an incomplete character
        std::vector<int32_t> out;
        size_t printed = 0;
        auto flush = [&](bool final) {
            std::string text = tokenizer_decode(*tok, out, true);
            size_t end = text.size();
            if (!final && end >= 3 && text.compare(end - 3, 3, "\xef\xbf\xbd") == 0) end -= 3;
            if (end > printed) {
                std::fwrite(text.data() + printed, 1, end - printed, stdout);
                std::fflush(stdout);
                printed = end;
            }
        };
        generate(*m, prompt, o->g, [&](int32_t id) {
            out.push_back(id);
            flush(false);
        });
        flush(true);
        std::printf("\n");
    };
}

}  // namespace lisa
