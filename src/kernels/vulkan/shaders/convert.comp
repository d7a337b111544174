#version 450
#include "common.glsl"
// mode 0: f32[i] = bf16 b16[i] (exact); mode 1: b16[i] = bf16 of f32[i], round to nearest even,
// a NaN stays a (quiet) NaN
layout(push_constant) uniform P { f32_buf f32; u16_buf b16; uint n; uint mode; } p;
void main() {
    GRID_LOOP(i, p.n) {
        if (p.mode == 0u) {
            p.f32.v[i] = uintBitsToFloat(uint(p.b16.v[i]) << 16);
        } else {
            const uint b = floatBitsToUint(p.f32.v[i]);
            uint r;
            if ((b & 0x7fffffffu) > 0x7f800000u) r = (b >> 16) | 0x40u;
            else r = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
            p.b16.v[i] = uint16_t(r);
        }
    }
}
