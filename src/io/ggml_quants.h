// ggml's tensor types as GGUF files store them: the type numbers, block sizes and block layouts
// of llama.cpp's ggml (the types of the files people download), and their dequantization to
// fp32. A block type packs `block_size` values into `block_bytes` bytes; a row of a GGUF matrix
// is a whole number of blocks.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lisa {

// ggml's numbering (enum ggml_type); the ones lisa.cpp reads. Others are refused by number.
enum class ggml_type : uint32_t {
    f32 = 0,
    f16 = 1,
    q4_0 = 2,
    q4_1 = 3,
    q5_0 = 6,
    q5_1 = 7,
    q8_0 = 8,
    q4_K = 12,
    q5_K = 13,
    q6_K = 14,
    bf16 = 30,
};

// Is t one of the types above?
bool        ggml_type_known(uint32_t t);
const char* ggml_type_name(ggml_type t);  // "q4_K"; "?" if unknown
int64_t     ggml_block_size(ggml_type t);  // values per block: 1, 32 or 256
size_t      ggml_block_bytes(ggml_type t); // bytes per block
// Bytes of n values (n a multiple of the block size for block types).
size_t      ggml_nbytes(ggml_type t, int64_t n);

// n values (a multiple of the block size) of type t at src, as fp32, exactly as ggml's
// reference dequantization computes them (same operations in the same order: bit for bit).
void ggml_dequantize(ggml_type t, const uint8_t* src, float* dst, int64_t n);

// q8_0 as llama.cpp defines it: blocks of 32 values, each an fp16 scale d = max|x| / 127
// followed by 32 int8 q = round(x / d). n must be a multiple of 32.
void quantize_q8_0(const float* x, uint8_t* out, int64_t n);
// n values (a multiple of the block size) in type t, as ggml's reference quantizers make them
// without an importance matrix (bit for bit): q8_0, q4_0 and q4_K.
bool ggml_can_quantize(ggml_type t);
void ggml_quantize(ggml_type t, const float* x, uint8_t* out, int64_t n);

}  // namespace lisa
