// Classical Gram–Schmidt with one re-orthogonalisation ("twice is enough") on host float64 vectors:
// the orthonormal completion of the CUDA SVD's zero columns (cuda/kernels.cu finishColumns) and the
// random orthonormal inputs of the CUDA harness (native/cuda-harness) both run it.
#pragma once
#include <cmath>
#include <cstddef>

namespace lora {

/**
 * u (n values) minus its projections on the unit vectors v_c = basis + c·n, c < count, those with
 * use(c) only, in two passes; returns ‖u‖ after (u is left unnormalised).
 */
template <class Use>
double orthogonalizeTwice(double* u, int n, const double* basis, int count, const Use& use) {
  for (int pass = 0; pass < 2; pass++)
    for (int c = 0; c < count; c++) {
      if (!use(c)) continue;
      const double* v = basis + size_t(c) * n;
      double d = 0;
      for (int i = 0; i < n; i++) d += v[i] * u[i];
      for (int i = 0; i < n; i++) u[i] -= d * v[i];
    }
  double nr = 0;
  for (int i = 0; i < n; i++) nr += u[i] * u[i];
  return std::sqrt(nr);
}

}  // namespace lora
