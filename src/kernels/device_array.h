// device_array<T>: the one type through which the model, the trainer and the decoder hold tensor
// memory (parameters, gradients, optimizer state, activations, KV cache, and the token ids and maps
// kernels read). It is bound to the backend that allocated it and lives in that backend's device
// memory (kernels.h, "device memory"): data() is a device address to hand to that backend's
// kernels (and to offset into), never for the host to dereference; the host reads and writes the
// contents through read/write/host_copy, which the backend carries out as downloads and uploads.
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

#include "core/error.h"
#include "kernels/kernels.h"

namespace lisa {

template <typename T>
class device_array {
  public:
    device_array() = default;
    // n zeroed elements in be's memory
    device_array(const backend& be, size_t n) : be_(&be) { allocate(n); }
    device_array(const device_array& o) : be_(o.be_) {
        allocate(o.n_);
        if (n_) be_->mem_copy(p_, o.p_, bytes());
    }
    device_array(device_array&& o) noexcept : be_(o.be_), p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
    device_array& operator=(device_array o) noexcept {
        std::swap(be_, o.be_);
        std::swap(p_, o.p_);
        std::swap(n_, o.n_);
        return *this;
    }
    ~device_array() {
        if (p_) be_->mem_free(p_, bytes());
    }
    // device addresses, for kernels of be() only
    T*             data() { return p_; }
    const T*       data() const { return p_; }
    size_t         size() const { return n_; }
    bool           empty() const { return n_ == 0; }
    const backend* be() const { return be_; }
    // n zeroed elements: a new allocation when the size changes, else the same one cleared
    void reset(size_t n) {
        if (n != n_) *this = device_array(*be_, n);
        else zero();
    }
    // Makes room for at least n elements (contents kept only when no reallocation is needed).
    void reserve(size_t n) {
        if (n > n_) *this = device_array(*be_, n);
    }
    void zero(size_t off = 0, size_t n = (size_t)-1) {
        if (n == (size_t)-1) n = n_ - off;
        check(off, n, "zero");
        if (n) be_->mem_zero(p_ + off, n * sizeof(T));
    }
    // Host values into a new allocation of their size in be's memory.
    void assign(const backend& be, const std::vector<T>& v) {
        *this = device_array(be, v.size());
        write(0, v.data(), v.size());
    }
    // Host <-> device: n elements at element offset off.
    void write(size_t off, const T* src, size_t n) {
        check(off, n, "write");
        if (n) be_->mem_upload(p_ + off, src, n * sizeof(T));
    }
    void read(size_t off, T* dst, size_t n) const {
        check(off, n, "read");
        if (n) be_->mem_download(dst, p_ + off, n * sizeof(T));
    }
    std::vector<T> read(size_t off, size_t n) const {
        std::vector<T> v(n);
        read(off, v.data(), n);
        return v;
    }
    // The contents on the host (tests, checkpoints).
    std::vector<T> host_copy() const { return read(0, n_); }
    // Zeroes [off, off+n) and gives its backing memory back where the backend can.
    void release(size_t off, size_t n) {
        check(off, n, "release");
        if (n) be_->mem_release(p_ + off, n * sizeof(T));
    }
    bool operator==(const device_array& o) const { return n_ == o.n_ && host_copy() == o.host_copy(); }
    bool operator!=(const device_array& o) const { return !(*this == o); }

  private:
    size_t bytes() const { return n_ * sizeof(T); }
    void   allocate(size_t n) {
        n_ = n;
        p_ = n ? (T*)be_->mem_alloc(bytes()) : nullptr;
    }
    void check(size_t off, size_t n, const char* what) const {
        LISA_ASSERT(off <= n_ && n <= n_ - off, what, "range outside the device array");
    }
    const backend* be_ = nullptr;
    T*             p_ = nullptr;
    size_t         n_ = 0;
};

// Host <-> device for an address inside some device allocation of `be` (a tensor inside the
// parameter buffer): n elements.
template <typename T>
void device_write(const backend& be, T* dst, const T* src, size_t n) {
    if (n) be.mem_upload(dst, src, n * sizeof(T));
}
template <typename T>
void device_read(const backend& be, T* dst, const T* src, size_t n) {
    if (n) be.mem_download(dst, src, n * sizeof(T));
}
template <typename T>
std::vector<T> device_read(const backend& be, const T* src, size_t n) {
    std::vector<T> v(n);
    device_read(be, v.data(), src, n);
    return v;
}

}  // namespace lisa
