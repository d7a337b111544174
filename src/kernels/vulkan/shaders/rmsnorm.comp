#version 450
#include "common.glsl"
// RMSNorm with weight offset (Gemma stores w - 1): mode 0 forward y = x·rstd·(off + w), rstd
// saved; mode 1 dx += r·dy·s - r³·x·mean(dy·s·x) (s = off + w), a workgroup per row with a fixed
// subgroup reduction; mode 2 dw += Σ_n dy·x·rstd, an invocation per column summing rows in order.
layout(push_constant) uniform P {
    f32_buf y; f32_buf rstd; f32_buf x; f32_buf w; f32_buf dy; f32_buf dx; f32_buf dw;
    uint N, D; float eps, off; uint mode;
} p;
#include "reduce.glsl"
void main() {
    const uint t = gl_LocalInvocationID.x;
    if (p.mode == 2u) {
        GRID_LOOP(i, p.D) {
            float s = 0.0;
            for (uint n = 0u; n < p.N; n++) s += p.dy.v[n * p.D + i] * p.x.v[n * p.D + i] * p.rstd.v[n];
            p.dw.v[i] += s;
        }
        return;
    }
    for (uint n = gl_WorkGroupID.x; n < p.N; n += gl_NumWorkGroups.x) {
        const uint o = n * p.D;
        if (p.mode == 0u) {
            float ss = 0.0;
            for (uint i = t; i < p.D; i += 256u) ss += p.x.v[o + i] * p.x.v[o + i];
            const float r = inversesqrt(workgroup_sum(ss) / float(p.D) + p.eps);
            if (t == 0u) p.rstd.v[n] = r;
            for (uint i = t; i < p.D; i += 256u) p.y.v[o + i] = (p.off + p.w.v[i]) * (p.x.v[o + i] * r);
        } else {
            const float r = p.rstd.v[n];
            float dot = 0.0;
            for (uint i = t; i < p.D; i += 256u) dot += p.dy.v[o + i] * (p.off + p.w.v[i]) * p.x.v[o + i];
            dot = workgroup_sum(dot) / float(p.D);
            for (uint i = t; i < p.D; i += 256u)
                p.dx.v[o + i] += r * p.dy.v[o + i] * (p.off + p.w.v[i]) - r * r * r * p.x.v[o + i] * dot;
        }
    }
}
