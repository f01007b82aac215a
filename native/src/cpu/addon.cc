// lora_cpu.node: N-API surface of the CPU operations (Ops<Cpu>: ops.cc, truncate.cc, rsvd.cc; BLAS/LAPACK
// opened at run time by blas.cc). Every compute call is an AsyncWorker resolving a Promise (common/napi_ops.h), so the
// event loop keeps running during BLAS/LAPACK work. The raw signatures are mirrored by
// `CpuBinding` in linalg/native.ts (bump kAbiVersion with any change); that file validates
// shapes and finiteness before calling in.
#include <algorithm>
#include <cstdlib>
#include <memory>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "../common/napi_fused.h"
#include "blas.h"

namespace {

constexpr int kAbiVersion = 4;

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
#if defined(__GLIBC__)
  // glibc gives every thread that allocates an arena of its own (up to 8 per core): the thread
  // pool's workers allocating and freeing multi-megabyte scratch in turn then keep several arenas'
  // worth of freed memory resident (extract's peak RSS: 288 → 251 MB on 15 weights of the
  // 1B-shaped pair with 2 arenas, docs/BENCHMARKS.md "extract and apply"). The user's
  // MALLOC_ARENA_MAX wins.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
#endif
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exportOps<lora::CpuOps>(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(lora_cpu, Init)
