// How much slower, and bigger, than a normal build this build runs: the tests' hang guards (time
// bounds) and memory bounds scale with it.
#pragma once

namespace lisa_test {
#if defined(__SANITIZE_ADDRESS__)
inline constexpr double kSlowdown = 4.0;      // AddressSanitizer + UBSan (-DLISA_SANITIZE=ON)
inline constexpr double kMemoryFactor = 3.0;  // shadow memory and redzones
#else
inline constexpr double kSlowdown = 1.0;
inline constexpr double kMemoryFactor = 1.0;
#endif
}  // namespace lisa_test
