// Result of a native operation, shared by the CPU and CUDA code (no N-API, no CUDA headers).
#pragma once
#include <string>
#include <utility>

namespace lora {

struct Status {
  std::string code;     // "" = ok; else "NO_BLAS", "LAPACK_INFO", "CUDA", "ALLOC", "NO_CONVERGENCE", …
  std::string message;  // human-readable, names the routine
  int info = 0;         // LAPACK info when code == "LAPACK_INFO"
  bool ok() const { return code.empty(); }
  static Status fail(std::string c, std::string m, int i = 0) {
    Status s;
    s.code = std::move(c);
    s.message = std::move(m);
    s.info = i;
    return s;
  }
};

struct KmeansOut {
  double inertia = 0;
  int iterations = 0;
};

}  // namespace lora
