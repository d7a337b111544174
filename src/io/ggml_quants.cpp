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

// round to nearest, ties to even, as ggml's nearest_int (|x| < 2^22)
static int nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static void quantize_q4_0(const float* x, uint8_t* out, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32, out += 18) {
        float amax = 0.0f, max = 0.0f;  // the value of largest magnitude, with its sign
        for (int j = 0; j < 32; j++)
            if (amax < std::fabs(x[j])) amax = std::fabs(x[j]), max = x[j];
        const float d = max / -8, id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = f32_to_f16(d);
        std::memcpy(out, &dh, 2);
        for (int j = 0; j < 16; j++) {
            const uint8_t q0 = (uint8_t)std::min(15, (int)(int8_t)(x[j] * id + 8.5f));
            const uint8_t q1 = (uint8_t)std::min(15, (int)(int8_t)(x[16 + j] * id + 8.5f));
            out[2 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

// A 32-value sub-block's scale and min (returned as -min) for levels 0..nmax, searched by
// weighted least squares over a few candidate scales (ggml's make_qkx2_quants).
static float qkx2_scale(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux) {
    const float rmin = -1.0f, rdelta = 0.1f;
    const int nstep = 20;
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)std::max(0, std::min(nmax, l));
        const float diff = scale * L[i] + min - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = std::max(0, std::min(nmax, l));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D, this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0;
            for (int i = 0; i < n; i++) {
                const float diff = this_scale * Laux[i] + this_min - x[i];
                mad += w[i] * (diff * diff);
            }
            if (mad < best) {
                for (int i = 0; i < n; i++) L[i] = Laux[i];
                best = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

static void quantize_q4_K(const float* x, uint8_t* out, int64_t n) {
    for (int64_t b = 0; b < n / 256; b++, x += 256, out += 144) {
        uint8_t L[256], Laux[32], sc[12] = {};
        float weights[32], mins[8], scales[8], max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
            const float av_x = std::sqrt(sum_x2 / 32);
            for (int l = 0; l < 32; l++) weights[l] = av_x + std::fabs(x[32 * j + l]);
            scales[j] = qkx2_scale(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < 8; j++) {
            const uint8_t ls = (uint8_t)std::min(63, nearest_int(inv_scale * scales[j]));
            const uint8_t lm = (uint8_t)std::min(63, nearest_int(inv_min * mins[j]));
            if (j < 4) {
                sc[j] = ls;
                sc[j + 4] = lm;
            } else {
                sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
                sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
                sc[j] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        const uint16_t dh = f32_to_f16(max_scale / 63.f), mh = f32_to_f16(max_min / 63.f);
        std::memcpy(out, &dh, 2);
        std::memcpy(out + 2, &mh, 2);
        std::memcpy(out + 4, sc, 12);
        const float d_all = f16_to_f32(dh), m_all = f16_to_f32(mh);
        for (int j = 0; j < 8; j++) {
            uint8_t s, m;
            scale_min_k4(j, sc, &s, &m);
            const float d = d_all * s;
            if (d == 0.0f) continue;
            const float dm = m_all * m;
            for (int ii = 0; ii < 32; ii++) {
                const int l = nearest_int((x[32 * j + ii] + dm) / d);
                L[32 * j + ii] = (uint8_t)std::max(0, std::min(15, l));
            }
        }
        uint8_t* q = out + 16;
        for (int j = 0; j < 256; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

bool ggml_can_quantize(ggml_type t) { return t == ggml_type::q8_0 || t == ggml_type::q4_0 || t == ggml_type::q4_K; }

void ggml_quantize(ggml_type t, const float* x, uint8_t* out, int64_t n) {
    LISA_ASSERT(n % ggml_block_size(t) == 0, "ggml_quantize", "a whole number of blocks");
    switch (t) {
        case ggml_type::q8_0: quantize_q8_0(x, out, n); return;
        case ggml_type::q4_0: quantize_q4_0(x, out, n); return;
        case ggml_type::q4_K: quantize_q4_K(x, out, n); return;
        default: LISA_ASSERT(false, "ggml_quantize", "no quantizer for this type");
    }
}

}  // namespace lisa
