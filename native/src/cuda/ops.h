// The CUDA side beyond the operations themselves (those are Ops<Cuda> of common/ops.h, in
// kernels.cu and fused.cu): the probe, and device-level calls (namespace dev, device pointers)
// for the harness's timings at sizes that fill a GPU and for fused.cu. No CUDA or N-API types
// here, so the N-API addon (addon.cc, compiled by g++), the standalone harness
// (native/cuda-harness) and the CPU emulation build of the kernels all include it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "../common/ops.h"

namespace lora {
namespace cuda {

struct Probe {
  bool libcuda = false;     // libcuda.so.1 could be dlopen'ed
  std::string dlerror;      // why not
  int deviceCount = 0;
  int driverVersion = 0;
  int runtimeVersion = 0;
  int error = 0;            // cudaError_t of the probe, 0 = success
  std::string errorString;
  std::string device;       // name of device 0
  int ccMajor = 0, ccMinor = 0;
  size_t memoryBytes = 0;
  int multiprocessors = 0;
  std::string blas;         // "cuBLAS <version> (<library>)", or why the own GEMM kernel is used
};

/** Never throws; safe without a driver or GPU (static cudart reports error 35 or 100). */
Probe probe();

namespace dev {
// Device-resident building blocks (pointers are device memory, row-major unless named *Col).

/** Fills n values with N(0,1) from a counter-based generator (deterministic for a seed). */
template <typename T>
Status randn(T* d, size_t n, uint64_t seed);
template <typename T>
Status gemm(const T* a, int aRows, int aCols, const T* b, int bRows, int bCols, bool transA, bool transB, T alpha,
            T* c);
/** Orthonormal basis Q (m×n, row-major, m ≥ n) of the columns of Y (m×n row-major). */
template <typename T>
Status orthonormalize(const T* y, int m, int n, T* q);
/**
 * Randomized SVD (Halko et al. 4.4 + 5.1, docs/algorithms.md §2.4) of M (d×k row-major) to rank t with
 * oversampling p and q power iterations. Host outputs: S (t); U (d×t) and Vt (t×k) are device
 * buffers when non-null.
 */
template <typename T>
Status rsvd(const T* m, int d, int k, int t, int p, int q, uint64_t seed, T* hostS, T* devU, T* devVt);
/** The same with a given device test matrix Ω (k×l): t ≤ l ≤ min(d, k). */
template <typename T>
Status rsvdWith(const T* m, int d, int k, const T* omega, int l, int q, int t, T* hostS, T* devU, T* devVt);
/** Lloyd on device points x (n×d) from device centroids c (k×d, updated in place). */
Status kmeansLloyd(const double* x, int n, int d, double* c, int k, const double* hostWeights, int maxIter,
                   double tol, int32_t* hostLabels, KmeansOut* out);
Status synchronize();
}  // namespace dev

}  // namespace cuda
}  // namespace lora
