#version 450
#include "common.glsl"
// mode 0: y[n, o] += b[o] over N rows of `width`; mode 1: db[o] += Σ_n dy[n, o], one invocation
// per column summing the rows in order
layout(push_constant) uniform P { f32_buf y; f32_buf b; uint N; uint width; uint mode; } p;
void main() {
    if (p.mode == 0u) {
        GRID_LOOP(i, p.N * p.width) p.y.v[i] += p.b.v[i % p.width];
    } else {
        GRID_LOOP(o, p.width) {
            float s = 0.0;
            for (uint n = 0u; n < p.N; n++) s += p.y.v[n * p.width + o];
            p.b.v[o] += s;
        }
    }
}
