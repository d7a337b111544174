// The Vulkan backend: device memory as Vulkan buffers reached by device address, kernels as
// compute shaders (shaders/*.comp) recorded into one command buffer with a memory barrier after
// each, submitted only when the host needs a result (a download, a returned value, sync) or the
// buffer holds many commands. A tensor's "pointer" on the host is an address inside a reserved,
// inaccessible range of the host's address space (PROT_NONE) that mirrors the buffer byte for
// byte: pointer arithmetic works as on the CPU, each kernel argument is translated to the
// buffer's device address, and a host access faults at once.
#include "kernels/vulkan/vulkan.h"

// Vulkan create-info structs are filled as {sType} and then field by field: the rest is zero.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sys/mman.h>
#include <vulkan/vulkan.h>

#include "core/error.h"
#include "io/ggml_quants.h"
#include "kernels/host_memory.h"
#include "kernels/vulkan/shaders.h"

namespace lisa {

bool vulkan_built() { return true; }

namespace vk {

static int      g_validation_messages = 0;
static uint64_t g_dispatches = 0, g_submits = 0;

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                 VkDebugUtilsMessageTypeFlagsEXT, const VkDebugUtilsMessengerCallbackDataEXT* d,
                                                 void*) {
    if (severity >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        g_validation_messages++;
        std::fprintf(stderr, "lisa: vulkan validation: %s\n", d->pMessage ? d->pMessage : "(no text)");
    }
    return VK_FALSE;
}

static void check(VkResult r, const char* what) {
    if (r != VK_SUCCESS) fail(strf("vulkan: %s failed (VkResult %d)", what, (int)r));
}

struct instance {
    VkInstance               inst = VK_NULL_HANDLE;
    VkDebugUtilsMessengerEXT messenger = VK_NULL_HANDLE;
    std::string              error;
};

// The instance, created once; with the debug-utils messenger when the loader offers it (the
// validation layer, when enabled, reports through it).
static instance& get_instance() {
    static instance I = [] {
        instance i;
        uint32_t n = 0;
        if (vkEnumerateInstanceExtensionProperties(nullptr, &n, nullptr) != VK_SUCCESS) {
            i.error = "no Vulkan loader or driver (install mesa-vulkan-drivers or your GPU's driver)";
            return i;
        }
        std::vector<VkExtensionProperties> ext(n);
        vkEnumerateInstanceExtensionProperties(nullptr, &n, ext.data());
        bool debug = false;
        for (auto& e : ext) debug |= std::strcmp(e.extensionName, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) == 0;
        VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
        app.pApplicationName = "lisa.cpp";
        app.apiVersion = VK_API_VERSION_1_2;
        VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
        ci.pApplicationInfo = &app;
        const char* names[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
        ci.enabledExtensionCount = debug ? 1 : 0;
        ci.ppEnabledExtensionNames = names;
        VkResult r = vkCreateInstance(&ci, nullptr, &i.inst);
        if (r != VK_SUCCESS) {
            i.error = strf("cannot create a Vulkan 1.2 instance (VkResult %d): no driver?", (int)r);
            i.inst = VK_NULL_HANDLE;
            return i;
        }
        if (debug) {
            auto create = (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(i.inst, "vkCreateDebugUtilsMessengerEXT");
            VkDebugUtilsMessengerCreateInfoEXT mi{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
            mi.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
            mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                             VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
            mi.pfnUserCallback = on_message;
            if (create) create(i.inst, &mi, nullptr, &i.messenger);
        }
        return i;
    }();
    return I;
}

static std::vector<VkPhysicalDevice> physical_devices() {
    instance& I = get_instance();
    if (!I.inst) return {};
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(I.inst, &n, nullptr);
    std::vector<VkPhysicalDevice> d(n);
    vkEnumeratePhysicalDevices(I.inst, &n, d.data());
    return d;
}

static int compute_queue_family(VkPhysicalDevice p) {
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(p, &n, nullptr);
    std::vector<VkQueueFamilyProperties> q(n);
    vkGetPhysicalDeviceQueueFamilyProperties(p, &n, q.data());
    for (uint32_t i = 0; i < n; i++)
        if (q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) return (int)i;
    return -1;
}

// What lisa needs of a device, or why it cannot run there.
static std::string unusable(VkPhysicalDevice p) {
    VkPhysicalDeviceProperties pr;
    vkGetPhysicalDeviceProperties(p, &pr);
    if (pr.apiVersion < VK_API_VERSION_1_2) return "needs Vulkan 1.2";
    if (compute_queue_family(p) < 0) return "no compute queue";
    VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
    f11.pNext = &f12;
    VkPhysicalDeviceFeatures2 f{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    f.pNext = &f11;
    vkGetPhysicalDeviceFeatures2(p, &f);
    if (!f12.bufferDeviceAddress) return "no buffer device addresses";
    if (!f.features.shaderInt64) return "no 64-bit integers in shaders";
    if (!f11.storageBuffer16BitAccess) return "no 16-bit storage (bf16 weights)";
    VkPhysicalDeviceSubgroupProperties sg{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 pr2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    pr2.pNext = &sg;
    vkGetPhysicalDeviceProperties2(p, &pr2);
    if (!(sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) || !(sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT))
        return "no subgroup arithmetic in compute shaders (reductions)";
    return "";
}

static uint64_t device_local_bytes(VkPhysicalDevice p) {
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(p, &mp);
    uint64_t best = 0;
    for (uint32_t i = 0; i < mp.memoryHeapCount; i++)
        if (mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) best = std::max<uint64_t>(best, mp.memoryHeaps[i].size);
    return best;
}

// One buffer of device memory, mirrored by a reserved host range at `host`.
struct allocation {
    VkBuffer        buf = VK_NULL_HANDLE;
    VkDeviceMemory  mem = VK_NULL_HANDLE;
    VkDeviceAddress addr = 0;
    size_t          bytes = 0;  // as asked
    size_t          size = 0;   // of the buffer (a multiple of 4)
};

struct device {
    VkPhysicalDevice                phys = VK_NULL_HANDLE;
    VkDevice                        dev = VK_NULL_HANDLE;
    VkQueue                         queue = VK_NULL_HANDLE;
    uint32_t                        family = 0;
    VkCommandPool                   pool = VK_NULL_HANDLE;
    VkCommandBuffer                 cmd = VK_NULL_HANDLE;
    VkFence                         fence = VK_NULL_HANDLE;
    bool                            recording = false;
    int                             recorded = 0;  // commands in the open command buffer
    VkPipelineLayout                layout = VK_NULL_HANDLE;
    std::map<std::string, VkPipeline> pipes;
    std::map<uintptr_t, allocation> live;  // host mirror address -> buffer
    uint32_t                        host_visible_type = 0, device_local_type = 0;
    // staging for uploads and downloads (host-visible, coherent, mapped)
    VkBuffer                        staging = VK_NULL_HANDLE;
    VkDeviceMemory                  staging_mem = VK_NULL_HANDLE;
    void*                           staging_map = nullptr;
    size_t                          staging_size = 0;
    std::vector<float>              partials;  // sum_of_squares: the workgroups' sums on the host
    float*                          scratch = nullptr;  // device floats for kernels' partial results
    size_t                          scratch_n = 0;
    float*                          tile = nullptr;     // a block-type weight's rows dequantized for a product
    size_t                          tile_n = 0;
    std::recursive_mutex            mu;
};

static device* g_dev = nullptr;
static int     g_index = -1;

static uint32_t find_memory_type(VkPhysicalDevice p, uint32_t bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags prefer) {
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(p, &mp);
    for (VkMemoryPropertyFlags w : {want | prefer, want})
        for (uint32_t i = 0; i < mp.memoryTypeCount; i++)
            if ((bits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & w) == w) return i;
    fail("vulkan: no memory type fits a buffer");
}

static const size_t kStagingBytes = (size_t)64 << 20;  // copies go through it in pieces of this size
static const int    kMaxRecorded = 2048;                // commands per submission at most

static void make_buffer(device& d, size_t size, VkBufferUsageFlags usage, bool host, VkBuffer* buf, VkDeviceMemory* mem) {
    VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bi.size = size;
    bi.usage = usage;
    bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    check(vkCreateBuffer(d.dev, &bi, nullptr, buf), "vkCreateBuffer");
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(d.dev, *buf, &req);
    VkMemoryAllocateFlagsInfo flags{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO};
    flags.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
    VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    ai.pNext = host ? nullptr : &flags;
    ai.allocationSize = req.size;
    ai.memoryTypeIndex = host ? find_memory_type(d.phys, req.memoryTypeBits,
                                                 VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, 0)
                              : find_memory_type(d.phys, req.memoryTypeBits, 0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    VkResult r = vkAllocateMemory(d.dev, &ai, nullptr, mem);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY) {
        vkDestroyBuffer(d.dev, *buf, nullptr);
        fail(strf("out of device memory: cannot allocate %zu MiB on the Vulkan device", size >> 20));
    }
    check(r, "vkAllocateMemory");
    check(vkBindBufferMemory(d.dev, *buf, *mem, 0), "vkBindBufferMemory");
}

static void begin(device& d) {
    if (d.recording) return;
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    check(vkBeginCommandBuffer(d.cmd, &bi), "vkBeginCommandBuffer");
    d.recording = true;
    d.recorded = 0;
}

// Submits what was recorded and waits for it.
static void flush(device& d) {
    if (!d.recording) return;
    check(vkEndCommandBuffer(d.cmd), "vkEndCommandBuffer");
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &d.cmd;
    check(vkQueueSubmit(d.queue, 1, &si, d.fence), "vkQueueSubmit");
    check(vkWaitForFences(d.dev, 1, &d.fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
    check(vkResetFences(d.dev, 1, &d.fence), "vkResetFences");
    check(vkResetCommandBuffer(d.cmd, 0), "vkResetCommandBuffer");
    d.recording = false;
    g_submits++;
}

// Every earlier write (shader or copy) is visible to every later read or write.
static void barrier(device& d) {
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                       VK_ACCESS_TRANSFER_WRITE_BIT;
    const VkPipelineStageFlags st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    vkCmdPipelineBarrier(d.cmd, st, st, 0, 1, &mb, 0, nullptr, 0, nullptr);
    if (++d.recorded >= kMaxRecorded) flush(d);
}

static device& dev() {
    LISA_ASSERT(g_dev != nullptr, "vulkan", "the backend was not started");
    return *g_dev;
}

// The buffer holding host-mirror address p, and p's byte offset in it.
static allocation& find(device& d, const void* p, size_t* off, const char* what) {
    const uintptr_t a = (uintptr_t)p;
    auto it = d.live.upper_bound(a);
    if (it != d.live.begin()) {
        --it;
        if (a < it->first + std::max<size_t>(it->second.bytes, 1)) {
            *off = a - it->first;
            return it->second;
        }
    }
    fail(strf("vulkan: %s: %p is not memory of the Vulkan device", what, p));
}

static uint64_t addr(device& d, const void* p, const char* what) {
    if (!p) return 0;
    size_t off;
    allocation& a = find(d, p, &off, what);
    return a.addr + off;
}

static VkPipeline pipeline(device& d, const char* name) {
    auto it = d.pipes.find(name);
    if (it != d.pipes.end()) return it->second;
    size_t n;
    const spirv_shader* all = vulkan_shaders(&n);
    const spirv_shader* s = nullptr;
    for (size_t i = 0; i < n; i++)
        if (std::strcmp(all[i].name, name) == 0) s = &all[i];
    LISA_ASSERT(s != nullptr, "vulkan pipeline", "no embedded shader of that name");
    VkShaderModuleCreateInfo mi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    mi.codeSize = s->n * 4;
    mi.pCode = s->words;
    VkShaderModule mod;
    check(vkCreateShaderModule(d.dev, &mi, nullptr, &mod), "vkCreateShaderModule");
    VkComputePipelineCreateInfo pi{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    pi.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    pi.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    pi.stage.module = mod;
    pi.stage.pName = "main";
    pi.layout = d.layout;
    VkPipeline p;
    check(vkCreateComputePipelines(d.dev, VK_NULL_HANDLE, 1, &pi, nullptr, &p), "vkCreateComputePipelines");
    vkDestroyShaderModule(d.dev, mod, nullptr);
    d.pipes[name] = p;
    return p;
}

static const uint32_t kGroup = 256, kMaxGroups = 65535;

// Records one dispatch of shader `name` with push constants pc over groups × groups_y workgroups.
template <typename PC>
static void dispatch(device& d, const char* name, uint32_t groups, const PC& pc, uint32_t groups_y = 1) {
    static_assert(sizeof(PC) <= 128, "push constants fit the 128 bytes every device offers");
    if (groups == 0 || groups_y == 0) return;
    begin(d);
    vkCmdBindPipeline(d.cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline(d, name));
    vkCmdPushConstants(d.cmd, d.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(PC), &pc);
    vkCmdDispatch(d.cmd, groups, groups_y, 1);
    g_dispatches++;
    barrier(d);
}

// workgroups for a grid-stride loop over n elements
static uint32_t groups_for(int64_t n) {
    LISA_ASSERT(n >= 0 && n < ((int64_t)1 << 32), "vulkan dispatch", "element count must fit 32 bits");
    return (uint32_t)std::min<int64_t>((n + kGroup - 1) / kGroup, kMaxGroups);
}

// At exit: every Vulkan object lisa made is destroyed, the device and instance last (memory a
// static tensor still holds goes with the device).
static void stop() {
    device* d = g_dev;
    if (!d) return;
    if (d->recording) {
        vkEndCommandBuffer(d->cmd);
        d->recording = false;
    }
    vkDeviceWaitIdle(d->dev);
    for (auto& [name, p] : d->pipes) vkDestroyPipeline(d->dev, p, nullptr);
    for (auto& [host, a] : d->live) {
        vkDestroyBuffer(d->dev, a.buf, nullptr);
        vkFreeMemory(d->dev, a.mem, nullptr);
    }
    d->live.clear();
    vkDestroyBuffer(d->dev, d->staging, nullptr);
    vkFreeMemory(d->dev, d->staging_mem, nullptr);
    vkDestroyPipelineLayout(d->dev, d->layout, nullptr);
    vkDestroyFence(d->dev, d->fence, nullptr);
    vkDestroyCommandPool(d->dev, d->pool, nullptr);
    vkDestroyDevice(d->dev, nullptr);
    instance& I = get_instance();
    if (I.messenger) {
        auto destroy = (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(I.inst, "vkDestroyDebugUtilsMessengerEXT");
        if (destroy) destroy(I.inst, I.messenger, nullptr);
        I.messenger = VK_NULL_HANDLE;
    }
    vkDestroyInstance(I.inst, nullptr);
    I.inst = VK_NULL_HANDLE;
    delete d;
    g_dev = nullptr;
}

static void start(int index) {
    instance& I = get_instance();
    if (!I.inst) fail("--device vulkan: " + I.error);
    std::vector<VkPhysicalDevice> all = physical_devices();
    if (all.empty()) fail("--device vulkan: no Vulkan device found (lisa devices lists them)");
    if (index < 0 || index >= (int)all.size())
        fail(strf("--device vulkan:%d: there are %zu Vulkan devices (0..%zu; lisa devices lists them)", index, all.size(),
                  all.size() - 1));
    const std::string why = unusable(all[index]);
    if (!why.empty()) fail(strf("--device vulkan:%d: this device cannot run lisa: %s", index, why.c_str()));
    auto d = std::make_unique<device>();
    d->phys = all[index];
    d->family = (uint32_t)compute_queue_family(d->phys);
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qi.queueFamilyIndex = d->family;
    qi.queueCount = 1;
    qi.pQueuePriorities = &prio;
    VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    f12.bufferDeviceAddress = VK_TRUE;
    VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
    f11.storageBuffer16BitAccess = VK_TRUE;
    f11.pNext = &f12;
    VkPhysicalDeviceFeatures2 f{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    f.features.shaderInt64 = VK_TRUE;
    f.pNext = &f11;
    VkDeviceCreateInfo di{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    di.pNext = &f;
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &qi;
    check(vkCreateDevice(d->phys, &di, nullptr, &d->dev), "vkCreateDevice");
    vkGetDeviceQueue(d->dev, d->family, 0, &d->queue);
    VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pci.queueFamilyIndex = d->family;
    check(vkCreateCommandPool(d->dev, &pci, nullptr, &d->pool), "vkCreateCommandPool");
    VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = d->pool;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    check(vkAllocateCommandBuffers(d->dev, &cai, &d->cmd), "vkAllocateCommandBuffers");
    VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    check(vkCreateFence(d->dev, &fi, nullptr, &d->fence), "vkCreateFence");
    VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, 128};
    VkPipelineLayoutCreateInfo li{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    li.pushConstantRangeCount = 1;
    li.pPushConstantRanges = &range;
    check(vkCreatePipelineLayout(d->dev, &li, nullptr, &d->layout), "vkCreatePipelineLayout");
    d->staging_size = kStagingBytes;
    make_buffer(*d, d->staging_size, VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT, true, &d->staging,
                &d->staging_mem);
    check(vkMapMemory(d->dev, d->staging_mem, 0, VK_WHOLE_SIZE, 0, &d->staging_map), "vkMapMemory");
    g_dev = d.release();
    g_index = index;
    std::atexit(stop);
}

// ---------------------------------------------------------------- device memory

static void* mem_alloc(size_t bytes) {
    if (bytes == 0) return nullptr;
    device& d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    allocation a;
    a.bytes = bytes;
    a.size = (bytes + 3) / 4 * 4;
    make_buffer(d, a.size,
                VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                    VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT,
                false, &a.buf, &a.mem);
    VkBufferDeviceAddressInfo ai{VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
    ai.buffer = a.buf;
    a.addr = vkGetBufferDeviceAddress(d.dev, &ai);
    // the host's mirror: reserved address space the host cannot touch
    void* host = mmap(nullptr, a.size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (host == MAP_FAILED) fail(strf("vulkan: cannot reserve %zu MiB of address space", a.size >> 20));
    begin(d);
    vkCmdFillBuffer(d.cmd, a.buf, 0, VK_WHOLE_SIZE, 0);  // zeroed, as every backend's memory
    barrier(d);
    d.live[(uintptr_t)host] = a;
    return host;
}

static void mem_free(void* p, size_t bytes) {
    if (!p || !g_dev) return;  // (after exit's teardown the device took its memory with it)
    device& d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    auto it = d.live.find((uintptr_t)p);
    LISA_ASSERT(it != d.live.end() && it->second.bytes == bytes, "vulkan mem_free", "not a live allocation");
    flush(d);  // recorded work may still use it
    vkDestroyBuffer(d.dev, it->second.buf, nullptr);
    vkFreeMemory(d.dev, it->second.mem, nullptr);
    munmap(p, it->second.size);
    d.live.erase(it);
}

static void mem_upload(void* dst, const void* src, size_t bytes) {
    if (!bytes) return;
    device& d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    size_t off;
    allocation& a = find(d, dst, &off, "upload");
    LISA_ASSERT(off + bytes <= a.bytes, "vulkan upload", "past the end of the allocation");
    if (bytes <= 65536 && off % 4 == 0 && bytes % 4 == 0) {  // small: inline in the command stream
        begin(d);
        vkCmdUpdateBuffer(d.cmd, a.buf, off, bytes, src);
        barrier(d);
        return;
    }
    flush(d);  // the staging buffer is free once nothing is pending
    for (size_t done = 0; done < bytes; done += d.staging_size) {
        const size_t n = std::min(d.staging_size, bytes - done);
        std::memcpy(d.staging_map, (const char*)src + done, n);
        begin(d);
        VkBufferCopy c{0, off + done, n};
        vkCmdCopyBuffer(d.cmd, d.staging, a.buf, 1, &c);
        barrier(d);
        flush(d);
    }
}

static void mem_download(void* dst, const void* src, size_t bytes) {
    if (!bytes) return;
    device& d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    size_t off;
    allocation& a = find(d, src, &off, "download");
    LISA_ASSERT(off + bytes <= a.bytes, "vulkan download", "past the end of the allocation");
    for (size_t done = 0; done < bytes; done += d.staging_size) {
        const size_t n = std::min(d.staging_size, bytes - done);
        begin(d);
        VkBufferCopy c{off + done, 0, n};
        vkCmdCopyBuffer(d.cmd, a.buf, d.staging, 1, &c);
        barrier(d);
        flush(d);
        std::memcpy((char*)dst + done, d.staging_map, n);
    }
}

static void mem_copy(void* dst, const void* src, size_t bytes) {
    if (!bytes) return;
    device& d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    size_t od, os;
    allocation& a = find(d, dst, &od, "copy");
    allocation& b = find(d, src, &os, "copy");
    LISA_ASSERT(od + bytes <= a.bytes && os + bytes <= b.bytes, "vulkan copy", "past the end of an allocation");
    if (a.buf == b.buf && od < os + bytes && os < od + bytes) {  // overlapping: through the host
        std::vector<char> tmp(bytes);
        mem_download(tmp.data(), src, bytes);
        mem_upload(dst, tmp.data(), bytes);
        return;
    }
    begin(d);
    VkBufferCopy c{os, od, bytes};
    vkCmdCopyBuffer(d.cmd, b.buf, a.buf, 1, &c);
    barrier(d);
}

static void mem_zero(void* p, size_t bytes) {
    if (!bytes) return;
    device& d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    size_t off;
    allocation& a = find(d, p, &off, "zero");
    LISA_ASSERT(off + bytes <= a.bytes, "vulkan zero", "past the end of the allocation");
    if (off % 4 == 0 && (bytes % 4 == 0 || off + bytes == a.bytes)) {
        begin(d);
        vkCmdFillBuffer(d.cmd, a.buf, off, off + bytes == a.bytes ? VK_WHOLE_SIZE : bytes, 0);
        barrier(d);
        return;
    }
    std::vector<char> zeros(bytes, 0);  // a 2-byte-aligned bf16 span
    mem_upload(p, zeros.data(), bytes);
}

// Device memory cannot be given back in part: a leaving LISA layer's span is zeroed and stays
// allocated (docs/gpu.md).
static void mem_release(void* p, size_t bytes) { mem_zero(p, bytes); }

static void* mem_host(void*) { return nullptr; }

static void sync() {
    device& d = dev();
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    flush(d);
}

// ---------------------------------------------------------------- kernels

#define LOCK                 \
    device& d = dev();       \
    std::lock_guard<std::recursive_mutex> lock(d.mu)

static void set_threads(int) {}
static void reserve(const scratch_plan&) {}

static void fill(float* dst, int64_t n, float value) {
    LOCK;
    struct { uint64_t dst; uint32_t n; float value; } pc{addr(d, dst, "fill"), (uint32_t)n, value};
    dispatch(d, "fill", groups_for(n), pc);
}

static void zero(float* x, int64_t n) { fill(x, n, 0.0f); }

static void add(float* y, const float* x, int64_t n) {
    LOCK;
    struct { uint64_t y, x; uint32_t n; } pc{addr(d, y, "add"), addr(d, x, "add"), (uint32_t)n};
    dispatch(d, "add", groups_for(n), pc);
}

static void copy(float* dst, const float* src, int64_t n) {
    LOCK;
    struct { uint64_t dst, src; uint32_t n; } pc{addr(d, dst, "copy"), addr(d, src, "copy"), (uint32_t)n};
    dispatch(d, "copy", groups_for(n), pc);
}

static void scale_mode(float* x, int64_t n, float s, uint32_t mode) {
    LOCK;
    struct { uint64_t x; uint32_t n; float s; uint32_t mode; } pc{addr(d, x, "scale"), (uint32_t)n, s, mode};
    dispatch(d, "scale", groups_for(n), pc);
}
static void scale(float* x, int64_t n, float s) { scale_mode(x, n, s, 0); }
static void softcap(float* x, int64_t n, float cap) { scale_mode(x, n, cap, 1); }

static void glu(uint32_t mode, float* h, const float* g, const float* u, float* dg, float* du, int64_t n) {
    LOCK;
    struct { uint64_t h, g, u, dg, du; uint32_t n, mode; } pc{
        addr(d, h, "glu"), addr(d, g, "glu"), addr(d, u, "glu"), addr(d, dg, "glu"), addr(d, du, "glu"), (uint32_t)n, mode};
    dispatch(d, "glu", groups_for(n), pc);
}
static void swiglu_forward(float* h, const float* g, const float* u, int64_t n) { glu(0, h, g, u, nullptr, nullptr, n); }
static void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
    glu(1, const_cast<float*>(dh), g, u, dg, du, n);
}
static void geglu_forward(float* h, const float* g, const float* u, int64_t n) { glu(2, h, g, u, nullptr, nullptr, n); }
static void geglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
    glu(3, const_cast<float*>(dh), g, u, dg, du, n);
}

static void convert(float* f32, const uint16_t* b16, int64_t n, uint32_t mode) {
    LOCK;
    struct { uint64_t f32, b16; uint32_t n, mode; } pc{addr(d, f32, "convert"), addr(d, b16, "convert"), (uint32_t)n, mode};
    dispatch(d, "convert", groups_for(n), pc);
}
static void bf16_to_f32(float* dst, const uint16_t* src, int64_t n) { convert(dst, src, n, 0); }
static void f32_to_bf16(uint16_t* dst, const float* src, int64_t n) { convert(const_cast<float*>(src), dst, n, 1); }

static void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const adamw_hparams& h, int64_t step,
                         bool decay, float grad_scale) {
    LOCK;
    // the constants exactly as the CPU backend forms them
    const double bc1 = 1.0 - std::pow(h.beta1, (double)step), bc2 = 1.0 - std::pow(h.beta2, (double)step);
    struct {
        uint64_t p, g, m, v;
        uint32_t n;
        float    step_size, bc2_sqrt, b1, b2, eps, shrink, grad_scale;
    } pc{addr(d, p, "adamw"), addr(d, g, "adamw"), addr(d, m, "adamw"), addr(d, v, "adamw"), (uint32_t)n,
         (float)(h.lr / bc1), (float)std::sqrt(bc2), (float)h.beta1, (float)h.beta2, (float)h.eps,
         decay ? (float)(1.0 - h.lr * h.weight_decay) : 1.0f, grad_scale};
    dispatch(d, "adamw", groups_for(n), pc);
}

// device floats for a kernel's partial results, grown when asked for more (kept after)
static float* scratch(device& d, size_t n) {
    if (n > d.scratch_n) {
        if (d.scratch) mem_free(d.scratch, d.scratch_n * 4);
        d.scratch = (float*)mem_alloc(n * 4);
        d.scratch_n = n;
    }
    return d.scratch;
}

static double sum_of_squares(const float* g, int64_t n) {
    LOCK;
    if (n <= 0) return 0.0;
    const int64_t blocks = (n + 4095) / 4096;
    LISA_ASSERT(blocks <= kMaxGroups, "vulkan sum_of_squares", "more than 65535 blocks of 4096 values");
    float* part = scratch(d, (size_t)blocks);
    struct { uint64_t x, part; uint32_t n; } pc{addr(d, g, "sum_of_squares"), addr(d, part, "sum_of_squares"), (uint32_t)n};
    dispatch(d, "sumsq", (uint32_t)blocks, pc);
    d.partials.resize((size_t)blocks);
    mem_download(d.partials.data(), part, (size_t)blocks * 4);
    double s = 0;
    for (float x : d.partials) s += x;  // block order: fixed
    return s;
}

static void embedding(float* x, const int32_t* tokens, const float* table, const uint16_t* table16, int64_t N, int64_t D) {
    LOCK;
    struct { uint64_t x, tokens, table, table16; uint32_t N, D, mode; } pc{
        addr(d, x, "embedding"), addr(d, tokens, "embedding"), addr(d, table, "embedding"), addr(d, table16, "embedding"),
        (uint32_t)N, (uint32_t)D, table ? 0u : 1u};
    dispatch(d, "embedding", groups_for(N * D), pc);
}
static void embedding_forward(float* x, const int32_t* tokens, const float* table, int64_t N, int64_t D) {
    embedding(x, tokens, table, nullptr, N, D);
}
static void embedding_forward_bf16(float* x, const int32_t* tokens, const uint16_t* table, int64_t N, int64_t D) {
    embedding(x, tokens, nullptr, table, N, D);
}

// ---- matrix products

static void gemm_b(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                   const float* B, const uint16_t* B16, int64_t ldb, float beta, float* C, int64_t ldc) {
    LOCK;
    if (M <= 0 || N <= 0) return;
    struct {
        uint64_t A, B, B16, C;
        uint32_t M, N, K, lda, ldb, ldc;
        float    alpha, beta;
        uint32_t flags;
    } pc{addr(d, A, "gemm"), addr(d, B, "gemm"), addr(d, B16, "gemm"), addr(d, C, "gemm"), (uint32_t)M, (uint32_t)N,
         (uint32_t)K, (uint32_t)lda, (uint32_t)ldb, (uint32_t)ldc, alpha, beta,
         (ta ? 1u : 0u) | (tb ? 2u : 0u) | (B16 ? 4u : 0u)};
    LISA_ASSERT((M + 63) / 64 <= kMaxGroups && (N + 63) / 64 <= kMaxGroups, "vulkan gemm", "matrix too large for one dispatch");
    dispatch(d, "gemm", (uint32_t)((N + 63) / 64), pc, (uint32_t)((M + 63) / 64));  // 64x64 tiles
}

static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    gemm_b(ta, tb, M, N, K, alpha, A, lda, B, nullptr, ldb, beta, C, ldc);
}

// y[n, o] += b[o] (mode 0) or b[o] += Σ_n y[n, o] (mode 1)
static void bias(float* y, float* b, int64_t N, int64_t width, uint32_t mode) {
    LOCK;
    struct { uint64_t y, b; uint32_t N, width, mode; } pc{addr(d, y, "bias"), addr(d, b, "bias"), (uint32_t)N,
                                                          (uint32_t)width, mode};
    dispatch(d, "bias", groups_for(mode == 0 ? N * width : width), pc);
}

static void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in, int64_t out) {
    gemm_b(false, true, N, out, in, 1.0f, x, in, w, nullptr, in, 0.0f, y, out);
    if (b) bias(y, const_cast<float*>(b), N, out, 0);
}
static void linear_forward_bf16(float* y, const float* x, const uint16_t* w, const float* b, int64_t N, int64_t in,
                                int64_t out) {
    gemm_b(false, true, N, out, in, 1.0f, x, in, nullptr, w, in, 0.0f, y, out);
    if (b) bias(y, const_cast<float*>(b), N, out, 0);
}
static void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t N,
                            int64_t in, int64_t out) {
    if (dx) gemm_b(false, false, N, in, out, 1.0f, dy, out, w, nullptr, in, 1.0f, dx, in);
    if (dw) gemm_b(true, false, out, in, N, 1.0f, dy, out, x, nullptr, in, 1.0f, dw, in);
    if (db) bias(const_cast<float*>(dy), db, N, out, 1);
}
// ---- frozen weights in ggml block types (issue #29): dequant.comp turns a tile of rows into
// fp32 (the CPU's values bit for bit), which the fp32 product then uses: never the whole matrix
// in fp32, as the CPU backend's 256-row tiles

static void dequant(float* dst, const uint8_t* w, uint32_t type, int64_t first, int64_t n, const int32_t* tokens,
                    int64_t D) {
    LOCK;
    LISA_ASSERT(ggml_block_size((ggml_type)type) > 1, "vulkan dequant", "a ggml block type");
    LISA_ASSERT(first + n < ((int64_t)1 << 32) && ggml_nbytes((ggml_type)type, first + n) < ((size_t)1 << 32),
                "vulkan dequant", "a block-type tensor under 4 GiB");
    struct { uint64_t src, dst, tokens; uint32_t n, type, D, mode, first; } pc{
        addr(d, w, "dequant"), addr(d, dst, "dequant"), addr(d, tokens, "dequant"), (uint32_t)n, type, (uint32_t)D,
        tokens ? 1u : 0u, (uint32_t)first};
    dispatch(d, "dequant", groups_for(n), pc);
}
// rows of W per tile: about 16 MiB of fp32, whole rows, at least one
static int64_t tile_rows(int64_t in, int64_t out) { return std::max<int64_t>(1, std::min<int64_t>(out, ((int64_t)1 << 22) / in)); }
static float* tile(device& d, size_t n) {
    if (n > d.tile_n) {
        if (d.tile) mem_free(d.tile, d.tile_n * 4);
        d.tile = (float*)mem_alloc(n * 4);
        d.tile_n = n;
    }
    return d.tile;
}
static void linear_forward_q(float* y, const float* x, const uint8_t* w, uint32_t type, const float* b, int64_t N,
                             int64_t in, int64_t out) {
    LOCK;
    const int64_t R = tile_rows(in, out);
    float* t = tile(d, (size_t)(R * in));
    for (int64_t r0 = 0; r0 < out; r0 += R) {  // y[:, r0:r0+nr] = x · W[r0:r0+nr, :]ᵀ
        const int64_t nr = std::min(R, out - r0);
        dequant(t, w, type, r0 * in, nr * in, nullptr, in);
        gemm_b(false, true, N, nr, in, 1.0f, x, in, t, nullptr, in, 0.0f, y + r0, out);
    }
    if (b) bias(y, const_cast<float*>(b), N, out, 0);
}
static void linear_backward_q(float* dx, const float* dy, const uint8_t* w, uint32_t type, int64_t N, int64_t in,
                              int64_t out) {
    LOCK;
    const int64_t R = tile_rows(in, out);
    float* t = tile(d, (size_t)(R * in));
    for (int64_t r0 = 0; r0 < out; r0 += R) {  // dx += dy[:, r0:r0+nr] · W[r0:r0+nr, :]
        const int64_t nr = std::min(R, out - r0);
        dequant(t, w, type, r0 * in, nr * in, nullptr, in);
        gemm_b(false, false, N, in, nr, 1.0f, dy + r0, out, t, nullptr, in, 1.0f, dx, in);
    }
}
static void embedding_forward_q(float* x, const int32_t* tokens, const uint8_t* table, uint32_t type, int64_t N,
                                int64_t D) {
    dequant(x, table, type, 0, N * D, tokens, D);
}

static void linear_backward_bf16(float* dx, const float* dy, const uint16_t* w, int64_t N, int64_t in, int64_t out) {
    gemm_b(false, false, N, in, out, 1.0f, dy, out, nullptr, w, in, 1.0f, dx, in);
}
static void lora_fold(float* w, const float* A, const float* B, int64_t out, int64_t in, int64_t r, float scale) {
    gemm_b(false, false, out, in, r, scale, B, r, A, nullptr, in, 1.0f, w, in);
}

// ---- norms, rotary embedding

struct rms_pc {
    uint64_t y, rstd, x, w, dy, dx, dw;
    uint32_t N, D;
    float    eps, off;
    uint32_t mode;
};
static void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps,
                            float w_offset) {
    LOCK;
    rms_pc pc{addr(d, y, "rmsnorm"), addr(d, rstd, "rmsnorm"), addr(d, x, "rmsnorm"), addr(d, w, "rmsnorm"), 0, 0, 0,
              (uint32_t)N, (uint32_t)D, eps, w_offset, 0};
    dispatch(d, "rmsnorm", (uint32_t)std::min<int64_t>(N, kMaxGroups), pc);
}
static void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                             int64_t N, int64_t D, float w_offset) {
    LOCK;
    rms_pc pc{0, addr(d, rstd, "rmsnorm"), addr(d, x, "rmsnorm"), addr(d, w, "rmsnorm"), addr(d, dy, "rmsnorm"),
              addr(d, dx, "rmsnorm"), addr(d, dw, "rmsnorm"), (uint32_t)N, (uint32_t)D, 0.0f, w_offset, 1};
    if (dx) dispatch(d, "rmsnorm", (uint32_t)std::min<int64_t>(N, kMaxGroups), pc);
    pc.mode = 2;
    if (dw) dispatch(d, "rmsnorm", groups_for(D), pc);
}

static void rope(float* x, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T, int64_t H,
                 int64_t hd, int64_t rot, float sign) {
    LOCK;
    struct { uint64_t x, cs, sn, pos; uint32_t rows, T, H, hd, rot; float sign; } pc{
        addr(d, x, "rope"), addr(d, cos, "rope"), addr(d, sin, "rope"), addr(d, pos, "rope"), (uint32_t)(B * T),
        (uint32_t)T, (uint32_t)H, (uint32_t)hd, (uint32_t)rot, sign};
    dispatch(d, "rope", groups_for(B * T * H * (rot / 2)), pc);
}
static void rope_forward(float* x, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T,
                         int64_t H, int64_t hd, int64_t rot) {
    rope(x, cos, sin, pos, B, T, H, hd, rot, 1.0f);
}
static void rope_backward(float* dx, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T,
                          int64_t H, int64_t hd, int64_t rot) {
    rope(dx, cos, sin, pos, B, T, H, hd, rot, -1.0f);
}
// computed on the host exactly as the CPU backend does (the tables are small and made once per
// shape), then uploaded
static void rope_tables(float* cos, float* sin, const float* inv_freq, int64_t T, int64_t rot, float scale) {
    LOCK;
    const size_t half = (size_t)rot / 2, n = (size_t)T * half;
    std::vector<float> inv(half), c(n), s(n);
    mem_download(inv.data(), inv_freq, half * 4);
    backend_cpu_plain().rope_tables(c.data(), s.data(), inv.data(), T, rot, scale);
    mem_upload(cos, c.data(), n * 4);
    mem_upload(sin, s.data(), n * 4);
}

// ---- attention

struct attn_pc {
    uint64_t out, lse, q, k, v, dout, dq, dk, dv, pos;
    uint32_t B, T, Hq, Hkv, hd;
    float    scale, softcap;
    uint32_t window, mode, pos0;
};
static attn_pc attn_args(device& d, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap,
                         uint32_t mode) {
    LISA_ASSERT(hd <= 256, "vulkan attention", "head_dim above 256");
    LISA_ASSERT(Hkv > 0 && Hq % Hkv == 0, "vulkan attention", "query heads must be a multiple of kv heads");
    attn_pc pc{};
    pc.pos = addr(d, ap.pos, "attention");
    pc.B = (uint32_t)B, pc.T = (uint32_t)T, pc.Hq = (uint32_t)Hq, pc.Hkv = (uint32_t)Hkv, pc.hd = (uint32_t)hd;
    pc.scale = ap.scale, pc.softcap = ap.softcap, pc.window = (uint32_t)ap.window, pc.mode = mode;
    return pc;
}
static void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap) {
    LOCK;
    attn_pc pc = attn_args(d, B, T, Hq, Hkv, hd, ap, 0);
    pc.out = addr(d, out, "attention"), pc.lse = addr(d, lse, "attention");
    pc.q = addr(d, q, "attention"), pc.k = addr(d, k, "attention"), pc.v = addr(d, v, "attention");
    dispatch(d, "attention", groups_for(B * Hq * T), pc);
}
static void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                               const float* q, const float* k, const float* v, int64_t B, int64_t T, int64_t Hq,
                               int64_t Hkv, int64_t hd, const attn_params& ap) {
    LOCK;
    attn_pc pc = attn_args(d, B, T, Hq, Hkv, hd, ap, 1);
    pc.out = addr(d, out, "attention"), pc.lse = addr(d, lse, "attention");
    pc.q = addr(d, q, "attention"), pc.k = addr(d, k, "attention"), pc.v = addr(d, v, "attention");
    pc.dout = addr(d, dout, "attention"), pc.dq = addr(d, dq, "attention"), pc.dk = addr(d, dk, "attention"),
    pc.dv = addr(d, dv, "attention");
    dispatch(d, "attention", groups_for(B * Hq * T), pc);
    pc.mode = 2;
    dispatch(d, "attention", groups_for(B * Hkv * T), pc);
}
static void attention_forward_kv(float* out, const float* q, const float* kc, const float* vc, int64_t n, int64_t pos0,
                                 int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap) {
    LOCK;
    attn_params plain = ap;
    plain.pos = nullptr;
    attn_pc pc = attn_args(d, 1, n, Hq, Hkv, hd, plain, 3);
    pc.out = addr(d, out, "attention"), pc.q = addr(d, q, "attention"), pc.k = addr(d, kc, "attention"),
    pc.v = addr(d, vc, "attention"), pc.pos0 = (uint32_t)pos0;
    dispatch(d, "attention", groups_for(Hq * n), pc);
}

// ---- LM head with cross-entropy, in chunks of rows: logits of a chunk by a matrix product into
// scratch, the loss and d logits by xent.comp, then dx and dw by two more products

static double lmhead_xent(float* dx, float* dw, const float* x, const float* w, const void* w16_any,
                          uint32_t w16_type, const int32_t* targets, int64_t N, int64_t D, int64_t V, float grad_scale,
                          float* scr, int64_t chunk, float softcap) {
    const bool blocks = !w && w16_type != 30;  // a frozen head in a ggml block type
    const uint16_t* w16 = blocks ? nullptr : (const uint16_t*)w16_any;
    const uint8_t* wq = blocks ? (const uint8_t*)w16_any : nullptr;
    LOCK;
    if (N <= 0) return 0.0;
    float* loss = scratch(d, (size_t)N);
    for (int64_t c0 = 0; c0 < N; c0 += chunk) {
        const int64_t rows = std::min(chunk, N - c0);
        float* logits = scr;  // [rows, V]
        if (blocks) linear_forward_q(logits, x + c0 * D, wq, w16_type, nullptr, rows, D, V);
        else gemm_b(false, true, rows, V, D, 1.0f, x + c0 * D, D, w, w ? nullptr : w16, D, 0.0f, logits, V);
        struct { uint64_t logits, targets, loss; uint32_t rows, V; float grad_scale, cap; } pc{
            addr(d, logits, "lmhead_xent"), addr(d, targets + c0, "lmhead_xent"), addr(d, loss + c0, "lmhead_xent"),
            (uint32_t)rows, (uint32_t)V, grad_scale, softcap};
        dispatch(d, "xent", (uint32_t)std::min<int64_t>(rows, kMaxGroups), pc);
        if (dx && blocks) linear_backward_q(dx + c0 * D, logits, wq, w16_type, rows, D, V);
        else if (dx) gemm_b(false, false, rows, D, V, 1.0f, logits, V, w, w ? nullptr : w16, D, 1.0f, dx + c0 * D, D);
        if (dw) gemm_b(true, false, V, D, rows, 1.0f, logits, V, x + c0 * D, nullptr, D, 1.0f, dw, D);
    }
    d.partials.resize((size_t)N);
    mem_download(d.partials.data(), loss, (size_t)N * 4);
    double total = 0;
    for (float l : d.partials) total += l;  // row order: fixed
    return total;
}

// ---- embedding gradients, optimizer by rows, dropout, init

static void embed_grad(float* dtable, const int32_t* row_of, const float* dx, const int32_t* tokens, int64_t N, int64_t D) {
    LOCK;
    struct { uint64_t dtable, row_of, dx, tokens; uint32_t N, D; } pc{
        addr(d, dtable, "embedding_backward"), addr(d, row_of, "embedding_backward"), addr(d, dx, "embedding_backward"),
        addr(d, tokens, "embedding_backward"), (uint32_t)N, (uint32_t)D};
    dispatch(d, "embed_grad", groups_for(D), pc);
}
static void embedding_backward(float* dtable, const float* dx, const int32_t* tokens, int64_t N, int64_t D) {
    embed_grad(dtable, nullptr, dx, tokens, N, D);
}
static void embedding_backward_rows(float* grad, const int32_t* row_of, const float* dx, const int32_t* tokens, int64_t N,
                                    int64_t D) {
    embed_grad(grad, row_of, dx, tokens, N, D);
}

static void adamw_update_rows(float* p, const float* grad, const int32_t* row_of, float* m, float* v, int64_t rows,
                              int64_t width, const adamw_hparams& h, int64_t step, bool decay, float grad_scale) {
    LOCK;
    const double bc1 = 1.0 - std::pow(h.beta1, (double)step), bc2 = 1.0 - std::pow(h.beta2, (double)step);
    struct {
        uint64_t p, g, row_of, m, v;
        uint32_t rows, width;
        float    step_size, bc2_sqrt, b1, b2, eps, shrink, grad_scale;
    } pc{addr(d, p, "adamw_rows"), addr(d, grad, "adamw_rows"), addr(d, row_of, "adamw_rows"), addr(d, m, "adamw_rows"),
         addr(d, v, "adamw_rows"), (uint32_t)rows, (uint32_t)width, (float)(h.lr / bc1), (float)std::sqrt(bc2),
         (float)h.beta1, (float)h.beta2, (float)h.eps, decay ? (float)(1.0 - h.lr * h.weight_decay) : 1.0f, grad_scale};
    dispatch(d, "adamw_rows", groups_for(rows * width), pc);
}

static void dropout(float* out, const float* x, int64_t n, float p, uint64_t key) {
    LOCK;
    struct { uint64_t out, x, key, threshold; uint32_t n; float keep_scale; } pc{
        addr(d, out, "dropout"), addr(d, x, "dropout"), key, (uint64_t)std::ceil((double)p * 0x1.0p53), (uint32_t)n,
        1.0f / (1.0f - p)};
    dispatch(d, "dropout", groups_for(n), pc);
}

// the CPU's stream, generated on the host and uploaded (init runs once; the values are then the
// CPU backend's bit for bit)
static void fill_normal(float* dst, uint16_t* dst16, int64_t n, double std, uint64_t seed, uint64_t stream) {
    LOCK;
    if (dst16) {
        std::vector<uint16_t> h((size_t)n);
        backend_cpu_plain().fill_normal(nullptr, h.data(), n, std, seed, stream);
        mem_upload(dst16, h.data(), (size_t)n * 2);
    } else {
        std::vector<float> h((size_t)n);
        backend_cpu_plain().fill_normal(h.data(), nullptr, n, std, seed, stream);
        mem_upload(dst, h.data(), (size_t)n * 4);
    }
}

}  // namespace vk

const backend& backend_vulkan(int index) {
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    if (!vk::g_dev) vk::start(index);
    else if (index != vk::g_index)
        fail(strf("--device vulkan:%d: this process already uses vulkan:%d (one device per process)", index, vk::g_index));
    static const backend table = [] {
        backend t{};
        t.name = "vulkan";
        t.set_threads = vk::set_threads;
        t.reserve = vk::reserve;
t.gemm = vk::gemm;
        t.linear_forward = vk::linear_forward;
        t.linear_backward = vk::linear_backward;
        t.linear_forward_bf16 = vk::linear_forward_bf16;
        t.linear_backward_bf16 = vk::linear_backward_bf16;
        t.linear_forward_q = vk::linear_forward_q;
        t.linear_backward_q = vk::linear_backward_q;
        t.rmsnorm_forward = vk::rmsnorm_forward;
        t.rmsnorm_backward = vk::rmsnorm_backward;
        t.rope_forward = vk::rope_forward;
        t.rope_backward = vk::rope_backward;
        t.rope_tables = vk::rope_tables;
        t.attention_forward = vk::attention_forward;
        t.attention_backward = vk::attention_backward;
        t.attention_forward_kv = vk::attention_forward_kv;
        t.dropout = vk::dropout;
        t.embedding_backward = vk::embedding_backward;
        t.embedding_backward_rows = vk::embedding_backward_rows;
        t.lmhead_xent = vk::lmhead_xent;
        t.lora_fold = vk::lora_fold;
        t.adamw_update_rows = vk::adamw_update_rows;
        t.fill_normal = vk::fill_normal;
        t.swiglu_forward = vk::swiglu_forward;
        t.swiglu_backward = vk::swiglu_backward;
        t.geglu_forward = vk::geglu_forward;
        t.geglu_backward = vk::geglu_backward;
        t.add = vk::add;
        t.scale = vk::scale;
        t.softcap = vk::softcap;
        t.zero = vk::zero;
        t.copy = vk::copy;
        t.embedding_forward = vk::embedding_forward;
        t.embedding_forward_bf16 = vk::embedding_forward_bf16;
        t.embedding_forward_q = vk::embedding_forward_q;
        t.adamw_update = vk::adamw_update;
        t.sum_of_squares = vk::sum_of_squares;
        t.fill = vk::fill;
        t.bf16_to_f32 = vk::bf16_to_f32;
        t.f32_to_bf16 = vk::f32_to_bf16;
        t.mem_alloc = vk::mem_alloc;
        t.mem_free = vk::mem_free;
        t.mem_upload = vk::mem_upload;
        t.mem_download = vk::mem_download;
        t.mem_copy = vk::mem_copy;
        t.mem_zero = vk::mem_zero;
        t.mem_release = vk::mem_release;
        t.mem_host = vk::mem_host;
        t.sync = vk::sync;
        return t;
    }();
    return table;
}

std::vector<vulkan_device_info> vulkan_devices(std::string* why) {
    vk::instance& I = vk::get_instance();
    if (!I.inst) {
        *why = I.error;
        return {};
    }
    std::vector<vulkan_device_info> out;
    int i = 0;
    for (VkPhysicalDevice p : vk::physical_devices()) {
        VkPhysicalDeviceProperties pr;
        vkGetPhysicalDeviceProperties(p, &pr);
        vulkan_device_info info;
        info.index = i++;
        info.name = pr.deviceName;
        switch (pr.deviceType) {
            case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: info.type = "discrete"; break;
            case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: info.type = "integrated"; break;
            case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: info.type = "virtual"; break;
            case VK_PHYSICAL_DEVICE_TYPE_CPU: info.type = "cpu"; break;
            default: info.type = "other";
        }
        info.memory_bytes = vk::device_local_bytes(p);
        info.why_not = vk::unusable(p);
        info.usable = info.why_not.empty();
        out.push_back(info);
    }
    if (out.empty()) *why = "the Vulkan loader found no device";
    return out;
}

int vulkan_validation_messages() { return vk::g_validation_messages; }

int vulkan_validation_selftest() {
    if (!vk::g_dev) return 0;
    vk::device& d = *vk::g_dev;
    std::lock_guard<std::recursive_mutex> lock(d.mu);
    vk::flush(d);
    const int before = vk::g_validation_messages;
    VkCommandBuffer cb;
    VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    cai.commandPool = d.pool;
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    vk::check(vkAllocateCommandBuffers(d.dev, &cai, &cb), "vkAllocateCommandBuffers");
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    vkBeginCommandBuffer(cb, &bi);
    vkCmdFillBuffer(cb, d.staging, 2, 4, 0);  // invalid: dstOffset must be a multiple of 4
    vkEndCommandBuffer(cb);
    vkFreeCommandBuffers(d.dev, d.pool, 1, &cb);
    const int drawn = vk::g_validation_messages - before;
    vk::g_validation_messages = before;
    return drawn;
}

std::string vulkan_current_device() {
    if (!vk::g_dev) return "";
    VkPhysicalDeviceProperties pr;
    vkGetPhysicalDeviceProperties(vk::g_dev->phys, &pr);
    return strf("vulkan:%d %s", vk::g_index, pr.deviceName);
}

void vulkan_memory(uint64_t* bytes) {
    *bytes = 0;
    if (!vk::g_dev) return;
    std::lock_guard<std::recursive_mutex> lock(vk::g_dev->mu);
    for (const auto& [host, a] : vk::g_dev->live) *bytes += a.size;
}

void vulkan_counters(uint64_t* dispatches, uint64_t* submits) {
    *dispatches = vk::g_dispatches;
    *submits = vk::g_submits;
}

}  // namespace lisa
