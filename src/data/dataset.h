// Datasets: every *.json and *.jsonl file of a folder, turned into token ids and labels
// (-100 = no loss) ready for batching. Each record maps to one of LMFlow's three types:
//
//   text_only     {"text": s}                  ids = encode(s, special) + EOS; loss on all
//   text2text     {"input": a, "output": b}    ids = encode(a, special) ++ encode(b) + EOS;
//                                              loss on the completion only
//   conversation  {"system"?: s, "messages": [{"role", "content", ...}], "tools"?: [...]}
//                 rendered with a chat template; loss on assistant turns and the tokens that
//                 close them (unless train_on_prompt)
//
// Files: an LMFlow .json {"type": T, "instances": [...]}; a .json list of records; a .jsonl file
// with a record a line. Records without an LMFlow type are recognised by their fields:
//   {"messages": [...]}                    OpenAI chat (system / user / assistant / tool turns)
//   {"conversations": [{"from", "value"}]} ShareGPT (human / gpt / system) -> conversation
//   {"instruction", "input"?, "output"}    Alpaca -> a conversation: user = instruction, then
//                                          "\n\n" + input if any; assistant = output; "system"?
//   {"text"} / {"input", "output"}          text_only / text2text
//
// Preference data (--objective dpo|orpo, issue #30): records with "chosen" and "rejected",
//   {"prompt": s, "chosen": s, "rejected": s}     plain text: prompt encoded with special tokens,
//                                                 each reply after it, then EOS
//   {"prompt": [msgs]?, "chosen": [msgs], "rejected": [msgs]}   chat (TRL's conversational form:
//        the prompt explicit, or implicit: the turns chosen and rejected share; a string prompt
//        beside full conversations, as ultrafeedback_binarized has, is the user turn they share)
//   {"prompt": [msgs], "chosen": s, "rejected": s}  chat, the replies one assistant turn each
//   LMFlow's paired_conversation: {"chosen": {"system"?, "messages": [...]}, "rejected": {...}}
// rendered with the chat template; only the reply's tokens are labelled (the prompt's assistant
// turns are context). dataset::samples holds the pairs in order: [2i] chosen, [2i+1] rejected.
// Errors name the file, the record (instances[i], [i] or line N) and the field.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

enum class dataset_type { text_only, text2text, conversation, preference };
const char* dataset_type_name(dataset_type t);

struct sample {
    std::vector<int32_t> ids;
    std::vector<int32_t> labels;  // same length as ids; -100 where no loss is taken
    // A packed row (--packing) holds several samples: each token's position within its own
    // sample, 0 where one starts (attention and RoPE stay inside each). Empty: one sample, 0..n-1.
    std::vector<int32_t> pos;
};

struct dataset_options {
    int64_t     block_size = 1024;          // longer sequences are truncated
    bool        truncate = true;             // false under --group_texts: samples are packed whole
                                             // into blocks afterwards, so nothing is cut here
    std::string conversation_template = "";  // a named template, when model_template is null
    const model_chat_template* model_template = nullptr;  // the model's Jinja template (auto)
    bool        train_on_prompt = false;     // conversation: also train on user/system turns
    int32_t     eos_id = -1;                 // appended after text_only and text2text samples
};

// Chooses the template of conversation data from --conversation_template (`name`) and the model
// folder: "auto" (the model's own, an error if it has none), "" (the model's own if it has one,
// else none: conversation data then stops with an error), a named template, or a .jinja file.
// Fills opt->conversation_template / opt->model_template (owned by *storage).
void dataset_choose_template(const std::string& name, const std::string& model_dir, const tokenizer& tok,
                             model_chat_template* storage, dataset_options* opt);

struct dataset {
    dataset_type             type = dataset_type::text_only;
    std::vector<sample>      samples;
    std::vector<std::string> files;            // files read, sorted
    int64_t                  n_instances = 0;  // instances in the files
    int64_t                  n_truncated = 0;  // samples cut to block_size
    int64_t                  n_dropped = 0;    // samples (preference: pairs) with no label token left
    int64_t                  n_piecewise = 0;  // conversations tokenized piece by piece (see chat_tokenize)
    std::vector<std::string> sources;          // per sample: "file: record" (what inspect-data shows)
    std::vector<std::string> notes;            // what the loader passed over, for the caller to print
};

// `path`: a .json / .jsonl file, or a folder of them (read in name order; LLaMA-Factory's
// dataset_info.json, which describes data rather than holding it, is passed over with a note).
dataset dataset_load(const std::string& path, const tokenizer& tok, const dataset_options& opt);

// Label tokens of a sample, in the shifted sense the loss uses (labels[1:] != -100).
int64_t sample_label_tokens(const sample& s);

// ---- batching
// How a batch's samples are laid out:
//   padded        one sample (or packed row) per row, right-padded to the longest: B × T
//   padding_free  every sample end to end in one row (B = 1, T = their total), positions
//                 restarting at each sample and attention kept inside it: no pad token computed
enum class batch_layout { padded, padding_free };
struct batch {
    int64_t              B = 0, T = 0;
    std::vector<int32_t> ids, labels;    // [B*T]
    std::vector<int32_t> pos;            // [B*T] positions within samples when a row holds several
                                         // (padding-free, packed rows); empty: 0..T-1 in each row
    int64_t              label_tokens = 0;
    int64_t              tokens = 0;     // tokens of samples; B·T - tokens is padding
};
// Order of samples for one epoch: shuffled with (seed, epoch) when shuffle is set.
std::vector<size_t> epoch_order(size_t n, uint64_t seed, int64_t epoch, bool shuffle);
// The same into an existing vector (no allocation once it has the capacity).
void epoch_order_into(std::vector<size_t>* order, size_t n, uint64_t seed, int64_t epoch, bool shuffle);
// HF --group_by_length: the epoch's order regrouped so that a batch holds samples of similar
// lengths: megabatches of `mega` consecutive samples of the (shuffled) order, each sorted longest
// first (equal lengths by sample index). Batches stay random across the epoch, and are the same
// for the same seed.
void order_group_by_length(std::vector<size_t>* order, const dataset& d, size_t mega);
batch make_batch(const dataset& d, const std::vector<size_t>& indices, int32_t pad_id,
                 batch_layout layout = batch_layout::padded);
// Fills an existing batch from samples indices[0..count) (no allocation once it has the capacity).
void make_batch_into(batch* b, const dataset& d, const size_t* indices, size_t count, int32_t pad_id,
                     batch_layout layout = batch_layout::padded);
// The padding share (0..1) of padded batches of `batch_size` over `order` (what padding-free
// batches save).
double padding_fraction(const dataset& d, const std::vector<size_t>& order, size_t batch_size);
// --group_texts: concatenate every sample (ids and labels) and cut into blocks of block_size;
// the remainder shorter than a block is dropped, as Hugging Face's run_clm does. Tokens attend
// across the samples of a block (LMFlow's behaviour).
void dataset_group_texts(dataset* d, int64_t block_size);
// --packing: rows of up to block_size tokens filled with whole samples in order, each attending
// only to itself (sample::pos); a sample longer than a row is cut into rows of block_size (the
// rest starting the next row). Nothing is dropped: the last row may be short.
void dataset_pack(dataset* d, int64_t block_size);

}  // namespace lisa
