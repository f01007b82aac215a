// lora_cuda.node: N-API surface of the CUDA operations (kernels.cu, own kernels on a statically
// linked cudart). It loads on any machine (no libcudart or libcuda needed to load); probe() says
// whether a driver and GPU are there, and linalg/native.ts only uses it when one is. Every
// compute call is an AsyncWorker resolving a Promise (common/napi_ops.h). The raw signatures are
// mirrored by `CudaBinding` in linalg/native.ts (bump kAbiVersion with any change).
#include "../common/napi_ops.h"
#include "ops.h"

namespace {

constexpr int kAbiVersion = 1;

struct CudaOps {
  static constexpr const char* prefix = "lora_cuda";
  template <typename T>
  static lora::Status gemm(const T* a, int ar, int ac, const T* b, int br, int bc, bool ta, bool tb, T alpha, T* c) {
    return lora::cuda::gemm<T>(a, ar, ac, b, br, bc, ta, tb, alpha, c);
  }
  template <typename T>
  static lora::Status qr(const T* a, int m, int n, T* q, T* r) {
    return lora::cuda::qr<T>(a, m, n, q, r);
  }
  template <typename T>
  static lora::Status svd(const T* a, int m, int n, T* u, T* s, T* vt) {
    return lora::cuda::svd<T>(a, m, n, u, s, vt);
  }
  template <typename T>
  static lora::Status eigSym(const T* a, int n, T* values, T* vectors) {
    return lora::cuda::eigSym<T>(a, n, values, vectors);
  }
  static lora::Status kmeansLloyd(const double* x, int n, int d, const double* init, int k, const double* w,
                                  int maxIter, double tol, double* c, int32_t* labels, lora::KmeansOut* out) {
    return lora::cuda::kmeansLloyd(x, n, d, init, k, w, maxIter, tol, c, labels, out);
  }
};

using namespace lora::napi;

Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  lora::cuda::Probe p = lora::cuda::probe();
  Napi::Object o = Napi::Object::New(env);
  o.Set("libcuda", p.libcuda);
  if (!p.libcuda) o.Set("dlerror", p.dlerror);
  o.Set("deviceCount", p.deviceCount);
  o.Set("driverVersion", p.driverVersion);
  o.Set("runtimeVersion", p.runtimeVersion);
  o.Set("error", p.error);
  o.Set("errorString", p.errorString);
  if (p.deviceCount > 0) {
    o.Set("device", p.device);
    o.Set("computeCapability", std::to_string(p.ccMajor) + "." + std::to_string(p.ccMinor));
    o.Set("memoryBytes", double(p.memoryBytes));
    o.Set("multiprocessors", p.multiprocessors);
  }
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
  exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
  exports.Set("gemm", Napi::Function::New(env, Gemm<CudaOps>, "gemm"));
  exports.Set("qr", Napi::Function::New(env, Qr<CudaOps>, "qr"));
  exports.Set("svd", Napi::Function::New(env, Svd<CudaOps>, "svd"));
  exports.Set("eigSym", Napi::Function::New(env, EigSym<CudaOps>, "eigSym"));
  exports.Set("kmeansLloyd", Napi::Function::New(env, KmeansLloyd<CudaOps>, "kmeansLloyd"));
  return exports;
}

}  // namespace

NODE_API_MODULE(lora_cuda, Init)
