// llama.cpp's own ggml and llama libraries as referees for GGUF reading (node-llama-cpp's prebuilt
// linux-x64 CPU binaries, installed by scripts/install-referees.sh): ggml quantizes and
// dequantizes blocks (ggml_quantize_chunk, the type traits' to_float), and llama.cpp quantizes
// whole GGUF files (llama_model_quantize) the way people's downloads were made. Loaded with
// dlopen, so the test binary links nothing of theirs; absent, the tests that need them skip.
#pragma once
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "io/fs.h"

namespace lisa_test {

struct ggml_referee {
    // ggml.h: struct ggml_type_traits (the fields this test reads; checked at load)
    struct traits {
        const char* type_name;
        int64_t     blck_size;
        int64_t     blck_size_interleave;
        size_t      type_size;
        bool        is_quantized;
        void (*to_float)(const void* x, float* y, int64_t k);
    };
    void* base = nullptr;
    void* llama = nullptr;
    const traits* (*get_traits)(int type) = nullptr;
    size_t (*quantize_chunk)(int type, const float* src, void* dst, int64_t start, int64_t nrows, int64_t n_per_row,
                             const float* imatrix) = nullptr;
    struct quant_params { int32_t nthread; int32_t ftype; unsigned char rest[248]; };  // llama.h, first fields
    quant_params (*quant_defaults)() = nullptr;
    uint32_t (*quantize_file)(const char* in, const char* out, const quant_params* p) = nullptr;
    std::string why;  // why not loaded

    bool load() {
        const std::string dir = std::string(LISA_BUILD_DIR) + "/referee/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";
        if (!lisa::fs_is_dir(dir)) return why = "llama.cpp referee not installed (scripts/install-referees.sh)", false;
        base = dlopen((dir + "/libggml-base.so").c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!base) return why = std::string("dlopen libggml-base.so: ") + dlerror(), false;
        get_traits = (decltype(get_traits))dlsym(base, "ggml_get_type_traits");
        quantize_chunk = (decltype(quantize_chunk))dlsym(base, "ggml_quantize_chunk");
        if (!get_traits || !quantize_chunk) return why = "libggml-base.so lacks ggml_get_type_traits / ggml_quantize_chunk", false;
        // the traits layout this header assumes: q4_K is a 256-value, 144-byte block type
        const traits* t = get_traits(12);
        if (!t || std::strcmp(t->type_name, "q4_K") != 0 || t->blck_size != 256 || t->type_size != 144)
            return why = "ggml_type_traits has another layout in this ggml", false;
        // llama.cpp's file quantizer (libggml.so and the CPU backend come along through its RPATH)
        for (const char* name : {"libllama.v0.4.0.so", "libllama.so"})
            if (!llama) llama = dlopen((dir + "/" + name).c_str(), RTLD_NOW | RTLD_LOCAL);
        if (llama) {
            quant_defaults = (decltype(quant_defaults))dlsym(llama, "llama_model_quantize_default_params");
            quantize_file = (decltype(quantize_file))dlsym(llama, "llama_model_quantize");
            // llama.h's defaults, which show the layout: nthread 0, ftype MOSTLY_Q8_0 (7; 9, Q5_1, before)
            if (quant_defaults) {
                quant_params p = quant_defaults();
                if (p.nthread != 0 || (p.ftype != 7 && p.ftype != 9)) quantize_file = nullptr;
            }
        }
        return true;
    }
    // Quantizes a whole GGUF file to llama.cpp's file type `ftype` (LLAMA_FTYPE_*); "" or why not.
    std::string quantize(const std::string& in, const std::string& out, int ftype) {
        if (!quantize_file) return "llama_model_quantize not available in this libllama";
        quant_params p = quant_defaults();
        p.ftype = ftype;
        p.nthread = 2;
        return quantize_file(in.c_str(), out.c_str(), &p) == 0 ? "" : "llama_model_quantize failed";
    }
};

}  // namespace lisa_test
