#version 450
#include "common.glsl"
// Gated units of the MLP, forward and backward: mode 0 SwiGLU forward h = silu(g)·u; 1 SwiGLU
// backward dg, du += ...; 2 GeGLU (tanh GELU) forward; 3 GeGLU backward.
layout(push_constant) uniform P { f32_buf h; f32_buf g; f32_buf u; f32_buf dg; f32_buf du; uint n; uint mode; } p;
const float kC = 0.7978845608028654;  // sqrt(2/pi)
void main() {
    GRID_LOOP(i, p.n) {
        const float g = p.g.v[i], u = p.u.v[i];
        if (p.mode == 0u) {
            p.h.v[i] = g / (1.0 + exp(-g)) * u;
        } else if (p.mode == 1u) {
            const float s = 1.0 / (1.0 + exp(-g)), dh = p.h.v[i];
            p.du.v[i] += dh * g * s;
            p.dg.v[i] += dh * u * (s + g * s * (1.0 - s));
        } else if (p.mode == 2u) {
            p.h.v[i] = 0.5 * g * (1.0 + tanh(kC * (g + 0.044715 * g * g * g))) * u;
        } else {
            const float th = tanh(kC * (g + 0.044715 * g * g * g)), dh = p.h.v[i];
            const float dgelu = 0.5 * (1.0 + th) + 0.5 * g * (1.0 - th * th) * kC * (1.0 + 3.0 * 0.044715 * g * g);
            p.du.v[i] += dh * 0.5 * g * (1.0 + th);
            p.dg.v[i] += dh * u * dgelu;
        }
    }
}
