#version 450
#include "common.glsl"
// Rotate-half RoPE in place on x [rows, H, hd]: the first `rot` values of each head, pairs i and
// i + rot/2, at the token's position (pos[row], or row % T when pos is null); sign -1: the
// transposed map (the backward).
layout(push_constant) uniform P { f32_buf x; f32_buf cs; f32_buf sn; i32_buf pos; uint rows, T, H, hd, rot; float sign; } p;
void main() {
    const uint half_ = p.rot / 2u;
    GRID_LOOP(k, p.rows * p.H * half_) {
        const uint i = k % half_, rh = k / half_, row = rh / p.H;
        const uint at = uint64_t(p.pos) != 0ul ? uint(p.pos.v[row]) : row % p.T;
        const uint o = rh * p.hd;
        const float c = p.cs.v[at * half_ + i], s = p.sign * p.sn.v[at * half_ + i];
        const float x1 = p.x.v[o + i], x2 = p.x.v[o + i + half_];
        p.x.v[o + i] = x1 * c - x2 * s;
        p.x.v[o + i + half_] = x2 * c + x1 * s;
    }
}
