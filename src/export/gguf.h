// GGUF, the model file of llama.cpp and Ollama (version 3), written natively.
//
// Layout: "GGUF", version, tensor count, key/value count; the key/values (typed metadata:
// architecture, hyper-parameters, vocabulary); one info per tensor (name, dims with the
// fastest-varying first, ggml type, offset); padding to the alignment (32); the tensor data,
// each tensor starting at a multiple of the alignment. All integers little-endian.
// The writer streams: metadata and infos are known up front, each tensor's bytes are produced
// by a callback when its turn comes, so a model is never held whole in memory.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "io/ggml_quants.h"  // ggml_type, ggml_nbytes, quantize_q8_0

namespace lisa {

// One tensor of the file: its name, dims as ggml counts them (ne[0] = the contiguous one, so a
// row-major [rows, cols] matrix is {cols, rows}), type, and the callback that writes exactly
// ggml_nbytes(type, numel) bytes.
struct gguf_tensor {
    std::string                      name;
    std::vector<int64_t>             ne;
    ggml_type                        type;
    std::function<void(std::FILE*)>  write;
    size_t nbytes() const;
};

// Metadata and tensors of a file to be written.
struct gguf_builder {
    std::string              kv;     // encoded key/value pairs
    uint64_t                 n_kv = 0;
    std::vector<gguf_tensor> tensors;

    void add_u32(const std::string& key, uint32_t v);
    void add_i32(const std::string& key, int32_t v);
    void add_u64(const std::string& key, uint64_t v);
    void add_f32(const std::string& key, float v);
    void add_bool(const std::string& key, bool v);
    void add_str(const std::string& key, const std::string& v);
    void add_str_array(const std::string& key, const std::vector<std::string>& v);
    void add_f32_array(const std::string& key, const std::vector<float>& v);
    void add_i32_array(const std::string& key, const std::vector<int32_t>& v);
};

// Writes the file atomically (a temporary name in the same folder, renamed when complete): an
// interrupted or failed export leaves no file under `path`.
void gguf_write(const std::string& path, const gguf_builder& b);

}  // namespace lisa
