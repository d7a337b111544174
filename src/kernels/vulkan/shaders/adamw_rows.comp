#version 450
#include "common.glsl"
// AdamW on a [rows, width] matrix whose gradient exists for some rows: row r's is
// grad[row_of[r]] when row_of[r] >= 0, else zero (the moments still decay), as adamw.comp
layout(push_constant) uniform P {
    f32_buf p; f32_buf g; i32_buf row_of; f32_buf m; f32_buf v; uint rows, width;
    float step_size, bc2_sqrt, b1, b2, eps, shrink, grad_scale;
} c;
void main() {
    GRID_LOOP(i, c.rows * c.width) {
        const int r = c.row_of.v[i / c.width];
        const float g = r >= 0 ? c.g.v[uint(r) * c.width + i % c.width] * c.grad_scale : 0.0;
        const float m = c.b1 * c.m.v[i] + (1.0 - c.b1) * g;
        const float v = c.b2 * c.v.v[i] + (1.0 - c.b2) * g * g;
        c.m.v[i] = m;
        c.v.v[i] = v;
        c.p.v[i] = c.p.v[i] * c.shrink - c.step_size * m / (sqrt(v) / c.bc2_sqrt + c.eps);
    }
}
