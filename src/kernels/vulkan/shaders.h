// The compute shaders of the Vulkan backend, compiled from src/kernels/vulkan/shaders/*.comp by
// glslc at build time and embedded in the binary (cmake/embed_spirv.cmake).
#pragma once
#include <cstddef>
#include <cstdint>

namespace lisa {

struct spirv_shader {
    const char*     name;   // the .comp file's name without extension
    const uint32_t* words;  // SPIR-V
    size_t          n;      // words
};
const spirv_shader* vulkan_shaders(size_t* n);

}  // namespace lisa
