// Compiled with -ffp-contract=off (CMakeLists.txt): a fused multiply-add would round the
// dequantized values differently from ggml's reference code.
#include "io/ggml_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace lisa {

bool ggml_type_known(uint32_t t) {
    switch ((ggml_type)t) {
        case ggml_type::f32:
        case ggml_type::f16:
        case ggml_type::q4_0:
        case ggml_type::q4_1:
        case ggml_type::q5_0:
        case ggml_type::q5_1:
        case ggml_type::q8_0:
        case ggml_type::q4_K:
        case ggml_type::q5_K:
        case ggml_type::q6_K:
        case ggml_type::bf16: return true;
    }
    return false;
}

const char* ggml_type_name(ggml_type t) {
    switch (t) {
        case ggml_type::f32: return "f32";
        case ggml_type::f16: return "f16";
        case ggml_type::q4_0: return "q4_0";
        case ggml_type::q4_1: return "q4_1";
        case ggml_type::q5_0: return "q5_0";
        case ggml_type::q5_1: return "q5_1";
        case ggml_type::q8_0: return "q8_0";
        case ggml_type::q4_K: return "q4_K";
        case ggml_type::q5_K: return "q5_K";
        case ggml_type::q6_K: return "q6_K";
        case ggml_type::bf16: return "bf16";
    }
    return "?";
}

int64_t ggml_block_size(ggml_type t) {
    switch (t) {
        case ggml_type::f32:
        case ggml_type::f16:
        case ggml_type::bf16: return 1;
        case ggml_type::q4_K:
        case ggml_type::q5_K:
        case ggml_type::q6_K: return 256;
        default: return 32;
    }
}

size_t ggml_block_bytes(ggml_type t) {
    switch (t) {
        case ggml_type::f32: return 4;
        case ggml_type::f16:
        case ggml_type::bf16: return 2;
        case ggml_type::q4_0: return 2 + 16;           // d, 32 nibbles
        case ggml_type::q4_1: return 2 + 2 + 16;       // d, m, 32 nibbles
        case ggml_type::q5_0: return 2 + 4 + 16;       // d, 32 high bits, 32 nibbles
        case ggml_type::q5_1: return 2 + 2 + 4 + 16;   // d, m, high bits, nibbles
        case ggml_type::q8_0: return 2 + 32;           // d, 32 int8
        case ggml_type::q4_K: return 2 + 2 + 12 + 128; // d, dmin, 8 6-bit scale/min pairs, 256 nibbles
        case ggml_type::q5_K: return 2 + 2 + 12 + 32 + 128;  // q4_K plus 256 high bits
        case ggml_type::q6_K: return 128 + 64 + 16 + 2;      // low nibbles, high 2 bits, 16 int8 scales, d
    }
    return 0;
}

size_t ggml_nbytes(ggml_type t, int64_t n) {
    const int64_t bs = ggml_block_size(t);
    LISA_ASSERT(n % bs == 0, "ggml_nbytes", "a block type needs a whole number of blocks");
    return (size_t)(n / bs) * ggml_block_bytes(t);
}

static float half_at(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return f16_to_f32(h);
}

// the 6-bit scale and min of sub-block j of a q4_K / q5_K block (8 pairs packed in 12 bytes)
static void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void ggml_dequantize(ggml_type t, const uint8_t* src, float* y, int64_t n) {
    const int64_t bs = ggml_block_size(t), nb = n / bs;
    LISA_ASSERT(n % bs == 0, "ggml_dequantize", "a block type needs a whole number of blocks");
    const size_t bb = ggml_block_bytes(t);
    switch (t) {
        case ggml_type::f32: std::memcpy(y, src, (size_t)n * 4); return;
        case ggml_type::f16: convert_to_f32(y, src, dtype::f16, (size_t)n); return;
        case ggml_type::bf16: convert_to_f32(y, src, dtype::bf16, (size_t)n); return;
        default: break;
    }
    for (int64_t b = 0; b < nb; b++, src += bb) {
        switch (t) {
            case ggml_type::q4_0: {
                const float d = half_at(src);
                const uint8_t* qs = src + 2;
                for (int j = 0; j < 16; j++) {
                    y[j] = (float)((qs[j] & 0x0F) - 8) * d;
                    y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
                }
                y += 32;
                break;
            }
            case ggml_type::q4_1: {
                const float d = half_at(src), m = half_at(src + 2);
                const uint8_t* qs = src + 4;
                for (int j = 0; j < 16; j++) {
                    y[j] = (float)(qs[j] & 0x0F) * d + m;
                    y[j + 16] = (float)(qs[j] >> 4) * d + m;
                }
                y += 32;
                break;
            }
            case ggml_type::q5_0:
            case ggml_type::q5_1: {
                const bool q51 = t == ggml_type::q5_1;
                const float d = half_at(src), m = q51 ? half_at(src + 2) : 0.0f;
                uint32_t qh;
                std::memcpy(&qh, src + (q51 ? 4 : 2), 4);
                const uint8_t* qs = src + (q51 ? 8 : 6);
                for (int j = 0; j < 16; j++) {
                    const uint8_t h0 = (uint8_t)(((qh >> j) << 4) & 0x10), h1 = (uint8_t)((qh >> (j + 12)) & 0x10);
                    if (q51) {
                        y[j] = (float)((qs[j] & 0x0F) | h0) * d + m;
                        y[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
                    } else {
                        y[j] = (float)(((qs[j] & 0x0F) | h0) - 16) * d;
                        y[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
                    }
                }
                y += 32;
                break;
            }
            case ggml_type::q8_0: {
                const float d = half_at(src);
                for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)src[2 + j] * d;
                y += 32;
                break;
            }
            case ggml_type::q4_K:
            case ggml_type::q5_K: {
                const bool q5 = t == ggml_type::q5_K;
                const float d = half_at(src), dmin = half_at(src + 2);
                const uint8_t* scales = src + 4;
                const uint8_t* qh = src + 16;                // q5_K only
                const uint8_t* q = src + (q5 ? 48 : 16);
                uint8_t u1 = 1, u2 = 2;
                for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
                    uint8_t sc, mn;
                    scale_min_k4(is, scales, &sc, &mn);
                    const float d1 = d * sc, m1 = dmin * mn;
                    scale_min_k4(is + 1, scales, &sc, &mn);
                    const float d2 = d * sc, m2 = dmin * mn;
                    for (int l = 0; l < 32; l++) *y++ = d1 * (float)((q[l] & 0xF) + (q5 && (qh[l] & u1) ? 16 : 0)) - m1;
                    for (int l = 0; l < 32; l++) *y++ = d2 * (float)((q[l] >> 4) + (q5 && (qh[l] & u2) ? 16 : 0)) - m2;
                    u1 = (uint8_t)(u1 << 2);
                    u2 = (uint8_t)(u2 << 2);
                }
                break;
            }
            case ggml_type::q6_K: {
                const uint8_t* ql = src;
                const uint8_t* qh = src + 128;
                const int8_t* sc = (const int8_t*)(src + 192);
                const float d = half_at(src + 208);
                for (int n0 = 0; n0 < 256; n0 += 128, y += 128, ql += 64, qh += 32, sc += 8)
                    for (int l = 0; l < 32; l++) {
                        const int is = l / 16;
                        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        y[l] = d * (float)sc[is] * (float)q1;
                        y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                        y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                        y[l + 96] = d * (float)sc[is + 6] * (float)q4;
                    }
                break;
            }
            default: LISA_ASSERT(false, "ggml_dequantize", "type not handled");
        }
    }
}

void quantize_q8_0(const float* x, uint8_t* out, int64_t n) {
    LISA_ASSERT(n % 32 == 0, "quantize_q8_0", "n must be a multiple of 32");
    for (int64_t b = 0; b < n / 32; b++, x += 32, out += 34) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[i]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = f32_to_f16(d);
        std::memcpy(out, &dh, 2);
        for (int i = 0; i < 32; i++) out[2 + i] = (uint8_t)(int8_t)std::lround(x[i] * id);
    }
}

}  // namespace lisa
