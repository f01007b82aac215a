// Ops<Cpu>::randomizedSvd (common/ops.h): the randomized SVD of docs/algorithms.md §2.4 on BLAS/LAPACK,
// the same steps as linalg/randomized-svd.ts so that a test matrix gives the same factors on every
// backend up to rounding.
#include <algorithm>
#include <new>
#include <vector>

#include "../common/ops.h"

namespace lora {

template <>
template <typename T>
Status Ops<Cpu>::randomizedSvd(const T* m, int rows, int cols, const T* omega, int l, int q, int t, T* u, T* s,
                               T* vt) {
  if (l > std::min(rows, cols) || t > l || t < 1) return Status::fail("BAD_SHAPE", "randomizedSvd: need 1 ≤ t ≤ l ≤ min(m, n)");
  try {
    std::vector<T> Y(size_t(rows) * l), Q(size_t(rows) * l), Z(size_t(cols) * l), Zq(size_t(cols) * l);
    std::vector<T> R(size_t(l) * l), small(size_t(l) * cols), Us(size_t(l) * l), Ss(l), Vs(size_t(l) * cols);
    Status st;
    auto ok = [&](Status x) { st = std::move(x); return st.ok(); };
    // Q = qr(M Ω).Q, then q times Z = qr(Mᵀ Q).Q, Q = qr(M Z).Q.
    if (!ok(gemm<T>(m, rows, cols, omega, cols, l, false, false, T(1), Y.data())) || !ok(qr<T>(Y.data(), rows, l, Q.data(), R.data())))
      return st;
    for (int i = 0; i < q; i++) {
      if (!ok(gemm<T>(m, rows, cols, Q.data(), rows, l, true, false, T(1), Z.data())) ||
          !ok(qr<T>(Z.data(), cols, l, Zq.data(), R.data())) ||
          !ok(gemm<T>(m, rows, cols, Zq.data(), cols, l, false, false, T(1), Y.data())) ||
          !ok(qr<T>(Y.data(), rows, l, Q.data(), R.data())))
        return st;
    }
    // QᵀM = Us Ss Vs (l×n), U = Q Us.
    if (!ok(gemm<T>(Q.data(), rows, l, m, rows, cols, true, false, T(1), small.data())) ||
        !ok(svd<T>(small.data(), l, cols, Us.data(), Ss.data(), Vs.data())))
      return st;
    std::vector<T> Ut(size_t(l) * t);
    for (int i = 0; i < l; i++)
      for (int j = 0; j < t; j++) Ut[size_t(i) * t + j] = Us[size_t(i) * l + j];
    if (!ok(gemm<T>(Q.data(), rows, l, Ut.data(), l, t, false, false, T(1), u))) return st;
    std::copy(Ss.begin(), Ss.begin() + t, s);
    std::copy(Vs.begin(), Vs.begin() + size_t(t) * cols, vt);
    return {};
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", "randomizedSvd: out of memory");
  }
}

template Status Ops<Cpu>::randomizedSvd<float>(const float*, int, int, const float*, int, int, int, float*, float*, float*);
template Status Ops<Cpu>::randomizedSvd<double>(const double*, int, int, const double*, int, int, int, double*, double*,
                                               double*);

}  // namespace lora
