#include "cli/common.h"

#include "core/error.h"
#include "io/fs.h"
#include "model/lora.h"

namespace lisa {

std::unique_ptr<llama_model> load_model_with_lora(const std::string& dir, const std::string& lora_dir) {
    auto m = llama_model_load(dir);
    if (!lora_dir.empty()) lora_merge_adapter(m.get(), lora_dir);
    return m;
}

std::unique_ptr<tokenizer> load_tokenizer_of(const std::string& dir) {
    if (fs_is_dir(dir) && !fs_is_file(fs_join(dir, "tokenizer.json")))
        fail(strf("%s: no tokenizer.json in the model folder (copy the base model's tokenizer files there)",
                  dir.c_str()));
    return tokenizer_load(dir);
}

int32_t eos_id_of(const tokenizer& tok, const llama_model& m) {
    if (tokenizer_eos_id(tok) >= 0) return tokenizer_eos_id(tok);
    return m.cfg.eos_token_ids.empty() ? -1 : (int32_t)m.cfg.eos_token_ids[0];
}

int64_t resolve_block_size(int64_t requested, const llama_model& m) {
    const int64_t max_pos = m.cfg.max_position_embeddings;
    if (requested <= 0) return std::min<int64_t>(1024, max_pos);
    if (requested > max_pos)
        fail(strf("--block_size %lld exceeds the model's max_position_embeddings %lld", (long long)requested,
                  (long long)max_pos));
    return requested;
}

}  // namespace lisa
