// Storage dtypes of weights (safetensors names) and conversions to and from fp32 compute.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace lisa {

enum class dtype : uint8_t { f32, bf16, f16, i32, i64 };

size_t      dtype_size(dtype t);                 // bytes per element
const char* dtype_name(dtype t);                 // safetensors spelling: "F32", "BF16", ...
bool        dtype_from_name(const std::string& s, dtype* out);  // false if unknown
const char* dtype_torch_name(dtype t);           // config.json spelling: "float32", "bfloat16", ...
bool        dtype_from_torch_name(const std::string& s, dtype* out);

inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
// round to nearest even; NaN stays NaN (quiet)
inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
float    f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Convert n elements of stored dtype `t` at `src` into fp32 `dst` (src may be unaligned).
void convert_to_f32(float* dst, const void* src, dtype t, size_t n);
// Convert n fp32 elements into dtype `t` at `dst` (f32, bf16 or f16).
void convert_from_f32(void* dst, const float* src, dtype t, size_t n);

}  // namespace lisa
