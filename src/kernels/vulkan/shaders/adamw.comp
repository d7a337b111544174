#version 450
#include "common.glsl"
// One AdamW step (torch.optim.AdamW) on n values, as the CPU backend forms it: the constants
// (lr / bias correction 1, sqrt of bias correction 2, the decay factor) come from the host in fp32.
layout(push_constant) uniform P {
    f32_buf p; f32_buf g; f32_buf m; f32_buf v; uint n;
    float step_size, bc2_sqrt, b1, b2, eps, shrink, grad_scale;
} c;
void main() {
    GRID_LOOP(i, c.n) {
        const float g = c.g.v[i] * c.grad_scale;
        const float m = c.b1 * c.m.v[i] + (1.0 - c.b1) * g;
        const float v = c.b2 * c.v.v[i] + (1.0 - c.b2) * g * g;
        c.m.v[i] = m;
        c.v.v[i] = v;
        c.p.v[i] = c.p.v[i] * c.shrink - c.step_size * m / (sqrt(v) / c.bc2_sqrt + c.eps);
    }
}
