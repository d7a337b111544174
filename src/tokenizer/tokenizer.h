// Hugging Face tokenizer.json, natively: ids match the `tokenizers` library.
//
// Pipeline of encode (as in `tokenizers`):
//   1. added tokens are matched in the raw text (leftmost-longest, honouring lstrip/rstrip/
//      single_word) and never split further;
//   2. each other segment is normalized (NFC, Prepend, Replace, ...),
//   3. pre-tokenized into pieces (Split regex, ByteLevel, Digits, Metaspace, ...),
//   4. each piece is split by the BPE model (merges by rank, byte fallback, unk);
//   5. the post-processor adds special tokens (TemplateProcessing; tokenizer_config.json's
//      add_bos_token / add_eos_token where the file sets them).
// Input that is not valid UTF-8 is repaired first (each invalid sequence becomes U+FFFD).
// A file with a component that is not implemented is refused with the component named.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace lisa {

struct tokenizer;  // opaque; see tokenizer.cpp

// `path` is a model folder (tokenizer.json, and tokenizer_config.json if present) or a
// tokenizer.json file. Throws lisa::error naming the file and the component or field.
std::unique_ptr<tokenizer> tokenizer_load(const std::string& path);
void tokenizer_free(tokenizer* t);  // what unique_ptr<tokenizer> calls

// apply_file_truncation: cut to tokenizer.json's "truncation" settings as the `tokenizers`
// library does. Off by default, as in transformers (training uses --block_size instead).
std::vector<int32_t> tokenizer_encode(const tokenizer& t, const std::string& text, bool add_special_tokens,
                                      bool apply_file_truncation = false);
std::string          tokenizer_decode(const tokenizer& t, const std::vector<int32_t>& ids, bool skip_special_tokens);

int64_t     tokenizer_vocab_size(const tokenizer& t);             // largest id + 1 (model + added tokens)
// Refuses a tokenizer whose ordinary vocabulary has ids past the model's vocab_size (naming
// both sizes); added tokens past it are only warned about, since data rarely uses them.
void tokenizer_check_fits(const tokenizer& t, int64_t vocab_size, const std::string& tokenizer_where,
                          const std::string& model_where, const std::function<void(const std::string&)>& warn);
int32_t     tokenizer_token_to_id(const tokenizer& t, const std::string& token);  // -1 if unknown
std::string tokenizer_id_to_token(const tokenizer& t, int32_t id);               // "" if unknown
bool        tokenizer_is_special(const tokenizer& t, int32_t id);
// The input text a token stands for, for aligning ids with the text they came from: an added
// token's content, a byte-level token's bytes, a SentencePiece-style piece with U+2581 read as a
// space and <0xNN> as its byte. (A normalizer that rewrote the input, NFC say, can make this
// differ from the input; callers check the alignment.)
std::string tokenizer_token_text(const tokenizer& t, int32_t id);
int32_t     tokenizer_bos_id(const tokenizer& t);  // from tokenizer_config.json bos_token; -1 if none
int32_t     tokenizer_eos_id(const tokenizer& t);  // from tokenizer_config.json eos_token; -1 if none
int32_t     tokenizer_pad_id(const tokenizer& t);  // pad_token; -1 if none

}  // namespace lisa

// unique_ptr<tokenizer> needs the complete type's deleter
namespace std {
template <>
struct default_delete<lisa::tokenizer> {
    void operator()(lisa::tokenizer* t) const { lisa::tokenizer_free(t); }
};
}  // namespace std
