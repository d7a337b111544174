// LMFlow datasets: every *.json file of a folder, {"type": T, "instances": [...]}, turned into
// token ids and labels (-100 = no loss) ready for batching.
//
//   text_only     {"text": s}                  ids = encode(s, special) + EOS; loss on all
//   text2text     {"input": a, "output": b}    ids = encode(a, special) ++ encode(b) + EOS;
//                                              loss on the completion only
//   conversation  {"system"?: s, "messages": [{"role": "user"|"assistant", "content": c}]}
//                 rendered with a chat template; loss on assistant turns and the tokens that
//                 close them (unless train_on_prompt)
// Errors name the file, the instance index and the field.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace lisa {

enum class dataset_type { text_only, text2text, conversation };
const char* dataset_type_name(dataset_type t);

struct sample {
    std::vector<int32_t> ids;
    std::vector<int32_t> labels;  // same length as ids; -100 where no loss is taken
};

struct dataset_options {
    int64_t     block_size = 1024;          // longer sequences are truncated
    std::string conversation_template = "";  // required for conversation data
    bool        train_on_prompt = false;     // conversation: also train on user/system turns
    int32_t     eos_id = -1;                 // appended after text_only and text2text samples
};

struct dataset {
    dataset_type             type = dataset_type::text_only;
    std::vector<sample>      samples;
    std::vector<std::string> files;            // files read, sorted
    int64_t                  n_instances = 0;  // instances in the files
    int64_t                  n_truncated = 0;  // samples cut to block_size
    int64_t                  n_dropped = 0;    // samples with no label token left (not trained on)
};

dataset dataset_load(const std::string& dir, const tokenizer& tok, const dataset_options& opt);

// Label tokens of a sample, in the shifted sense the loss uses (labels[1:] != -100).
int64_t sample_label_tokens(const sample& s);

// ---- chat templates
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

// ---- batching
struct batch {
    int64_t              B = 0, T = 0;   // right-padded to the longest sequence of the batch
    std::vector<int32_t> ids, labels;    // [B*T]
    int64_t              label_tokens = 0;
};
// Order of samples for one epoch: shuffled with (seed, epoch) when shuffle is set.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, bool shuffle);
// The same into an existing vector (no allocation once it has the capacity).
void epoch_order_into(std::vector<size_t>* order, size_t n, uint64_t seed, int64_t epoch, bool shuffle);
batch make_batch(const dataset& d, const std::vector<size_t>& indices, int32_t pad_id);
// Fills an existing batch from samples indices[0..count) (no allocation once it has the capacity).
void make_batch_into(batch* b, const dataset& d, const size_t* indices, size_t count, int32_t pad_id);
// --group_texts: concatenate every sample (ids and labels) and cut into blocks of block_size;
// the remainder shorter than a block is dropped, as Hugging Face's run_clm does.
void dataset_group_texts(dataset* d, int64_t block_size);

}  // namespace lisa
