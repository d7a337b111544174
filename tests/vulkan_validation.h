// The Khronos validation layer for the Vulkan tests: turned on in the test process (and so in the
// `lisa` processes it starts) before the first Vulkan call, when vulkan-validationlayers is
// installed. Every Vulkan test then fails on any message the layer sends (lisa counts them:
// vulkan_validation_messages), and test_vulkan proves the layer is heard.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>

namespace lisa_test {

// Whether the layer's manifest is installed (Debian: vulkan-validationlayers).
inline bool vulkan_validation_installed() {
    for (const char* dir : {"/usr/share/vulkan/explicit_layer.d", "/usr/local/share/vulkan/explicit_layer.d",
                            "/etc/vulkan/explicit_layer.d"})
        if (std::filesystem::exists(std::string(dir) + "/VkLayer_khronos_validation.json")) return true;
    return false;
}

// Call before the first Vulkan call of the process. Returns whether the layer is on.
inline bool vulkan_validation_on() {
    static const bool on = [] {
        if (!vulkan_validation_installed()) return false;
        setenv("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation", 1);
        return true;
    }();
    return on;
}

}  // namespace lisa_test
