// Ops<Cuda> of the streamed full-model kernels (common/streamed.h): the products, QR and SVD by
// Ops<Cuda>'s own gemm/qr/svd on host buffers (each call uploads its operands), the decode/add/encode
// loops on the host. Not run on a GPU yet (built, untested on a device).
#include "../common/streamed.h"

namespace lora {

template <>
Status Ops<Cuda>::mergeWeight(const MergeArgs& a, MergeOutcome* o) {
  return streamed::mergeWeight<Ops<Cuda>>(a, o);
}

template <>
Status Ops<Cuda>::weightDelta(const uint8_t* tuned, const uint8_t* base, int dtype, int64_t n, float* delta, double* norm2,
                             int64_t* firstNonFinite, int* which) {
  return streamed::weightDelta(tuned, base, dtype, n, delta, norm2, firstNonFinite, which);
}

template <>
Status Ops<Cuda>::sketch(const SketchArgs& a, SketchOut* o) {
  return streamed::sketch<Ops<Cuda>>(a, o);
}

}  // namespace lora
