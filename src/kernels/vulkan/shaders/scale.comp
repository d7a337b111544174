#version 450
#include "common.glsl"
// x[i] *= s, or x[i] = cap·tanh(x[i]/cap) when mode is 1
layout(push_constant) uniform P { f32_buf x; uint n; float s; uint mode; } p;
void main() {
    GRID_LOOP(i, p.n) {
        const float x = p.x.v[i];
        p.x.v[i] = p.mode == 1u ? p.s * tanh(x / p.s) : x * p.s;
    }
}
