// Conversions between stored dtypes and fp32, checked against IEEE facts (not against themselves).
#include <cstring>

#include "core/dtype.h"
#include "test_util.h"

using namespace lisa;

static uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

TEST(dtype, f16_known_values) {
    EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
    EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
    EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);             // largest normal
    EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
    EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));  // smallest normal
    EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
    EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
    EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
    EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                        // rounds up to inf
    EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);           // tie to even: 0
    EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);           // above the tie: 1 ulp
    EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);    // tie to even (down)
    EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie to even (up)
}

TEST(dtype, f16_every_value_round_trips) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        if (std::isnan(f)) continue;
        ASSERT_EQ(f32_to_f16(f), h) << "half bits " << h;
    }
}

TEST(dtype, bf16_every_value_round_trips_and_rounds_to_nearest_even) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);
        EXPECT_EQ(bits(f), h << 16);
        if (!std::isnan(f)) {
            ASSERT_EQ(f32_to_bf16(f), h);
        }
    }
    EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);        // tie: to even (down)
    EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);    // tie: to even (up)
    EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}
