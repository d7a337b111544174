// lisa export-gguf --model_name_or_path DIR --outfile FILE.gguf [--outtype f32|f16|bf16|q8_0|q4_0|q4_K]
//                  [--lora_model_path ADAPTER [--adapter_only]] [--base_gguf FILE.gguf] [--overwrite]
// Writes a GGUF that llama.cpp / Ollama / LM Studio run (llama.cpp's converter's flag names).
// The file is locked while it is written, and an existing one is replaced only with --overwrite.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "export/export_gguf.h"
#include "export/modelfile.h"
#include "io/fs.h"

namespace lisa {

command_fn cmd_export_gguf_register(CLI::App& app) {
    struct opts {
        gguf_export_options g;
        bool                overwrite = false;
        std::string         modelfile;
    };
    auto o = std::make_shared<opts>();
    app.add_option("--model_name_or_path", o->g.model_dir, "Hugging Face model folder (with its tokenizer.json)")
        ->required();
    app.add_option("--outfile", o->g.outfile, "the .gguf file to write")->required();
    app.add_option("--outtype", o->g.outtype, "f32 | f16 | bf16 | q8_0 | q4_0 | q4_K (default f16; norms stay f32)");
    app.add_option("--lora_model_path", o->g.lora_dir, "PEFT adapter folder to merge in on the way");
    cli_add_bool(app, "--adapter_only", &o->g.lora_adapter,
                 "with --lora_model_path: write the adapter alone, as a GGUF LoRA adapter (f32) that llama.cpp "
                 "applies to the base model's GGUF with --lora, instead of merging it in");
    app.add_option("--base_gguf", o->g.base_gguf,
                   "the GGUF file the model was trained from: its quantized matrices that the model still holds "
                   "unchanged are copied as they are, not quantized again");
    cli_add_bool(app, "--overwrite", &o->overwrite, "replace FILE.gguf (and the --modelfile) if it exists");
    app.add_option("--modelfile", o->modelfile,
                   "also write an Ollama Modelfile here: FROM the GGUF, the chat format the model was trained in as "
                   "TEMPLATE, its end-of-turn token as stop");
    return [o] {
        gguf_export_options& g = o->g;
        gguf_outtype(g.outtype);  // a bad --outtype fails before any work
        if (g.lora_adapter && g.lora_dir.empty())
            fail("--adapter_only: needs --lora_model_path, the PEFT adapter folder to write");
        if (!g.base_gguf.empty() && !fs_is_file(g.base_gguf))
            fail(strf("--base_gguf %s: no such file; expected the GGUF file the model was trained from",
                      g.base_gguf.c_str()));
        size_t kept = 0;
        g.kept = &kept;
        if (fs_is_dir(g.outfile)) fail(strf("--outfile %s: is a folder; expected a file name such as model.gguf", g.outfile.c_str()));
        const std::filesystem::path parent = std::filesystem::path(g.outfile).parent_path();
        if (!parent.empty()) fs_mkdirs(parent.string());
        output_lock lock;
        output_lock_acquire(&lock, g.outfile, false, "lisa export-gguf", "--outfile",
                            [](const std::string& s) { cli_note("note: " + s); });
        if (fs_is_file(g.outfile) && !o->overwrite)
            fail(strf("--outfile %s: the file exists; pass --overwrite to replace it, or choose another name",
                      g.outfile.c_str()));
        if (!o->modelfile.empty() && fs_is_file(o->modelfile) && !o->overwrite)
            fail(strf("--modelfile %s: the file exists; pass --overwrite to replace it, or choose another name",
                      o->modelfile.c_str()));
        cli_progress bar("lisa export-gguf");
        bar.show("reading " + g.model_dir);
        g.on_tensor = [&bar, &g](size_t done, size_t total) {
            bar.show(strf("writing %s: tensor %zu of %zu (%s)", g.outfile.c_str(), done, total, g.outtype.c_str()));
        };
        // written under a temporary name and renamed: an old file stays whole until then
        const std::vector<std::string> warnings = export_gguf(g);
        bar.done();
        for (const std::string& w : warnings) cli_note("export-gguf: warning: " + w);
        if (kept) cli_note(strf("export-gguf: %zu matri%s copied in their original blocks from %s", kept,
                                kept == 1 ? "x" : "ces", g.base_gguf.c_str()));
        std::printf("wrote %s (%s, %.1f MB)\n", g.outfile.c_str(), g.lora_adapter ? "LoRA adapter, f32" : g.outtype.c_str(),
                    (double)std::filesystem::file_size(g.outfile) / 1e6);
        if (!o->modelfile.empty() && !g.lora_adapter)
            say_modelfile(o->modelfile, ollama_modelfile_write(o->modelfile, g.model_dir,
                                                                g.lora_dir.empty() ? g.model_dir : g.lora_dir, g.outfile));
    };
}

}  // namespace lisa
