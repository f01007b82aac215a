// cuBLAS, when the machine has it: opened with dlopen at first use (LORA_CUBLAS=<path>, else
// libcublas.so.13/.12 on the library path), so the addon builds and loads without it and falls
// back to its own GEMM kernel. No CUDA headers: pointers are device pointers as void*.
#pragma once
#include <string>

namespace lora {
namespace cuda {
namespace blas {

/**
 * Column-major C (m×n, ldc) = alpha·op(A)·op(B) in float64 (f64) or float32 on the default stream,
 * plain FP32/FP64 arithmetic (no TF32). False when cuBLAS is not there or refused the call: the
 * caller runs its own kernel.
 */
bool gemm(bool f64, bool transA, bool transB, int m, int n, int k, double alpha, const void* A, int lda,
          const void* B, int ldb, void* C, int ldc);

/** "cuBLAS 130100 (libcublas.so.13)", or "own GEMM kernel (why cuBLAS is not used)". */
std::string describe();

}  // namespace blas
}  // namespace cuda
}  // namespace lora
