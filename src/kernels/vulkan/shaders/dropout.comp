#version 450
#include "common.glsl"
// out = x ⊙ mask / (1-p), element i dropped when the splitmix64 draw of (key + i) falls under p:
// (z >> 11) < threshold = p·2^53, the same integers as every backend (core/rng.h), so the masks
// are the CPU's bit for bit
layout(push_constant) uniform P { f32_buf out_; f32_buf x; uint64_t key; uint64_t threshold; uint n; float keep_scale; } p;
void main() {
    GRID_LOOP(i, p.n) {
        uint64_t z = p.key + uint64_t(i) + 0x9e3779b97f4a7c15ul;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ul;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebul;
        z = z ^ (z >> 31);
        p.out_.v[i] = (z >> 11) < p.threshold ? 0.0 : p.x.v[i] * p.keep_scale;
    }
}
