#version 450
#include "common.glsl"
// y[i] += x[i]
layout(push_constant) uniform P { f32_buf y; f32_buf x; uint n; } p;
void main() { GRID_LOOP(i, p.n) p.y.v[i] += p.x.v[i]; }
