// lora_cpu.node: N-API surface of the CPU operations (ops.cc, BLAS/LAPACK opened at run time by
// blas.cc). Every compute call is an AsyncWorker resolving a Promise (common/napi_ops.h), so the
// event loop keeps running during BLAS/LAPACK work. The raw signatures are mirrored by
// `CpuBinding` in linalg/native.ts (bump kAbiVersion with any change); that file validates
// shapes and finiteness before calling in.
#include "../common/napi_ops.h"
#include "blas.h"
#include "ops.h"

namespace {

constexpr int kAbiVersion = 1;

struct CpuOps {
  static constexpr const char* prefix = "lora_cpu";
  template <typename T>
  static lora::Status gemm(const T* a, int ar, int ac, const T* b, int br, int bc, bool ta, bool tb, T alpha, T* c) {
    return lora::gemm<T>(a, ar, ac, b, br, bc, ta, tb, alpha, c);
  }
  template <typename T>
  static lora::Status qr(const T* a, int m, int n, T* q, T* r) {
    return lora::qr<T>(a, m, n, q, r);
  }
  template <typename T>
  static lora::Status svd(const T* a, int m, int n, T* u, T* s, T* vt) {
    return lora::svd<T>(a, m, n, u, s, vt);
  }
  template <typename T>
  static lora::Status eigSym(const T* a, int n, T* values, T* vectors) {
    return lora::eigSym<T>(a, n, values, vectors);
  }
  static lora::Status kmeansLloyd(const double* x, int n, int d, const double* init, int k, const double* w,
                                  int maxIter, double tol, double* c, int32_t* labels, lora::KmeansOut* out) {
    return lora::kmeansLloyd(x, n, d, init, k, w, maxIter, tol, c, labels, out);
  }
};

using namespace lora::napi;

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const lora::Blas& b = lora::blas();
  Napi::Object o = Napi::Object::New(env);
  o.Set("abiVersion", kAbiVersion);
  o.Set("loaded", b.loaded);
  if (!b.loaded) o.Set("error", b.error);
  o.Set("library", b.library);
  o.Set("vendor", b.vendor);
  o.Set("corename", b.corename);
  o.Set("coretype", b.coretype);
  o.Set("coretypeSource", b.coretypeSource);
  o.Set("threads", lora::threads());
  o.Set("threadControl", b.setThreads != nullptr);
  return o;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  int n = dim(info, 0, "threads");
  lora::setThreads(n);
  return Napi::Number::New(info.Env(), lora::threads());
}


Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("gemm", Napi::Function::New(env, Gemm<CpuOps>, "gemm"));
  exports.Set("qr", Napi::Function::New(env, Qr<CpuOps>, "qr"));
  exports.Set("svd", Napi::Function::New(env, Svd<CpuOps>, "svd"));
  exports.Set("eigSym", Napi::Function::New(env, EigSym<CpuOps>, "eigSym"));
  exports.Set("kmeansLloyd", Napi::Function::New(env, KmeansLloyd<CpuOps>, "kmeansLloyd"));
  return exports;
}

}  // namespace

NODE_API_MODULE(lora_cpu, Init)
