#version 450
#include "common.glsl"
// Partial sums of squares in a fixed order: workgroup b sums block b (4096 values) as 256 strided
// fp32 sums reduced by subgroups (reduce.glsl); the host adds the partials in block order (in
// double). The same device gives the same bits on every run.
layout(push_constant) uniform P { f32_buf x; f32_buf part; uint n; } p;
#include "reduce.glsl"
void main() {
    const uint b = gl_WorkGroupID.x, t = gl_LocalInvocationID.x, base = b * 4096u;
    float acc = 0.0;
    for (uint k = 0u; k < 16u; k++) {
        const uint i = base + k * 256u + t;
        if (i < p.n) acc += p.x.v[i] * p.x.v[i];
    }
    const float total = workgroup_sum(acc);
    if (t == 0u) p.part.v[b] = total;
}
