// Tokenizer throughput: encodes a long multilingual text (about 1 MB) with each tokenizer in
// ../shared/assets and prints tokens/s and MB/s. Run: build/bench_tokenizer [ASSETS_DIR]
#include <chrono>
#include <cstdio>
#include <string>

#include "tokenizer/tokenizer.h"

static const char* kText =
    "The quick brown fox jumps over the lazy dog. It was 1999 and prices rose 12.5% in 3 months.\n"
    "def f(x):\n    return [i * 2 for i in range(x)]  # double\n"
    "Съешь же ещё этих мягких французских булок, да выпей чаю. "
    "日本語の文章と、中文的句子，还有한국어 문장. emoji 😀👍🏽 done!\n"
    "### Instruction:\nSummarize the following text in one sentence.\n\n### Response:\n";

int main(int argc, char** argv) {
    std::string assets = argc > 1 ? argv[1] : "../shared/assets";
    std::string text;
    while (text.size() < (1u << 20)) text += kText;
    std::printf("%-14s %10s %12s %8s %10s\n", "tokenizer", "tokens", "tokens/s", "MB/s", "load s");
    for (const char* name : {"llama3", "qwen3", "mistral", "gpt2", "smollm2"}) {
        auto t0 = std::chrono::steady_clock::now();
        auto tok = lisa::tokenizer_load(assets + "/tokenizers/" + name);
        auto t1 = std::chrono::steady_clock::now();
        // cold: every piece goes through BPE once; the cache then serves repeats, as in a dataset
        auto ids = lisa::tokenizer_encode(*tok, text, false);
        auto t2 = std::chrono::steady_clock::now();
        double s = std::chrono::duration<double>(t2 - t1).count();
        std::printf("%-14s %10zu %12.0f %8.2f %10.2f\n", name, ids.size(), ids.size() / s, text.size() / s / 1e6,
                    std::chrono::duration<double>(t1 - t0).count());
    }
}
