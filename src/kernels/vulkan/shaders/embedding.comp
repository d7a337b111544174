#version 450
#include "common.glsl"
// x[n, :] = table[tokens[n], :] (mode 0: fp32 table, 1: bf16 table)
layout(push_constant) uniform P { f32_buf x; i32_buf tokens; f32_buf table; u16_buf table16; uint N; uint D; uint mode; } p;
void main() {
    GRID_LOOP(i, p.N * p.D) {
        const uint n = i / p.D, d = i % p.D;
        const uint row = uint(p.tokens.v[n]);
        p.x.v[i] = p.mode == 0u ? p.table.v[row * p.D + d] : uintBitsToFloat(uint(p.table16.v[row * p.D + d]) << 16);
    }
}
