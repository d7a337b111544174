// The Vulkan backend (src/kernels/vulkan): the kernel table of kernels.h as compute shaders, for
// any Vulkan 1.2 GPU (NVIDIA, AMD, Intel; Apple's through MoltenVK) and Mesa's lavapipe on a CPU.
// Built when CMake finds Vulkan and glslc (LISA_HAVE_VULKAN); docs/gpu.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace lisa {

struct vulkan_device_info {
    int         index;         // N of --device vulkan:N
    std::string name;          // "NVIDIA H100 80GB HBM3", "llvmpipe (LLVM 15.0.6, 256 bits)"
    std::string type;          // "discrete", "integrated", "virtual", "cpu", "other"
    uint64_t    memory_bytes;  // the largest device-local heap
    bool        usable;        // has what lisa needs (compute queue, buffer device addresses, int64)
    std::string why_not;       // when not usable
};

// Whether this binary was built with the Vulkan backend.
bool vulkan_built();
// The Vulkan devices of this machine; an empty list and *why set when there is no loader, driver
// or device.
std::vector<vulkan_device_info> vulkan_devices(std::string* why);
// The backend on device `index`, started on first use (one device per process); fails with one
// clear line when it cannot start.
const backend& backend_vulkan(int index);
// Messages the Vulkan validation layer reported so far (VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation);
// each is also printed. Tests require zero.
int vulkan_validation_messages();
// "vulkan:N NAME" of the device in use ("" before one is started).
std::string vulkan_current_device();
// Whether the validation layer is listening: records one deliberately invalid command (a fill at
// an offset that is not a multiple of 4) into a command buffer that is never submitted, and
// returns how many messages it drew (then forgets them, so vulkan_validation_messages() is as
// before). 0 when the layer is not loaded. For the tests of the tests.
int vulkan_validation_selftest();
// Device memory lisa holds now (every live buffer), in bytes.
void vulkan_memory(uint64_t* bytes);
// Dispatches and submissions so far (for the log and benchmarks: kernels are recorded into
// command buffers and submitted in batches).
void vulkan_counters(uint64_t* dispatches, uint64_t* submits);

}  // namespace lisa
