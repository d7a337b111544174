#version 450
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
// C[M,N] = alpha · op(A)·op(B) + beta · C (row-major, strides lda/ldb/ldc), op = transpose when
// flags say so; B may be bf16 (frozen weights). A workgroup computes a 64x64 tile of C, each of
// its 256 invocations a 4x4 block of it (rows ty + 16i, columns tx + 16j), the inner dimension
// in steps of 16 through shared memory. Each output sums its products in k order: results repeat
// bit for bit.
layout(push_constant) uniform P {
    f32_buf A; f32_buf B; u16_buf B16; f32_buf C;
    uint M, N, K, lda, ldb, ldc;
    float alpha, beta;
    uint flags;  // 1: A transposed, 2: B transposed, 4: B is bf16 (B16)
} p;
shared float As[64][17];
shared float Bs[16][65];
float load_a(uint i, uint k) { return (p.flags & 1u) != 0u ? p.A.v[k * p.lda + i] : p.A.v[i * p.lda + k]; }
float load_b(uint k, uint j) {
    const uint at = (p.flags & 2u) != 0u ? j * p.ldb + k : k * p.ldb + j;
    return (p.flags & 4u) != 0u ? uintBitsToFloat(uint(p.B16.v[at]) << 16) : p.B.v[at];
}
void main() {
    const uint lid = gl_LocalInvocationID.x, tx = lid % 16u, ty = lid / 16u;
    const uint r0 = gl_WorkGroupID.y * 64u, c0 = gl_WorkGroupID.x * 64u;
    float acc[4][4];
    [[unroll]] for (uint i = 0u; i < 4u; i++)
        [[unroll]] for (uint j = 0u; j < 4u; j++) acc[i][j] = 0.0;
    for (uint k0 = 0u; k0 < p.K; k0 += 16u) {
        [[unroll]] for (uint s = 0u; s < 4u; s++) {
            const uint e = lid + 256u * s;
            const uint ar = e / 16u, ak = e % 16u;  // A tile: 64 rows x 16 k
            As[ar][ak] = (r0 + ar < p.M && k0 + ak < p.K) ? load_a(r0 + ar, k0 + ak) : 0.0;
            const uint bk = e / 64u, bc = e % 64u;  // B tile: 16 k x 64 columns
            Bs[bk][bc] = (k0 + bk < p.K && c0 + bc < p.N) ? load_b(k0 + bk, c0 + bc) : 0.0;
        }
        barrier();
        [[unroll]] for (uint kk = 0u; kk < 16u; kk++) {
            float a[4], b[4];
            [[unroll]] for (uint i = 0u; i < 4u; i++) a[i] = As[ty + 16u * i][kk];
            [[unroll]] for (uint j = 0u; j < 4u; j++) b[j] = Bs[kk][tx + 16u * j];
            [[unroll]] for (uint i = 0u; i < 4u; i++)
                [[unroll]] for (uint j = 0u; j < 4u; j++) acc[i][j] += a[i] * b[j];
        }
        barrier();
    }
    [[unroll]] for (uint i = 0u; i < 4u; i++)
        [[unroll]] for (uint j = 0u; j < 4u; j++) {
            const uint r = r0 + ty + 16u * i, c = c0 + tx + 16u * j;
            if (r < p.M && c < p.N) {
                const uint at = r * p.ldc + c;
                p.C.v[at] = p.beta == 0.0 ? p.alpha * acc[i][j] : p.alpha * acc[i][j] + p.beta * p.C.v[at];
            }
        }
}
