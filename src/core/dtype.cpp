#include "core/dtype.h"

#include "core/error.h"

namespace lisa {

size_t dtype_size(dtype t) {
    switch (t) {
        case dtype::f32: return 4;
        case dtype::bf16: return 2;
        case dtype::f16: return 2;
        case dtype::i32: return 4;
        case dtype::i64: return 8;
    }
    return 0;
}

const char* dtype_name(dtype t) {
    switch (t) {
        case dtype::f32: return "F32";
        case dtype::bf16: return "BF16";
        case dtype::f16: return "F16";
        case dtype::i32: return "I32";
        case dtype::i64: return "I64";
    }
    return "?";
}

bool dtype_from_name(const std::string& s, dtype* out) {
    if (s == "F32") *out = dtype::f32;
    else if (s == "BF16") *out = dtype::bf16;
    else if (s == "F16") *out = dtype::f16;
    else if (s == "I32") *out = dtype::i32;
    else if (s == "I64") *out = dtype::i64;
    else return false;
    return true;
}

const char* dtype_torch_name(dtype t) {
    switch (t) {
        case dtype::f32: return "float32";
        case dtype::bf16: return "bfloat16";
        case dtype::f16: return "float16";
        case dtype::i32: return "int32";
        case dtype::i64: return "int64";
    }
    return "?";
}

bool dtype_from_torch_name(const std::string& s, dtype* out) {
    if (s == "float32" || s == "float") *out = dtype::f32;
    else if (s == "bfloat16") *out = dtype::bf16;
    else if (s == "float16" || s == "half") *out = dtype::f16;
    else return false;
    return true;
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {  // subnormal: renormalise
            int e = -1;
            do { man <<= 1; e++; } while ((man & 0x400u) == 0);
            man &= 0x3ffu;
            u = sign | (uint32_t)(127 - 15 - e) << 23 | man << 13;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | man << 13;
    } else {
        u = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return sign | 0x7e00u;   // NaN
    if (absu >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65536: inf
    if (absu < 0x38800000u) {                        // below smallest normal half: subnormal or 0
        if (absu < 0x33000000u) return sign;          // < 2^-25 rounds to 0
        uint32_t man = (absu & 0x7fffffu) | 0x800000u;
        // value = man * 2^(e-150) and the half subnormal unit is 2^-24: shift right by 126 - e
        int shift = 126 - (int)(absu >> 23);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t e = (absu >> 23) - 127 + 15;
    uint32_t man = absu & 0x7fffffu;
    uint32_t half = e << 10 | man >> 13;
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) half++;  // may carry into exponent: correct
    return sign | (uint16_t)half;
}

void convert_to_f32(float* dst, const void* src, dtype t, size_t n) {
    const uint8_t* s = (const uint8_t*)src;
    switch (t) {
        case dtype::f32: std::memcpy(dst, s, n * 4); return;
        case dtype::bf16:
            for (size_t i = 0; i < n; i++) {
                uint16_t h;
                std::memcpy(&h, s + 2 * i, 2);
                dst[i] = bf16_to_f32(h);
            }
            return;
        case dtype::f16:
            for (size_t i = 0; i < n; i++) {
                uint16_t h;
                std::memcpy(&h, s + 2 * i, 2);
                dst[i] = f16_to_f32(h);
            }
            return;
        default: fail(strf("convert_to_f32: dtype %s is not a floating-point weight dtype", dtype_name(t)));
    }
}

void convert_from_f32(void* dst, const float* src, dtype t, size_t n) {
    uint8_t* d = (uint8_t*)dst;
    switch (t) {
        case dtype::f32: std::memcpy(d, src, n * 4); return;
        case dtype::bf16:
            for (size_t i = 0; i < n; i++) {
                uint16_t h = f32_to_bf16(src[i]);
                std::memcpy(d + 2 * i, &h, 2);
            }
            return;
        case dtype::f16:
            for (size_t i = 0; i < n; i++) {
                uint16_t h = f32_to_f16(src[i]);
                std::memcpy(d + 2 * i, &h, 2);
            }
            return;
        default: fail(strf("convert_from_f32: dtype %s is not a floating-point weight dtype", dtype_name(t)));
    }
}

}  // namespace lisa
