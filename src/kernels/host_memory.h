// Device memory of the CPU backends: the host's own memory, allocated as anonymous mappings whose
// pages are backed only once written (MAP_NORESERVE: a 7B model's full-size fp32 buffer is
// reserved, not committed, so a bf16 model's matrices that stay in bf16 cost nothing in it), and
// given back page by page (madvise) when a LISA layer leaves. Shared by backend_cpu and
// backend_ref; the checked variant (checked.cpp) wraps these.
#pragma once
#include <cstddef>

namespace lisa::host_memory {

void* alloc(size_t bytes);
void  free(void* p, size_t bytes);
void  upload(void* dst, const void* host, size_t bytes);
void  download(void* host, const void* src, size_t bytes);
void  copy(void* dst, const void* src, size_t bytes);
void  zero(void* p, size_t bytes);
void  release(void* p, size_t bytes);
void* host(void* p);
void  sync();

}  // namespace lisa::host_memory

namespace lisa {
struct backend;
// The checked variant of a CPU backend (LISA_CHECK_DEVICE_MEMORY=1): the same kernels, with its
// device memory inaccessible outside its calls and every kernel pointer argument checked to lie in
// live device memory. `which` tells the variants apart (0: cpu, 1: ref).
const backend& backend_checked(const backend& inner, int which);
// The CPU backend on host memory, never the checked variant: for a device backend's host-side
// steps (tables and initial values it computes on the host, bit for bit as the CPU does, and uploads).
const backend& backend_cpu_plain();
// Whether LISA_CHECK_DEVICE_MEMORY=1 is set (read once).
bool device_memory_checked();
}  // namespace lisa
