// The Vulkan entry points of a build without Vulkan (CMake found no Vulkan headers or no glslc):
// every use says so in one line.
#include "core/error.h"
#include "kernels/vulkan/vulkan.h"

namespace lisa {

static const char* kWhy =
    "this lisa was built without Vulkan (install libvulkan-dev and glslc, then rebuild; docs/gpu.md)";

bool vulkan_built() { return false; }

std::vector<vulkan_device_info> vulkan_devices(std::string* why) {
    *why = kWhy;
    return {};
}

const backend& backend_vulkan(int) { fail(std::string("--device vulkan: ") + kWhy); }

int vulkan_validation_messages() { return 0; }

void vulkan_memory(uint64_t* bytes) { *bytes = 0; }

std::string vulkan_current_device() { return ""; }

int vulkan_validation_selftest() { return 0; }

void vulkan_counters(uint64_t* dispatches, uint64_t* submits) { *dispatches = *submits = 0; }

}  // namespace lisa
