#version 450
#define LOCAL_SIZE 64
#include "common.glsl"
#extension GL_EXT_control_flow_attributes : require
// C[M,N] = alpha · op(A)·op(B) + beta · C (row-major, strides lda/ldb/ldc), op = transpose when
// flags say so; B may be bf16 (frozen weights). A workgroup computes a 64x64 tile of C, each of
// its 64 invocations an 8x8 block of it (rows ty + 8i, columns tx + 8j), the inner dimension
// in steps of 16 through shared memory. Each output sums its products in k order: results repeat
// bit for bit.
layout(push_constant) uniform P {
    f32_buf A; f32_buf B; u16_buf B16; f32_buf C;
    uint M, N, K, lda, ldb, ldc;
    float alpha, beta;
    uint flags;  // 1: A transposed, 2: B transposed, 4: B is bf16 (B16)
} p;
shared vec4 As[16][16];
shared vec4 Bs[16][16];
float load_a(uint i, uint k) { return (p.flags & 1u) != 0u ? p.A.v[k * p.lda + i] : p.A.v[i * p.lda + k]; }
float load_b(uint k, uint j) {
    const uint at = (p.flags & 2u) != 0u ? j * p.ldb + k : k * p.ldb + j;
    return (p.flags & 4u) != 0u ? uintBitsToFloat(uint(p.B16.v[at]) << 16) : p.B.v[at];
}
void main() {
    const uint lid = gl_LocalInvocationID.x, tx = lid % 8u, ty = lid / 8u;
    const uint r0 = gl_WorkGroupID.y * 64u, c0 = gl_WorkGroupID.x * 64u;
    float acc[8][8];
    [[unroll]] for (uint i = 0u; i < 8u; i++)
        [[unroll]] for (uint j = 0u; j < 8u; j++) acc[i][j] = 0.0;
    for (uint k0 = 0u; k0 < p.K; k0 += 16u) {
        [[unroll]] for (uint s = 0u; s < 16u; s++) {
            const uint e = lid + 64u * s;
            const uint ar = e / 16u, ak = e % 16u;  // A tile: 64 rows x 16 k
            As[ak][ar / 4u][ar % 4u] = (r0 + ar < p.M && k0 + ak < p.K) ? load_a(r0 + ar, k0 + ak) : 0.0;
            const uint bk = e / 64u, bc = e % 64u;  // B tile: 16 k x 64 columns
            Bs[bk][bc / 4u][bc % 4u] = (k0 + bk < p.K && c0 + bc < p.N) ? load_b(k0 + bk, c0 + bc) : 0.0;
        }
        barrier();
        [[unroll]] for (uint kk = 0u; kk < 16u; kk++) {
            const vec4 a0 = As[kk][2u * ty], a1 = As[kk][2u * ty + 1u], b0 = Bs[kk][2u * tx], b1 = Bs[kk][2u * tx + 1u];
            const float a[8] = float[8](a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w);
            const float b[8] = float[8](b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w);
            [[unroll]] for (uint i = 0u; i < 8u; i++)
                [[unroll]] for (uint j = 0u; j < 8u; j++) acc[i][j] += a[i] * b[j];
        }
        barrier();
    }
    [[unroll]] for (uint i = 0u; i < 8u; i++)
        [[unroll]] for (uint j = 0u; j < 8u; j++) {
            const uint r = r0 + 8u * ty + i, c = c0 + 8u * tx + j;
            if (r < p.M && c < p.N) {
                const uint at = r * p.ldc + c;
                p.C.v[at] = p.beta == 0.0 ? p.alpha * acc[i][j] : p.alpha * acc[i][j] + p.beta * p.C.v[at];
            }
        }
}
