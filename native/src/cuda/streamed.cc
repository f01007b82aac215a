// Ops<Cuda>'s streamed full-model kernels (common/streamed.h) for the cuda addon: the products, QR
// and SVD by Ops<Cuda>'s own gemm/qr/svd on host buffers (each call uploads its operands), the
// decode/add/encode loops on the host. Not run on a GPU yet (built, untested on a device).
#include "../common/streamed.h"

namespace lora {

// Instantiates the members defined in common/streamed.h; the other members are defined (and
// instantiated) by the cuda files that write them.
template struct Ops<Cuda>;

}  // namespace lora
