// The nearest-centroid step of Lloyd's k-means, shared by the cpu loop (cpu/ops.cc) and the CUDA
// kernel (cuda/kernels.cu): argmin_q ‖x‖² + ‖c_q‖² − 2 x·c_q with ties to the lowest q, from the
// point's row g of X·Cᵀ, its ‖x‖² and the centroids' ‖c_q‖².
#pragma once
#include <cmath>

#include "host_device.h"

namespace lora {

LORA_HOST_DEVICE inline int nearestCentroid(const double* g, double xx, const double* cc, int k) {
  int best = 0;
  double bestD = INFINITY;
  for (int q = 0; q < k; q++) {
    double dist = xx + cc[q] - 2 * g[q];
    if (dist < bestD) {
      bestD = dist;
      best = q;
    }
  }
  return best;
}

}  // namespace lora
