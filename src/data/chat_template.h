// Chat templates: how a conversation becomes the text (and the trained spans) a model sees.
//
// Two kinds:
//   - the model's own Jinja template (tokenizer_config.json "chat_template", chat_template.jinja
//     or chat_template.json), rendered natively as Hugging Face's apply_chat_template renders it
//     (src/template/jinja.h). This is `--conversation_template auto`, the default when the model
//     has one; a path to a .jinja file works the same way;
//   - the named templates: LMFlow's presets by their LMFlow names (chatml, llama3, qwen2, gemma,
//     phi3, ...), encoded exactly as LMFlow encodes them (see below), for LMFlow users and for
//     models without a template of their own.
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

// ---- named templates: LMFlow's presets (src/data/chat_template.cpp lists them)
//
// A named template is encoded as LMFlow's ConversationTemplate encodes a conversation: turn by
// turn, each piece of text encoded on its own (add_special_tokens=False), so SentencePiece's
// dummy prefix falls where LMFlow puts it; BOS / EOS where the template names them; a trailing
// user turn dropped; every token of an assistant turn learned, its header and end marker
// included (LMFlow's labels), the rest context.
struct chat_message {
    std::string role;     // "system", "user" or "assistant"
    std::string content;
};
struct chat_segment {
    enum kind_t { piece_text, bos, eos, token_id };
    std::string text;               // kind piece_text: encoded on its own
    bool        trainable;          // part of an assistant turn
    kind_t      kind = piece_text;
    int32_t     id = -1;            // kind token_id: this id
    int         turn = -1;          // the message (index into the rendered list) it belongs to; -1: none
    int32_t     strip_trailing_id = -1;  // drop this id if the piece's encoding ends with it (LMFlow's
                                         // remove_last_sep)
};
// Renders a conversation (an optional system message first, then user / assistant turns).
// add_generation_prompt: the conversation ends with a user turn; the assistant's opening follows.
// tools: LMFlow's list (strings), shown where the template shows them (hymba), else ignored with a
// warning (appended to *warnings). Throws lisa::error (naming the template) on what it cannot take.
std::vector<chat_segment> chat_template_render(const std::string& name, const std::vector<chat_message>& msgs,
                                               bool add_generation_prompt, const nlohmann::ordered_json* tools = nullptr,
                                               std::vector<std::string>* warnings = nullptr);
// Ids and labels of rendered segments (labels -100 outside assistant turns unless train_all);
// turn (optional) gets each id's message. Throws naming the template when it needs a BOS or EOS
// the tokenizer lacks.
void chat_segments_encode(const tokenizer& tok, const std::string& name, const std::vector<chat_segment>& segs,
                          bool train_all, std::vector<int32_t>* ids, std::vector<int32_t>* labels,
                          std::vector<int>* turn = nullptr);
// Every name: LMFlow's presets (and their aliases), then ours (mistral).
std::vector<std::string> chat_template_names();
bool chat_template_is_named(const std::string& name);
// What a name is for (docs and --help): the model family.
std::string chat_template_purpose(const std::string& name);
// The special tokens a template writes as text; each must be one token of the tokenizer.
std::vector<std::string> chat_template_markers(const std::string& name);
// Extra stop strings a template's turns end with (e.g. "<|eot_id|>"), besides the model's EOS.
std::vector<std::string> chat_template_stop_strings(const std::string& name);

// ---- a model's own Jinja template
struct model_chat_template {
    std::string                           where;   // "DIR/tokenizer_config.json: chat_template", for messages
    std::shared_ptr<const jinja_template> tmpl;
    nlohmann::ordered_json                vars;    // bos_token, eos_token, unk_token, pad_token (strings)
    std::string                           end_of_turn;  // marker after an assistant message; "" if none
    std::string                           builtin;  // one of LMFlow's Jinja presets (qwen2_5, qwen3, gemma3,
                                                    // deepseek_r1, ...) rendered natively instead of tmpl
};

// LMFlow's presets that are Jinja templates (qwen2_5, qwen2_5_1m, qwen2_5_math, qwen_qwq, qwen3,
// gemma3, deepseek_v3, deepseek_r1, deepseek_r1_distill): LMFlow renders them with Hugging Face's
// apply_chat_template and learns their {% generation %} blocks; here they are written out for
// conversations of system, user and assistant turns and tokenized as the whole text, as HF does.
bool chat_template_is_builtin_jinja(const std::string& name);
// Fills *out for one of them; bos_token: the tokenizer's BOS text (gemma3 and deepseek write it).
void chat_template_builtin(const std::string& name, const std::string& bos_token, model_chat_template* out);

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
