// Ops<Cpu>'s streamed full-model kernels (common/streamed.h) for the cpu addon: products by BLAS
// sgemm, QR and SVD by LAPACK, as the cpu backend's gemm/qr/svd.
#include "../common/streamed.h"

namespace lora {

// Instantiates the members defined in common/streamed.h; the other members are defined (and
// instantiated) by the cpu files that write them.
template struct Ops<Cpu>;

}  // namespace lora
