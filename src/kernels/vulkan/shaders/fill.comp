#version 450
#include "common.glsl"
// dst[i] = value
layout(push_constant) uniform P { f32_buf dst; uint n; float value; } p;
void main() { GRID_LOOP(i, p.n) p.dst.v[i] = p.value; }
