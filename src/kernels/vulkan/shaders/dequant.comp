#version 450
#include "common.glsl"
// fp32 values of a tensor in a ggml block type (io/ggml_quants.h): each value computed with the
// operations of ggml's reference dequantization in the same order, none fused ("precise"), so
// that they equal the CPU's bit for bit.
// mode 0: dst[i] = value first + i of the tensor, i < n (a tile of rows for a matrix product)
// mode 1: an embedding lookup: dst[r·D + c] = value tokens[r]·D + c, i = r·D + c < n
// src is the tensor's first block (4-byte aligned); blocks are read a byte at a time, since
// their sizes (18, 20, 22, 34, 210 bytes) leave most of them unaligned.
layout(buffer_reference, std430, buffer_reference_align = 4) buffer u32_buf { uint v[]; };
layout(push_constant) uniform P { u32_buf src; f32_buf dst; i32_buf tokens; uint n; uint type; uint D; uint mode; uint first; } p;

uint byte_at(uint o) { return (p.src.v[o >> 2] >> ((o & 3u) * 8u)) & 0xffu; }
float half_at(uint o) { return unpackHalf2x16(byte_at(o) | (byte_at(o + 1u) << 8)).x; }
int int8_at(uint o) { return int(byte_at(o) << 24) >> 24; }

// ggml_type numbers
const uint Q4_0 = 2u, Q4_1 = 3u, Q5_0 = 6u, Q5_1 = 7u, Q8_0 = 8u, Q4_K = 12u, Q5_K = 13u, Q6_K = 14u;

// the 6-bit scale and min of sub-block j of a q4_K / q5_K block's 12 scale bytes at s
uvec2 scale_min_k4(uint j, uint s) {
    if (j < 4u) return uvec2(byte_at(s + j) & 63u, byte_at(s + j + 4u) & 63u);
    return uvec2((byte_at(s + j + 4u) & 0xfu) | ((byte_at(s + j - 4u) >> 6) << 4),
                 (byte_at(s + j + 4u) >> 4) | ((byte_at(s + j) >> 6) << 4));
}

float value(uint e) {
    if (p.type == Q8_0) {
        const uint b = (e / 32u) * 34u, j = e % 32u;
        precise float v = float(int8_at(b + 2u + j)) * half_at(b);
        return v;
    }
    if (p.type == Q4_0 || p.type == Q4_1) {
        const bool q41 = p.type == Q4_1;
        const uint b = (e / 32u) * (q41 ? 20u : 18u), j = e % 32u;
        const uint qs = byte_at(b + (q41 ? 4u : 2u) + (j % 16u));
        const uint q = j < 16u ? (qs & 0xfu) : (qs >> 4);
        const float d = half_at(b);
        if (!q41) {
            precise float v = float(int(q) - 8) * d;
            return v;
        }
        precise float v = float(q) * d + half_at(b + 2u);
        return v;
    }
    if (p.type == Q5_0 || p.type == Q5_1) {
        const bool q51 = p.type == Q5_1;
        const uint b = (e / 32u) * (q51 ? 24u : 22u), j = e % 32u;
        const uint h = b + (q51 ? 4u : 2u);
        const uint qh = byte_at(h) | (byte_at(h + 1u) << 8) | (byte_at(h + 2u) << 16) | (byte_at(h + 3u) << 24);
        const uint qs = byte_at(b + (q51 ? 8u : 6u) + (j % 16u));
        const uint q = j < 16u ? ((qs & 0xfu) | (((qh >> j) << 4) & 0x10u)) : ((qs >> 4) | ((qh >> (j - 16u + 12u)) & 0x10u));
        const float d = half_at(b);
        if (!q51) {
            precise float v = float(int(q) - 16) * d;
            return v;
        }
        precise float v = float(q) * d + half_at(b + 2u);
        return v;
    }
    if (p.type == Q4_K || p.type == Q5_K) {
        const bool q5 = p.type == Q5_K;
        const uint b = (e / 256u) * (q5 ? 176u : 144u), j = e % 256u;
        const uint c = j / 64u, w = j % 64u, l = w % 32u, hi = w / 32u;  // 64-value chunk, its half, the lane
        const uvec2 sm = scale_min_k4(2u * c + hi, b + 4u);
        const uint qb = byte_at(b + (q5 ? 48u : 16u) + 32u * c + l);
        uint q = hi == 0u ? (qb & 0xfu) : (qb >> 4);
        if (q5 && (byte_at(b + 16u + l) & ((1u + hi) << (2u * c))) != 0u) q += 16u;
        precise float d1 = half_at(b) * float(sm.x);
        precise float m1 = half_at(b + 2u) * float(sm.y);
        precise float v = d1 * float(q) - m1;
        return v;
    }
    // Q6_K: 128-value halves, each four groups of 32 from low / high nibbles and 2-bit highs
    const uint b = (e / 256u) * 210u, j = e % 256u;
    const uint half_ = j / 128u, g = (j % 128u) / 32u, l = j % 32u;
    const uint ql = b + 64u * half_, qh = b + 128u + 32u * half_, sc = b + 192u + 8u * half_;
    const uint lo = byte_at(ql + l + ((g & 1u) != 0u ? 32u : 0u));
    const uint q = ((g < 2u ? (lo & 0xfu) : (lo >> 4)) | (((byte_at(qh + l) >> (2u * g)) & 3u) << 4));
    precise float v = half_at(b + 208u) * float(int8_at(sc + l / 16u + 2u * g)) * float(int(q) - 32);
    return v;
}

void main() {
    GRID_LOOP(i, p.n) {
        const uint e = p.mode == 0u ? p.first + i : uint(p.tokens.v[i / p.D]) * p.D + i % p.D;
        p.dst.v[i] = value(e);
    }
}
