#include "kernels/host_memory.h"

#include <cstring>
#include <sys/mman.h>

#include "core/error.h"

namespace lisa::host_memory {

static const size_t kPage = 4096;

void* alloc(size_t bytes) {
    if (bytes == 0) return nullptr;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) fail(strf("out of memory: cannot reserve %zu MiB", bytes >> 20));
    return p;
}

void free(void* p, size_t bytes) {
    if (p) munmap(p, bytes);
}

void upload(void* dst, const void* host, size_t bytes) {
    if (bytes) std::memcpy(dst, host, bytes);
}

void download(void* host, const void* src, size_t bytes) {
    if (bytes) std::memcpy(host, src, bytes);
}

void copy(void* dst, const void* src, size_t bytes) {
    if (bytes) std::memmove(dst, src, bytes);
}

void zero(void* p, size_t bytes) {
    if (bytes) std::memset(p, 0, bytes);
}

void release(void* p, size_t bytes) {
    char* b = (char*)p;
    char* e = b + bytes;
    char* pb = (char*)(((size_t)b + kPage - 1) / kPage * kPage);
    char* pe = (char*)((size_t)e / kPage * kPage);
    if (pe > pb) {
        std::memset(b, 0, pb - b);
        madvise(pb, pe - pb, MADV_DONTNEED);  // anonymous private pages read back as zero
        std::memset(pe, 0, e - pe);
    } else {
        std::memset(b, 0, e - b);
    }
}

void* host(void* p) { return p; }

void sync() {}

}  // namespace lisa::host_memory
