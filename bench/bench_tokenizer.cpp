// Tokenizer throughput: encodes a text file (whole, in one call) with each tokenizer in
// ASSETS/tokenizers and prints "name tokens tokens_per_second" lines; bench/tokenizer.sh runs
// it beside the Hugging Face library. Run: build/bench_tokenizer ASSETS_DIR TEXT_FILE
#include <chrono>
#include <cstdio>
#include <string>

#include "io/fs.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: bench_tokenizer ASSETS_DIR TEXT_FILE\n");
        return 2;
    }
    std::string assets = argv[1], text = lisa::fs_read_text(argv[2]);
    for (const char* name : {"llama3", "qwen3", "mistral", "gpt2", "smollm2"}) {
        auto tok = lisa::tokenizer_load(assets + "/tokenizers/" + name);
        auto t0 = std::chrono::steady_clock::now();
        auto ids = lisa::tokenizer_encode(*tok, text, false);
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("%s %zu %.0f\n", name, ids.size(), ids.size() / s);
    }
}
