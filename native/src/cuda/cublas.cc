// cuBLAS through dlopen (cublas.h): the handful of entry points lora uses, declared here with
// their C ABI (cublas_api.h: handles are pointers, enums are ints, status 0 = success).
#include "cublas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace lora {
namespace cuda {
namespace blas {

namespace {

using Handle = void*;
using Create = int (*)(Handle*);
using Version = int (*)(Handle, int*);
using Dgemm = int (*)(Handle, int, int, int, int, int, const double*, const double*, int, const double*, int,
                      const double*, double*, int);
using Sgemm = int (*)(Handle, int, int, int, int, int, const float*, const float*, int, const float*, int,
                      const float*, float*, int);

struct Lib {
  Handle handle = nullptr;
  Dgemm dgemm = nullptr;
  Sgemm sgemm = nullptr;
  std::string what;
};

Lib open() {
  Lib l;
#ifdef LORA_CUDA_EMU
  l.what = "own GEMM kernel (CPU emulation of CUDA)";
  return l;
#endif
  if (const char* off = std::getenv("LORA_CUBLAS"); off && std::string(off) == "0") {
    l.what = "own GEMM kernel (LORA_CUBLAS=0)";
    return l;
  }
  const char* env = std::getenv("LORA_CUBLAS");
  const char* names[] = {env, "libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  void* h = nullptr;
  std::string name, err;
  for (const char* n : names) {
    if (!n || !*n) continue;
    h = dlopen(n, RTLD_NOW | RTLD_LOCAL);
    if (h) {
      name = n;
      break;
    }
    const char* e = dlerror();
    if (err.empty() && e) err = e;
  }
  if (!h) {
    l.what = "own GEMM kernel (no cuBLAS: " + (err.empty() ? std::string("libcublas.so.13 not found") : err) + ")";
    return l;
  }
  auto create = reinterpret_cast<Create>(dlsym(h, "cublasCreate_v2"));
  auto version = reinterpret_cast<Version>(dlsym(h, "cublasGetVersion_v2"));
  l.dgemm = reinterpret_cast<Dgemm>(dlsym(h, "cublasDgemm_v2"));
  l.sgemm = reinterpret_cast<Sgemm>(dlsym(h, "cublasSgemm_v2"));
  int st = create && l.dgemm && l.sgemm ? create(&l.handle) : -1;
  if (st != 0) {
    l.handle = nullptr;
    l.what = "own GEMM kernel (" + name + ": cublasCreate failed, status " + std::to_string(st) + ")";
    return l;
  }
  int v = 0;
  if (version) version(l.handle, &v);
  l.what = "cuBLAS " + std::to_string(v) + " (" + name + ")";
  return l;
}

const Lib& lib() {
  static std::once_flag once;
  static Lib l;
  std::call_once(once, [] { l = open(); });
  return l;
}

}  // namespace

bool gemm(bool f64, bool transA, bool transB, int m, int n, int k, double alpha, const void* A, int lda,
          const void* B, int ldb, void* C, int ldc) {
  const Lib& l = lib();
  if (!l.handle) return false;
  const int ta = transA ? 1 : 0, tb = transB ? 1 : 0;  // CUBLAS_OP_N = 0, CUBLAS_OP_T = 1
  if (f64) {
    const double a = alpha, beta = 0;
    return l.dgemm(l.handle, ta, tb, m, n, k, &a, static_cast<const double*>(A), lda, static_cast<const double*>(B),
                   ldb, &beta, static_cast<double*>(C), ldc) == 0;
  }
  const float a = float(alpha), beta = 0;
  return l.sgemm(l.handle, ta, tb, m, n, k, &a, static_cast<const float*>(A), lda, static_cast<const float*>(B), ldb,
                 &beta, static_cast<float*>(C), ldc) == 0;
}

std::string describe() { return lib().what; }

}  // namespace blas
}  // namespace cuda
}  // namespace lora
