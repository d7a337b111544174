// Deterministic random numbers: the same seed gives the same stream on every machine
// (no std:: distributions, whose output differs between standard libraries).
#pragma once
#include <cmath>
#include <cstdint>

namespace lisa {

struct rng {
    uint64_t s[4];  // xoshiro256** state
};

inline uint64_t rng_splitmix(uint64_t* x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

inline void rng_init(rng* r, uint64_t seed) {
    for (auto& w : r->s) w = rng_splitmix(&seed);
}

inline uint64_t rng_next(rng* r) {
    uint64_t* s = r->s;
    auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

// uniform in [0, 1)
inline double rng_uniform(rng* r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

// uniform integer in [0, n)
inline uint64_t rng_below(rng* r, uint64_t n) { return (uint64_t)(rng_uniform(r) * (double)n); }

// standard normal (Box-Muller, one value per call)
inline double rng_normal(rng* r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace lisa
