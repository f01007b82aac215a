// A CPU emulation of the small part of CUDA that native/src/cuda/kernels.cu uses, so that the
// kernels' logic (indexing, bounds, __syncthreads placement, host orchestration) can be tested on
// a machine without a GPU. Force-included when compiling kernels.cu as C++:
//   g++ -std=c++17 -O1 -DLORA_CUDA_EMU -include emu/cuda_emu.h -x c++ ../src/cuda/kernels.cu …
//
// Model: blocks run one after another; the threads of a block run as fibers (ucontext) on one OS
// thread, each until its next __syncthreads(), so a block's threads interleave exactly at the
// barriers. `__shared__` becomes `static`, which is per-block shared storage since blocks never
// overlap. A barrier reached by some threads while others have exited is reported (divergent
// __syncthreads is undefined behaviour on a GPU). Device memory is host memory.
// It is for correctness only: thousands of times slower than a GPU.
#pragma once
#ifndef LORA_CUDA_EMU
#define LORA_CUDA_EMU 1
#endif

#include <ucontext.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct emu_uint3 {
  unsigned x, y, z;
};

namespace lora_emu {

inline emu_uint3 tIdx{0, 0, 0}, bIdx{0, 0, 0};
inline dim3 bDim, gDim;

struct Fiber {
  ucontext_t ctx;
  emu_uint3 idx;
  bool done;
};

inline ucontext_t schedCtx;
inline std::vector<Fiber>* fibers = nullptr;
inline int current = 0;
inline const std::function<void()>* body = nullptr;
inline unsigned long long launches = 0, barriers = 0;

constexpr size_t kStack = 128 * 1024;

inline std::vector<char>& stackPool(size_t threads) {
  static std::vector<char> pool;
  if (pool.size() < threads * kStack) pool.resize(threads * kStack);
  return pool;
}

inline void entry() {
  (*body)();
  (*fibers)[current].done = true;
}  // returns to uc_link (the scheduler)

inline void syncthreads() {
  barriers++;
  swapcontext(&(*fibers)[current].ctx, &schedCtx);
}

[[noreturn]] inline void die(const char* m) {
  std::fprintf(stderr, "cuda_emu: %s\n", m);
  std::abort();
}

inline void launch(dim3 g, dim3 b, std::function<void()> fn) {
  launches++;
  unsigned nt = b.x * b.y * b.z;
  if (nt == 0 || nt > 1024) die("block size must be 1..1024 threads");
  if (b.z > 64 || g.y > 65535 || g.z > 65535) die("grid/block dimension out of range");
  std::vector<Fiber> fs(nt);
  std::vector<char>& stacks = stackPool(nt);
  gDim = g;
  bDim = b;
  body = &fn;
  fibers = &fs;
  for (unsigned bz = 0; bz < g.z; bz++)
    for (unsigned by = 0; by < g.y; by++)
      for (unsigned bx = 0; bx < g.x; bx++) {
        bIdx = {bx, by, bz};
        for (unsigned t = 0; t < nt; t++) {
          Fiber& f = fs[t];
          f.idx = {t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
          f.done = false;
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = stacks.data() + size_t(t) * kStack;
          f.ctx.uc_stack.ss_size = kStack;
          f.ctx.uc_link = &schedCtx;
          makecontext(&f.ctx, entry, 0);
        }
        for (;;) {
          unsigned finished = 0, waiting = 0;
          for (unsigned t = 0; t < nt; t++) {
            if (fs[t].done) continue;
            current = int(t);
            tIdx = fs[t].idx;
            swapcontext(&schedCtx, &fs[t].ctx);
            if (fs[t].done) finished++;
            else waiting++;
          }
          if (waiting == 0) break;
          if (finished > 0) die("__syncthreads() reached by some threads of a block while others exited");
        }
      }
  fibers = nullptr;
}

}  // namespace lora_emu

#define threadIdx (::lora_emu::tIdx)
#define blockIdx (::lora_emu::bIdx)
#define blockDim (::lora_emu::bDim)
#define gridDim (::lora_emu::gDim)
#define __syncthreads() ::lora_emu::syncthreads()
namespace lora_emu {
// Arguments are evaluated at the launch, by value, as a real kernel launch does.
template <typename K, typename... A>
void launchArgs(dim3 g, dim3 b, K kernel, A... args) {
  launch(g, b, [=]() { kernel(args...); });
}
}  // namespace lora_emu
#define LORA_LAUNCH(kernel, grid, block, ...) ::lora_emu::launchArgs((grid), (block), kernel, __VA_ARGS__)

// ---- runtime API subset ----------------------------------------------------------------------
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInvalidValue = 1 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor, multiProcessorCount;
};
typedef std::chrono::steady_clock::time_point* cudaEvent_t;

inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorMemoryAllocation ? "out of memory" : "invalid value";
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n);
  if (!*p) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xA5, n);  // device memory is not zeroed: poison it to catch reads of unset values
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  std::memmove(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* d, int v, size_t n) {
  std::memset(d, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof(*p));
  std::snprintf(p->name, sizeof(p->name), "CPU emulation (cuda_emu.h)");
  p->totalGlobalMem = size_t(1) << 32;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 1;
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* freeB, size_t* total) {
  *freeB = *total = size_t(1) << 32;
  return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new std::chrono::steady_clock::time_point();
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, int = 0) {
  *e = std::chrono::steady_clock::now();
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(*b - *a).count();
  return cudaSuccess;
}
