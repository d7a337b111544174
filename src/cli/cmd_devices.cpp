// lisa devices: the compute devices lisa can use here — the CPU, and each Vulkan device with its
// memory, or why it cannot be used (--json for scripts).
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.h"
#include "kernels/vulkan/vulkan.h"

namespace lisa {

command_fn cmd_devices_register(CLI::App& app) {
    auto as_json = std::make_shared<bool>(false);
    app.add_flag("--json", *as_json, "one JSON object instead of lines");
    return [as_json] {
        std::string why;
        const std::vector<vulkan_device_info> devs = vulkan_devices(&why);
        if (*as_json) {
            nlohmann::json j = {{"cpu", {{"threads", std::thread::hardware_concurrency()}}},
                                {"vulkan_built", vulkan_built()}, {"vulkan", nlohmann::json::array()}};
            for (const auto& d : devs)
                j["vulkan"].push_back({{"device", "vulkan:" + std::to_string(d.index)}, {"name", d.name}, {"type", d.type},
                                       {"memory_bytes", d.memory_bytes}, {"usable", d.usable}, {"why_not", d.why_not}});
            if (devs.empty()) j["vulkan_why_none"] = why;
            std::printf("%s\n", j.dump().c_str());
            return;
        }
        std::printf("cpu        %u threads (--device cpu, the default)\n", std::thread::hardware_concurrency());
        for (const auto& d : devs)
            std::printf("vulkan:%-3d %s (%s, %.1f GiB)%s%s\n", d.index, d.name.c_str(), d.type.c_str(),
                        (double)d.memory_bytes / (1u << 30), d.usable ? "" : ": not usable, ", d.why_not.c_str());
        if (devs.empty()) std::printf("vulkan     none: %s\n", why.c_str());
    };
}

}  // namespace lisa
