#include "cli/common.h"

#include "cli/commands.h"

#include "core/error.h"
#include "io/fs.h"
#include "model/lora.h"

namespace lisa {

std::unique_ptr<llama_model> load_model_with_lora(const std::string& dir, const std::string& lora_dir) {
    auto m = llama_model_load(dir);
    m->ctx.threads = cli_threads();
    if (!lora_dir.empty()) lora_merge_adapter(m.get(), lora_dir);
    return m;
}

std::unique_ptr<tokenizer> load_tokenizer_of(const std::string& dir) {
    if (fs_is_dir(dir) && !fs_is_file(fs_join(dir, "tokenizer.json")))
        fail(strf("%s: no tokenizer.json in the model folder (copy the base model's tokenizer files there)",
                  dir.c_str()));
    return tokenizer_load(dir);
}

}  // namespace lisa
