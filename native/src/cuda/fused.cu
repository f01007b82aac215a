// Ops<Cuda> (common/ops.h) on raw factor bytes, and the randomized SVD. The factors are decoded on
// the device (common/halfs.h, the same conversions as the cpu kernels) and their float64 Grams
// formed there (cuBLAS dgemm when present, else the own GEMM kernel); the r×r algebra and the
// thin products of the fused truncation then run on the host through the cpu code given those
// Grams (TruncateArgs::grams, cpu/truncate.cc), so both backends share one implementation of the
// maths of docs/algorithms.md §2.2.
#include <cmath>
#include <cstring>
#include <vector>

#include "../common/halfs.h"
#include "../cpu/truncate.h"
#include "device.h"

namespace lora {
namespace cuda {
namespace {

// dst[i] = value i of the little-endian raw bytes (dtype codes of common/ops.h), exact in double.
__global__ void decodeK(const uint8_t* raw, int dtype, size_t n, double* dst) {
  size_t i = size_t(blockIdx.x) * TPB + threadIdx.x;
  if (i >= n) return;
  double v;
  if (dtype == 0) {
    float f;
    memcpy(&f, raw + 4 * i, 4);
    v = f;
  } else if (dtype == 1 || dtype == 2) {
    uint16_t h = uint16_t(raw[2 * i] | (uint16_t(raw[2 * i + 1]) << 8));
    v = dtype == 1 ? halfToFloat(h) : bf16ToFloat(h);
  } else {
    memcpy(&v, raw + 8 * i, 8);
  }
  dst[i] = v;
}

constexpr size_t bytesPer(int dtype) { return dtype == 0 ? 4 : dtype == 3 ? 8 : 2; }

// The n values of host raw bytes, decoded into a device buffer.
DBuf<double> decode(const uint8_t* raw, int dtype, size_t n) {
  DBuf<double> x(n);
  if (n == 0) return x;
  DBuf<uint8_t> bytes(n * bytesPer(dtype));
  bytes.upload(raw, bytes.n);
  LORA_LAUNCH(decodeK, dim3(blocksFor(n)), dim3(TPB), bytes.p, dtype, n, x.p);
  CKL("decodeK");
  return x;
}

void ok(const Status& s) {
  if (!s.ok()) throw CudaError(s.message);
}

// G (rows×rows) = X·Xᵀ when gramRows, else (cols×cols) Xᵀ·X, X on the device; downloaded, mirrored
// from the upper triangle so that it is exactly symmetric (as cpu/truncate.cc's symmetricGram).
void gramOf(const DBuf<double>& X, int rows, int cols, bool gramRows, double* host) {
  const int g = gramRows ? rows : cols;
  DBuf<double> G(size_t(g) * g);
  ok(dev::gemm<double>(X.p, rows, cols, X.p, rows, cols, !gramRows, gramRows, 1.0, G.p));
  G.download(host, G.n);
  for (int a = 0; a < g; a++)
    for (int b = a + 1; b < g; b++) host[size_t(b) * g + a] = host[size_t(a) * g + b];
}

// G_B = BᵀB then G_A = AAᵀ (r×r each) of one module, on the GPU.
void moduleGrams(const TruncateArgs& a, double* grams) {
  DBuf<double> B = decode(a.rawB, a.dtypeB, size_t(a.out) * a.r);
  gramOf(B, a.out, a.r, false, grams);
  DBuf<double> A = decode(a.rawA, a.dtypeA, size_t(a.r) * a.in);
  gramOf(A, a.r, a.in, true, grams + size_t(a.r) * a.r);
}

// Runs the cpu route of a fused operation with the Grams formed on the GPU.
template <typename F>
Status withDeviceGrams(const char* op, const TruncateArgs& a, F cpuRoute) {
  if (a.grams) return cpuRoute(a);
  if (a.r < 1 || a.out < 1 || a.in < 1) return Status::fail("BAD_SHAPE", std::string(op) + ": need non-empty factors");
  std::vector<double> grams(2 * size_t(a.r) * a.r);
  Status st = guard(op, [&] { moduleGrams(a, grams.data()); });
  if (!st.ok()) return st;
  TruncateArgs b = a;
  b.grams = grams.data();  // NaN/±Inf in the factors are refused by the cpu route before these are read
  return cpuRoute(b);
}

}  // namespace
}  // namespace cuda

using namespace cuda;

template <>
Status Ops<Cuda>::factorStats(const uint8_t* raw, int dtype, int rows, int cols, bool gramRows, double* data,
                              double* gram, int64_t* firstNonFinite) {
  *firstNonFinite = -1;
  if (dtype < 0 || dtype > 3) return Status::fail("BAD_DTYPE", "factorStats: unknown dtype code " + std::to_string(dtype));
  return guard("factorStats", [&] {
    const size_t n = size_t(rows) * cols, g = gramRows ? rows : cols;
    std::fill(gram, gram + g * g, 0.0);
    if (n == 0) return;
    DBuf<double> X = decode(raw, dtype, n);
    X.download(data, n);
    for (size_t i = 0; i < n; i++)
      if (!std::isfinite(data[i])) {
        *firstNonFinite = int64_t(i);
        return;
      }
    gramOf(X, rows, cols, gramRows, gram);
  });
}

template <>
Status Ops<Cuda>::truncateFactors(const TruncateArgs& a, uint8_t* outB, uint8_t* outA, double* S, TruncateOutcome* o) {
  return withDeviceGrams("truncateFactors", a, [&](const TruncateArgs& b) { return CpuOps::truncateFactors(b, outB, outA, S, o); });
}

template <>
Status Ops<Cuda>::factorSpectrum(const TruncateArgs& a, double* S, double* gramsOut, TruncateOutcome* o) {
  return withDeviceGrams("factorSpectrum", a, [&](const TruncateArgs& b) { return CpuOps::factorSpectrum(b, S, gramsOut, o); });
}

template <>
template <typename T>
Status Ops<Cuda>::randomizedSvd(const T* m, int rows, int cols, const T* omega, int l, int q, int t, T* u, T* s, T* vt) {
  DBuf<T> M, Om, U, Vt;
  Status st = guard("randomizedSvd", [&] {
    M = DBuf<T>(size_t(rows) * cols);
    Om = DBuf<T>(size_t(cols) * l);
    U = DBuf<T>(size_t(rows) * t);
    Vt = DBuf<T>(size_t(t) * cols);
    M.upload(m, M.n);
    Om.upload(omega, Om.n);
  });
  if (!st.ok()) return st;
  st = dev::rsvdWith<T>(M.p, rows, cols, Om.p, l, q, t, s, U.p, Vt.p);
  if (!st.ok()) return st;
  return guard("randomizedSvd", [&] {
    U.download(u, U.n);
    Vt.download(vt, Vt.n);
  });
}

template Status Ops<Cuda>::randomizedSvd<float>(const float*, int, int, const float*, int, int, int, float*, float*, float*);
template Status Ops<Cuda>::randomizedSvd<double>(const double*, int, int, const double*, int, int, int, double*, double*,
                                                double*);

}  // namespace lora
