#version 450
#include "common.glsl"
// Causal self-attention with grouped KV heads, a sliding window, soft-capped scores and samples
// packed in a row (pos: each token's place in its own sample); no T×T matrix anywhere.
//   mode 0 forward: an invocation per query (b, h, t): online softmax over its keys; out, lse.
//   mode 1 dq: an invocation per query: probabilities recomputed from lse; dq += Σ_j ds·k_j.
//   mode 2 dk, dv: an invocation per key (b, kv head, j): over the queries of its group that see
//          it, in order; dk += Σ ds·q, dv += Σ p·dO.
//   mode 3 decoding over a KV cache: n queries at positions pos0.. (B = 1, T = n), keys 0..pos0+i.
// Each invocation sums in one fixed order: results repeat bit for bit.
layout(push_constant) uniform P {
    f32_buf out_; f32_buf lse; f32_buf q; f32_buf k; f32_buf v; f32_buf dout; f32_buf dq; f32_buf dk; f32_buf dv;
    i32_buf pos;
    uint B, T, Hq, Hkv, hd;
    float scale, softcap;
    uint window, mode, pos0;
} p;
const uint kMaxHd = 256u;
float acc[kMaxHd];

float capped(float s) { return p.softcap > 0.0 ? p.softcap * tanh(s / p.softcap) : s; }
// d capped / d s
float cap_grad(float s) {
    if (p.softcap <= 0.0) return 1.0;
    const float th = tanh(s / p.softcap);
    return 1.0 - th * th;
}
bool packed() { return uint64_t(p.pos) != 0ul; }
// the first key query t of row b sees
uint first_key(uint b, uint t) {
    uint lo = packed() ? t - uint(p.pos.v[b * p.T + t]) : 0u;
    if (p.window > 0u && t + 1u > p.window) lo = max(lo, t + 1u - p.window);
    return lo;
}
float dot_qk(uint qo, uint ko) {
    float s = 0.0;
    for (uint d = 0u; d < p.hd; d++) s += p.q.v[qo + d] * p.k.v[ko + d];
    return s;
}

void main() {
    const uint G = p.Hq / p.Hkv;
    if (p.mode == 0u || p.mode == 3u) {
        GRID_LOOP(id, p.B * p.Hq * p.T) {
            const uint t = id % p.T, h = (id / p.T) % p.Hq, b = id / (p.T * p.Hq), kh = h / G;
            const uint qo = ((b * p.T + t) * p.Hq + h) * p.hd;
            uint lo, hi;  // keys lo..hi, at key rows b*T + j (mode 0) or cache rows j (mode 3)
            if (p.mode == 0u) {
                lo = first_key(b, t);
                hi = t;
            } else {
                hi = p.pos0 + t;
                lo = (p.window > 0u && hi + 1u > p.window) ? hi + 1u - p.window : 0u;
            }
            for (uint d = 0u; d < p.hd; d++) acc[d] = 0.0;
            float m = -1.0 / 0.0, z = 0.0;
            for (uint j = lo; j <= hi; j++) {
                const uint ko = ((p.mode == 0u ? b * p.T + j : j) * p.Hkv + kh) * p.hd;
                const float s = capped(dot_qk(qo, ko) * p.scale);
                if (s > m) {
                    const float c = exp(m - s);
                    z *= c;
                    for (uint d = 0u; d < p.hd; d++) acc[d] *= c;
                    m = s;
                }
                const float e = exp(s - m);
                z += e;
                for (uint d = 0u; d < p.hd; d++) acc[d] += e * p.v.v[ko + d];
            }
            for (uint d = 0u; d < p.hd; d++) p.out_.v[qo + d] = acc[d] / z;
            if (p.mode == 0u) p.lse.v[(b * p.Hq + h) * p.T + t] = m + log(z);
        }
    } else if (p.mode == 1u) {
        GRID_LOOP(id, p.B * p.Hq * p.T) {
            const uint t = id % p.T, h = (id / p.T) % p.Hq, b = id / (p.T * p.Hq), kh = h / G;
            const uint qo = ((b * p.T + t) * p.Hq + h) * p.hd;
            const float l = p.lse.v[(b * p.Hq + h) * p.T + t];
            float delta = 0.0;  // Σ_j p_j·dp_j = dO·out
            for (uint d = 0u; d < p.hd; d++) delta += p.dout.v[qo + d] * p.out_.v[qo + d];
            for (uint d = 0u; d < p.hd; d++) acc[d] = 0.0;
            for (uint j = first_key(b, t); j <= t; j++) {
                const uint ko = ((b * p.T + j) * p.Hkv + kh) * p.hd;
                const float raw = dot_qk(qo, ko) * p.scale;
                const float pr = exp(capped(raw) - l);
                float dp = 0.0;
                for (uint d = 0u; d < p.hd; d++) dp += p.dout.v[qo + d] * p.v.v[ko + d];
                const float ds = pr * (dp - delta) * p.scale * cap_grad(raw);
                for (uint d = 0u; d < p.hd; d++) acc[d] += ds * p.k.v[ko + d];
            }
            for (uint d = 0u; d < p.hd; d++) p.dq.v[qo + d] += acc[d];
        }
    } else {
        float acc_v[kMaxHd];
        GRID_LOOP(id, p.B * p.Hkv * p.T) {
            const uint j = id % p.T, kh = (id / p.T) % p.Hkv, b = id / (p.T * p.Hkv);
            const uint ko = ((b * p.T + j) * p.Hkv + kh) * p.hd;
            for (uint d = 0u; d < p.hd; d++) acc[d] = 0.0, acc_v[d] = 0.0;
            for (uint h = kh * G; h < kh * G + G; h++)
                for (uint t = j; t < p.T; t++) {
                    if (p.window > 0u && t + 1u > p.window && t + 1u - p.window > j) break;  // past the window
                    if (packed() && t - uint(p.pos.v[b * p.T + t]) > j) break;            // a later sample
                    const uint qo = ((b * p.T + t) * p.Hq + h) * p.hd;
                    const float l = p.lse.v[(b * p.Hq + h) * p.T + t];
                    const float raw = dot_qk(qo, ko) * p.scale;
                    const float pr = exp(capped(raw) - l);
                    float dp = 0.0, delta = 0.0;
                    for (uint d = 0u; d < p.hd; d++) {
                        dp += p.dout.v[qo + d] * p.v.v[ko + d];
                        delta += p.dout.v[qo + d] * p.out_.v[qo + d];
                    }
                    const float ds = pr * (dp - delta) * p.scale * cap_grad(raw);
                    for (uint d = 0u; d < p.hd; d++) {
                        acc_v[d] += pr * p.dout.v[qo + d];
                        acc[d] += ds * p.q.v[qo + d];
                    }
                }
            for (uint d = 0u; d < p.hd; d++) {
                p.dk.v[ko + d] += acc[d];
                p.dv.v[ko + d] += acc_v[d];
            }
        }
    }
}
