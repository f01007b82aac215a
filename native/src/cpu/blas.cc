#include "blas.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace lora {

namespace {

Blas g_blas;
std::once_flag g_once;
std::atomic<int> g_threads{0};

// Kernel set for OpenBLAS from the CPU's features. Debian's 0.3.21 does not know recent CPU
// models and falls back to Prescott (SSE3) kernels, 5-6x slower; naming the core type fixes it.
const char* coreFromFeatures() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;
}

template <typename F>
bool sym(void* h, const char* name, F& out) {
  out = reinterpret_cast<F>(dlsym(h, name));
  return out != nullptr;
}

void load() {
  Blas& b = g_blas;
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  if (user && *user) {
    b.coretype = user;
    b.coretypeSource = "user";
  } else if (const char* core = coreFromFeatures()) {
    setenv("OPENBLAS_CORETYPE", core, 1);
    b.coretype = core;
    b.coretypeSource = "lora";
  }
  // LORA_BLAS names a library to open instead (a path or soname), for experiments and tests.
  std::string why;
  void* blasH = nullptr;
  void* lapackH = nullptr;
  const char* forced = std::getenv("LORA_BLAS");
  if (forced && *forced) {
    blasH = dlopen(forced, RTLD_NOW | RTLD_LOCAL);
    if (!blasH) why = std::string(dlerror());
    else b.library = forced;
    lapackH = blasH;
  } else {
    blasH = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (blasH) {
      b.library = "libopenblas.so.0";
      lapackH = blasH;
    } else {
      why = std::string(dlerror());
      blasH = dlopen("libblas.so.3", RTLD_NOW | RTLD_GLOBAL);
      if (!blasH) {
        why += "; " + std::string(dlerror());
      } else {
        lapackH = dlopen("liblapack.so.3", RTLD_NOW | RTLD_LOCAL);
        if (!lapackH) {
          why += "; " + std::string(dlerror());
          blasH = nullptr;
        } else {
          b.library = "libblas.so.3 + liblapack.so.3";
        }
      }
    }
  }
  if (!blasH) {
    b.error = "no BLAS/LAPACK library could be opened (" + why + ")";
    return;
  }
  // Each routine in both precisions, s… then d…: pick(routines) names the member to fill.
  auto both = [&](void* h, const char* routine, auto pick) {
    return sym(h, (std::string(Routines<float>::prefix) + routine).c_str(), pick(b.s)) &&
           sym(h, (std::string(Routines<double>::prefix) + routine).c_str(), pick(b.d));
  };
  bool ok = both(blasH, "gemm_", [](auto& r) -> auto& { return r.gemm; });
  ok = ok && both(lapackH, "geqrf_", [](auto& r) -> auto& { return r.geqrf; });
  ok = ok && both(lapackH, "orgqr_", [](auto& r) -> auto& { return r.orgqr; });
  ok = ok && both(lapackH, "gesdd_", [](auto& r) -> auto& { return r.gesdd; });
  ok = ok && both(lapackH, "syevd_", [](auto& r) -> auto& { return r.syevd; });
  if (!ok) {
    const char* e = dlerror();  // once: a second call returns null (it clears the message)
    b.error = b.library + " lacks a needed BLAS/LAPACK routine (" + std::string(e ? e : "?") + ")";
    return;
  }
  sym(blasH, "dsyrk_", b.dsyrk);
  sym(blasH, "openblas_set_num_threads", b.setThreads);
  sym(blasH, "openblas_get_num_threads", b.getThreads);
  get_str_t cfg = nullptr, core = nullptr;
  if (sym(blasH, "openblas_get_config", cfg) && cfg) {
    const char* s = cfg();
    b.vendor = s ? s : "OpenBLAS";
  } else {
    b.vendor = "reference BLAS/LAPACK (" + b.library + ")";
  }
  if (sym(blasH, "openblas_get_corename", core) && core) {
    const char* s = core();
    b.corename = s ? s : "";
  }
  b.loaded = true;
  int t = g_threads.load();
  if (t <= 0) t = b.getThreads ? b.getThreads() : static_cast<int>(std::thread::hardware_concurrency());
  if (t <= 0) t = 1;
  g_threads.store(t);
}

}  // namespace

const Blas& blas() {
  std::call_once(g_once, load);
  return g_blas;
}

void setThreads(int n) {
  if (n <= 0) return;
  const Blas& b = blas();
  g_threads.store(n);
  if (b.loaded && b.setThreads) b.setThreads(n);
}

int threads() {
  blas();
  int t = g_threads.load();
  return t > 0 ? t : 1;
}

}  // namespace lora
