#version 450
#include "common.glsl"
// C[M,N] = alpha · op(A)·op(B) + beta · C (row-major, strides lda/ldb/ldc), op = transpose when
// flags say so; B may be bf16 (frozen weights). 16x16 output tiles per workgroup, the inner
// dimension in steps of 16 through shared memory; each output sums its products in one fixed
// order, so results repeat bit for bit.
layout(push_constant) uniform P {
    f32_buf A; f32_buf B; u16_buf B16; f32_buf C;
    uint M, N, K, lda, ldb, ldc;
    float alpha, beta;
    uint flags;  // 1: A transposed, 2: B transposed, 4: B is bf16 (B16)
} p;
shared float As[16][17];
shared float Bs[16][17];
float load_a(uint i, uint k) { return (p.flags & 1u) != 0u ? p.A.v[k * p.lda + i] : p.A.v[i * p.lda + k]; }
float load_b(uint k, uint j) {
    const uint at = (p.flags & 2u) != 0u ? j * p.ldb + k : k * p.ldb + j;
    return (p.flags & 4u) != 0u ? uintBitsToFloat(uint(p.B16.v[at]) << 16) : p.B.v[at];
}
void main() {
    const uint tx = gl_LocalInvocationID.x % 16u, ty = gl_LocalInvocationID.x / 16u;
    const uint r0 = gl_WorkGroupID.y * 16u, c0 = gl_WorkGroupID.x * 16u;
    float acc = 0.0;
    for (uint k0 = 0u; k0 < p.K; k0 += 16u) {
        As[ty][tx] = (r0 + ty < p.M && k0 + tx < p.K) ? load_a(r0 + ty, k0 + tx) : 0.0;
        Bs[ty][tx] = (k0 + ty < p.K && c0 + tx < p.N) ? load_b(k0 + ty, c0 + tx) : 0.0;
        barrier();
        for (uint k = 0u; k < 16u; k++) acc += As[ty][k] * Bs[k][tx];
        barrier();
    }
    const uint r = r0 + ty, c = c0 + tx;
    if (r < p.M && c < p.N) {
        const uint at = r * p.ldc + c;
        p.C.v[at] = p.beta == 0.0 ? p.alpha * acc : p.alpha * acc + p.beta * p.C.v[at];
    }
}
