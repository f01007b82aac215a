// Host-side plumbing shared by the .cu files of the cuda addon (not a public header): CUDA errors
// as exceptions caught by guard() into a Status, device buffers (DBuf), launch helpers, and the
// optional cuBLAS (cublas.cc, opened at run time).
#pragma once
#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "cublas.h"
#include "ops.h"

#ifndef LORA_CUDA_EMU
#include <cuda_runtime.h>
#define LORA_LAUNCH(kernel, grid, block, ...) kernel<<<(grid), (block)>>>(__VA_ARGS__)
#endif

namespace lora {
namespace cuda {

// Threads per block of the 1-D kernels (a power of two). The emulation uses fewer, which is
// faster on a CPU and checks that nothing depends on the value.
#ifdef LORA_CUDA_EMU
constexpr int TPB = 32;
#else
constexpr int TPB = 256;
#endif

struct CudaError : std::runtime_error {
  explicit CudaError(const std::string& m) : std::runtime_error(m) {}
};

inline void check(cudaError_t e, const char* what, int line) {
  if (e != cudaSuccess)
    throw CudaError(std::string("CUDA error ") + std::to_string(int(e)) + " (" + cudaGetErrorString(e) + ") in " +
                    what + " at line " + std::to_string(line));
}
#define CK(x) check((x), #x, __LINE__)
#define CKL(what) check(cudaGetLastError(), what, __LINE__)

template <typename T>
struct DBuf {
  T* p = nullptr;
  size_t n = 0;
  DBuf() = default;
  explicit DBuf(size_t count) : n(count) {
    void* v = nullptr;
    cudaError_t e = cudaMalloc(&v, std::max<size_t>(count, 1) * sizeof(T));
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw CudaError("cannot allocate " + std::to_string(count * sizeof(T) >> 20) + " MiB on the GPU (" +
                      cudaGetErrorString(e) + ")");
    }
    p = static_cast<T*>(v);
  }
  DBuf(const DBuf&) = delete;
  DBuf& operator=(const DBuf&) = delete;
  DBuf(DBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; }
  DBuf& operator=(DBuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(n, o.n);
    return *this;
  }
  ~DBuf() {
    if (p) cudaFree(p);
  }
  void upload(const T* h, size_t count) { CK(cudaMemcpy(p, h, count * sizeof(T), cudaMemcpyHostToDevice)); }
  void download(T* h, size_t count) const { CK(cudaMemcpy(h, p, count * sizeof(T), cudaMemcpyDeviceToHost)); }
};

template <typename F>
Status guard(const char* op, F f) {
  try {
    f();
    return {};
  } catch (const CudaError& e) {
    return Status::fail("CUDA", std::string(op) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", std::string(op) + ": out of host memory");
  } catch (const std::exception& e) {
    return Status::fail("CUDA", std::string(op) + ": " + e.what());
  }
}

inline unsigned blocksFor(size_t n) { return unsigned((n + TPB - 1) / TPB); }

}  // namespace cuda
}  // namespace lora
