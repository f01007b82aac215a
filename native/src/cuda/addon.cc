// lora_cuda.node: N-API surface of Ops<Cuda> (kernels.cu, fused.cu; cuBLAS opened at run time by
// cublas.cc; the r×r algebra of the fused truncation from the cpu code, with BLAS/LAPACK opened by
// cpu/blas.cc). It loads on any machine (no libcudart or libcuda needed to load); probe() says
// whether a driver and GPU are there, and linalg/native only uses it when one is. Every compute
// call is an AsyncWorker resolving a Promise; the functions are those of the cpu addon
// (common/napi_fused.h exportOps), mirrored by linalg/native/binding.ts (bump kAbiVersion with any change).
#include "../common/napi_fused.h"
#include "ops.h"

namespace {

constexpr int kAbiVersion = 4;

using namespace lora::napi;

Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  lora::cuda::Probe p = lora::cuda::probe();
  Napi::Object o = Napi::Object::New(env);
  o.Set("libcuda", p.libcuda);
  if (!p.libcuda) o.Set("dlerror", p.dlerror);
  for (auto [k, v] : {std::pair<const char*, double>{"deviceCount", p.deviceCount}, {"driverVersion", p.driverVersion},
                      {"runtimeVersion", p.runtimeVersion}, {"error", p.error}})
    o.Set(k, v);
  o.Set("errorString", p.errorString);
  if (p.deviceCount > 0) {
    for (auto [k, v] : {std::pair<const char*, std::string>{"device", p.device}, {"blas", p.blas},
                        {"computeCapability", std::to_string(p.ccMajor) + "." + std::to_string(p.ccMinor)}})
      o.Set(k, v);
    o.Set("memoryBytes", double(p.memoryBytes));
    o.Set("multiprocessors", p.multiprocessors);
  }
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
  exports.Set("probe", Napi::Function::New(env, Probe, "probe"));
  exportOps<lora::CudaOps>(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(lora_cuda, Init)
