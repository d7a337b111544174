// lisa export-gguf --model_name_or_path DIR --outfile FILE.gguf [--outtype f32|f16|bf16|q8_0]
//                  [--lora_model_path ADAPTER]
// Writes a GGUF that llama.cpp / Ollama / LM Studio run (llama.cpp's converter's flag names).
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "export/export_gguf.h"

namespace lisa {

command_fn cmd_export_gguf_register(CLI::App& app) {
    auto o = std::make_shared<gguf_export_options>();
    app.add_option("--model_name_or_path", o->model_dir, "Hugging Face model folder (with its tokenizer.json)")
        ->required();
    app.add_option("--outfile", o->outfile, "the .gguf file to write")->required();
    app.add_option("--outtype", o->outtype, "f32 | f16 | bf16 | q8_0 (default f16; norms stay f32)");
    app.add_option("--lora_model_path", o->lora_dir, "PEFT adapter folder to merge in on the way");
    return [o] {
        gguf_outtype(o->outtype);  // a bad --outtype fails before any work
        export_gguf(*o);
        std::printf("wrote %s (%s, %.1f MB)\n", o->outfile.c_str(), o->outtype.c_str(),
                    (double)std::filesystem::file_size(o->outfile) / 1e6);
    };
}

}  // namespace lisa
