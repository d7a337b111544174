#version 450
#include "common.glsl"
// Embedding gradients, an invocation per column summing the tokens in order (no atomics: the same
// bits every run): dtable[row(tokens[n]), d] += dx[n, d], row = the token (row_of null) or
// row_of[token] (the sparse rows of a step)
layout(push_constant) uniform P { f32_buf dtable; i32_buf row_of; f32_buf dx; i32_buf tokens; uint N, D; } p;
void main() {
    const bool sparse = uint64_t(p.row_of) != 0ul;
    GRID_LOOP(d, p.D) {
        for (uint n = 0u; n < p.N; n++) {
            const int tok = p.tokens.v[n];
            const uint row = sparse ? uint(p.row_of.v[tok]) : uint(tok);
            p.dtable.v[row * p.D + d] += p.dx.v[n * p.D + d];
        }
    }
}
