#version 450
#include "common.glsl"
// Cross-entropy over a chunk of logits rows [rows, V], a workgroup per row: loss[row] =
// logsumexp(z) - z[target] (z soft-capped when cap > 0), and the logits replaced in place by
// d loss / d logit · grad_scale (through the cap); rows without a target (< 0) get loss 0 and a
// zero gradient. Reductions by subgroups (reduce.glsl).
layout(push_constant) uniform P { f32_buf logits; i32_buf targets; f32_buf loss; uint rows, V; float grad_scale, cap; } p;
#include "reduce.glsl"
void main() {
    const uint t = gl_LocalInvocationID.x;
    for (uint n = gl_WorkGroupID.x; n < p.rows; n += gl_NumWorkGroups.x) {
        const uint o = n * p.V;
        const int target = p.targets.v[n];
        if (target < 0) {
            for (uint v = t; v < p.V; v += 256u) p.logits.v[o + v] = 0.0;
            if (t == 0u) p.loss.v[n] = 0.0;
            continue;
        }
        float m = -1.0 / 0.0;
        for (uint v = t; v < p.V; v += 256u) {
            float z = p.logits.v[o + v];
            if (p.cap > 0.0) z = p.cap * tanh(z / p.cap);
            p.logits.v[o + v] = z;  // capped from here on; the cap's derivative is 1 - (z/cap)²
            m = max(m, z);
        }
        memoryBarrierBuffer();  // the capped logits (z[target] above all) seen by the whole workgroup
        m = workgroup_max(m);
        float s = 0.0;
        for (uint v = t; v < p.V; v += 256u) s += exp(p.logits.v[o + v] - m);
        s = workgroup_sum(s);
        const float zt = p.logits.v[o + uint(target)];
        barrier();
        if (t == 0u) p.loss.v[n] = m + log(s) - zt;
        for (uint v = t; v < p.V; v += 256u) {
            const float z = p.logits.v[o + v];
            float d = (exp(z - m) / s - (v == uint(target) ? 1.0 : 0.0)) * p.grad_scale;
            if (p.cap > 0.0) d *= 1.0 - (z / p.cap) * (z / p.cap);
            p.logits.v[o + v] = d;
        }
    }
}
