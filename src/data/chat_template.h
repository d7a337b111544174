// Chat templates: how a conversation becomes the text (and the trained spans) a model sees.
//
// Two kinds:
//   - the model's own Jinja template (tokenizer_config.json "chat_template", chat_template.jinja
//     or chat_template.json), rendered natively as Hugging Face's apply_chat_template renders it
//     (src/template/jinja.h). This is `--conversation_template auto`, the default when the model
//     has one; a path to a .jinja file works the same way;
//   - the named templates (llama3, chatml, llama2, mistral, empty), written out in C++, for models
//     without a template of their own.
//
// Trained spans of a Jinja template (what the loss sees, unless --train_on_prompt):
//   - with `{% generation %}` blocks in the template: exactly those blocks, as HF's
//     return_assistant_tokens_mask;
//   - otherwise each assistant message's own text, found by rendering the conversation again with
//     that one message replaced by a sentinel: the bytes where the two renderings differ are the
//     message (its content, reasoning and tool calls as the template prints them). Text the
//     template adds around it (headers, Qwen3's empty think block) is the same in both and stays
//     untrained;
//   - then the end-of-turn marker: the special token (after optional whitespace) that the
//     template writes right after an assistant message, found once per template by rendering a
//     probe conversation (<|eot_id|>, <|im_end|>, <end_of_turn>, </s>, ...).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace lisa {

struct jinja_template;

// ---- named templates
struct chat_message {
    std::string role;     // "system", "user" or "assistant"
    std::string content;
};
struct chat_segment {
    std::string text;
    bool        trainable;          // assistant content and the tokens that close it
    bool        append_eos = false; // follow with the tokenizer's EOS id (templates without markers)
};
// Renders a conversation. add_generation_prompt: end with the assistant header (for generate).
std::vector<chat_segment> chat_template_render(const std::string& name, const std::vector<chat_message>& msgs,
                                               bool add_generation_prompt);
std::vector<std::string> chat_template_names();
// Extra stop strings a template's turns end with (e.g. "<|eot_id|>"), besides the model's EOS.
std::vector<std::string> chat_template_stop_strings(const std::string& name);

// ---- a model's own Jinja template
struct model_chat_template {
    std::string                           where;   // "DIR/tokenizer_config.json: chat_template", for messages
    std::shared_ptr<const jinja_template> tmpl;
    nlohmann::ordered_json                vars;    // bos_token, eos_token, unk_token, pad_token (strings)
    std::string                           end_of_turn;  // marker after an assistant message; "" if none
};

// Finds and parses the template of a model folder; false if the folder has none.
// Throws lisa::error naming the file on a template that does not parse.
bool model_chat_template_load(const std::string& model_dir, model_chat_template* out);
// A .jinja file given as --conversation_template, with the special tokens of model_dir.
model_chat_template model_chat_template_from_file(const std::string& path, const std::string& model_dir);
// Finds the end-of-turn marker (needs the tokenizer to know which tokens are special).
void model_chat_template_probe(model_chat_template* t, const tokenizer& tok);

struct chat_render {
    std::string                            text;
    std::vector<std::pair<size_t, size_t>> trained;  // byte ranges of `text` to learn, in order
};
// Renders messages (a JSON list of {"role", "content", ...}) with tools (null if none).
// With add_generation_prompt the text ends with the assistant header (for generate) and no spans
// are computed.
chat_render model_chat_template_render(const model_chat_template& t, const nlohmann::ordered_json& messages,
                                       const nlohmann::ordered_json& tools, bool add_generation_prompt);

// Token ids of a rendered conversation as HF tokenizes it (the whole text, add_special_tokens=False)
// and the label of each (-100 outside the trained ranges). Returns false if the ids could not be
// aligned with the text (a normalizer rewrote it); the caller then tokenizes piecewise.
bool chat_tokenize(const tokenizer& tok, const chat_render& r, bool train_all, std::vector<int32_t>* ids,
                   std::vector<int32_t>* labels);

}  // namespace lisa
