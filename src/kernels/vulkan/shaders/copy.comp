#version 450
#include "common.glsl"
// dst[i] = src[i] (the ranges do not overlap)
layout(push_constant) uniform P { f32_buf dst; f32_buf src; uint n; } p;
void main() { GRID_LOOP(i, p.n) p.dst.v[i] = p.src.v[i]; }
