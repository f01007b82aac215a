// Ops<Cpu> of the streamed full-model kernels (common/streamed.h): products by BLAS sgemm, QR and
// SVD by LAPACK, as the cpu backend's gemm/qr/svd.
#include "../common/streamed.h"

namespace lora {

template <>
Status Ops<Cpu>::mergeWeight(const MergeArgs& a, MergeOutcome* o) {
  return streamed::mergeWeight<Ops<Cpu>>(a, o);
}

template <>
Status Ops<Cpu>::weightDelta(const uint8_t* tuned, const uint8_t* base, int dtype, int64_t n, float* delta, double* norm2,
                             int64_t* firstNonFinite, int* which) {
  return streamed::weightDelta(tuned, base, dtype, n, delta, norm2, firstNonFinite, which);
}

template <>
Status Ops<Cpu>::sketch(const SketchArgs& a, SketchOut* o) {
  return streamed::sketch<Ops<Cpu>>(a, o);
}

}  // namespace lora
