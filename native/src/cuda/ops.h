// The CUDA operations, on cudart only (no cuBLAS/cuSOLVER on these machines): own kernels in
// kernels.cu. This header has no CUDA or N-API types, so the N-API addon (addon.cc, compiled by
// g++), the standalone harness (native/cuda-harness) and the CPU emulation build of the kernels
// all include it.
//
// Host-level calls take and return row-major host buffers, with the same semantics as the CPU
// addon (native/src/cpu/ops.h) and linalg/types.ts. Device-level calls (namespace dev) work on
// device pointers and exist for the harness's timings at sizes that fill a GPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "../common/status.h"

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
};

/** Never throws; safe without a driver or GPU (static cudart reports error 35 or 100). */
Probe probe();

template <typename T>
Status gemm(const T* a, int aRows, int aCols, const T* b, int bRows, int bCols, bool transA, bool transB, T alpha,
            T* c);
/** Householder QR on the GPU; R's diagonal ≥ 0 (as every backend). */
template <typename T>
Status qr(const T* a, int m, int n, T* q, T* r);
/** One-sided Jacobi SVD (after a Householder QR when m ≥ 2n); S descending. */
template <typename T>
Status svd(const T* a, int m, int n, T* u, T* s, T* vt);
/** Jacobi on A + ‖A‖_F·I (positive semidefinite), eigenvalues as Rayleigh quotients; descending. */
template <typename T>
Status eigSym(const T* a, int n, T* values, T* vectors);
/** Same semantics as the CPU kmeansLloyd (deterministic: no atomics, fixed summation order). */
Status kmeansLloyd(const double* x, int n, int d, const double* init, int k, const double* weights, int maxIter,
                   double tol, double* centroids, int32_t* labels, KmeansOut* out);

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
/** Lloyd on device points x (n×d) from device centroids c (k×d, updated in place). */
Status kmeansLloyd(const double* x, int n, int d, double* c, int k, const double* hostWeights, int maxIter,
                   double tol, int32_t* hostLabels, KmeansOut* out);
Status synchronize();
}  // namespace dev

}  // namespace cuda
}  // namespace lora
