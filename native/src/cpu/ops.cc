// Ops<Cpu> (common/ops.h) on BLAS/LAPACK opened at run time (blas.cc): the dense operations,
// k-means and factorStats. The fused truncation is in truncate.cc, the randomized SVD in rsvd.cc.
#include "../common/ops.h"
#include "../common/kmeans_assign.h"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstring>
#include <limits>
#include <new>
#include <thread>
#include <vector>

#include "blas.h"
#include "../common/halfs.h"

namespace lora {

namespace {

// Runs fn(begin, end) over [0, n) in up to threads() contiguous chunks. Chunks are fixed by n and
// the thread count only; the results of the callers below do not depend on the split.
template <typename F>
void parallelFor(int64_t n, int64_t minChunk, F fn) {
  int t = threads();
  int64_t chunks = std::min<int64_t>(t, std::max<int64_t>(1, n / std::max<int64_t>(1, minChunk)));
  if (chunks <= 1) {
    fn(int64_t(0), n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(chunks - 1);
  int64_t step = (n + chunks - 1) / chunks;
  for (int64_t c = 1; c < chunks; c++) {
    int64_t b = c * step, e = std::min(n, b + step);
    if (b < e) pool.emplace_back([=] { fn(b, e); });
  }
  fn(int64_t(0), std::min(n, step));
  for (auto& th : pool) th.join();
}

// dst (cols×rows, row-major) = transpose of src (rows×cols, row-major), cache-blocked. Blocks of
// 16: with a power-of-two row length (8192 floats) the strided side of a block maps onto one set
// of the 8-way L1, so 32 lines of it thrash (qr of an 8192×74 float32 matrix: 17.3 → 16.4 ms).
template <typename T>
void transpose(const T* src, int64_t rows, int64_t cols, T* dst) {
  const int64_t B = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += B)
    for (int64_t j0 = 0; j0 < cols; j0 += B) {
      int64_t i1 = std::min(rows, i0 + B), j1 = std::min(cols, j0 + B);
      for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++) dst[j * rows + i] = src[i * cols + j];
    }
}

Status noBlas() {
  const Blas& b = blas();
  return Status::fail("NO_BLAS", b.error.empty() ? "BLAS/LAPACK not loaded" : b.error);
}

Status lapackFail(const char* routine, int info, const std::string& what) {
  std::string m = std::string(routine) + " failed (info=" + std::to_string(info) + "): ";
  if (info < 0) m += "argument " + std::to_string(-info) + " had an illegal value (a bug in lora, please report it)";
  else m += what;
  return Status::fail("LAPACK_INFO", m, info);
}

std::string name(const char* p, const char* r) { return std::string(p) + r; }

int lworkOf(double w) { return std::max(1, static_cast<int>(std::ceil(w))); }

}  // namespace

template <>
template <typename T>
Status Ops<Cpu>::gemm(const T* a, int aRows, int aCols, const T* b, int bRows, int bCols, bool transA, bool transB, T alpha,
            T* c) {
  if (!blas().loaded) return noBlas();
  // Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ, and a row-major buffer read
  // column-major is the transpose: so call gemm with the operands swapped, no copies.
  int m = transA ? aCols : aRows;
  int kk = transA ? aRows : aCols;
  int n = transB ? bRows : bCols;
  int lda = std::max(1, aCols), ldb = std::max(1, bCols), ldc = std::max(1, n);
  T beta = 0;
  if (kk == 0) {
    std::fill(c, c + int64_t(m) * n, T(0));
    return {};
  }
  blas().of<T>().gemm(transB ? "T" : "N", transA ? "T" : "N", &n, &m, &kk, &alpha, b, &ldb, a, &lda, &beta, c, &ldc, 1, 1);
  return {};
}

template <>
template <typename T>
Status Ops<Cpu>::qr(const T* a, int m, int n, T* q, T* r) {
  if (!blas().loaded) return noBlas();
  int k = std::min(m, n);
  std::vector<T> w, tau;
  try {
    w.resize(int64_t(m) * n);
    tau.resize(std::max(1, k));
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", "qr: out of memory");
  }
  transpose(a, m, n, w.data());  // column-major copy, lda = m
  int lda = std::max(1, m), info = 0, lw = -1;
  T wq = 0;
  blas().of<T>().geqrf(&m, &n, w.data(), &lda, tau.data(), &wq, &lw, &info);
  int lwork = lworkOf(double(wq));
  {
    int lw2 = -1;
    T wq2 = 0;
    blas().of<T>().orgqr(&m, &k, &k, w.data(), &lda, tau.data(), &wq2, &lw2, &info);
    lwork = std::max(lwork, lworkOf(double(wq2)));
  }
  std::vector<T> work(lwork);
  info = 0;
  blas().of<T>().geqrf(&m, &n, w.data(), &lda, tau.data(), work.data(), &lwork, &info);
  if (info != 0) return lapackFail(name(Routines<T>::prefix, "geqrf").c_str(), info, "QR factorisation failed");
  // R: the upper trapezoid of the first k rows.
  for (int i = 0; i < k; i++) {
    T* ri = r + int64_t(i) * n;
    for (int j = 0; j < i; j++) ri[j] = 0;
    for (int j = i; j < n; j++) ri[j] = w[int64_t(j) * m + i];
  }
  blas().of<T>().orgqr(&m, &k, &k, w.data(), &lda, tau.data(), work.data(), &lwork, &info);
  if (info != 0) return lapackFail(name(Routines<T>::prefix, "orgqr").c_str(), info, "forming Q failed");
  transpose(w.data(), k, m, q);  // column-major m×k (= row-major k×m) → row-major m×k
  // Sign convention shared by every backend (linalg/js too): R's diagonal ≥ 0. Q's columns are
  // flipped in one row-major pass (a pass per flipped column would stream all of Q each time).
  std::vector<T> sign(std::max(1, k), T(1));
  bool any = false;
  for (int i = 0; i < k; i++) {
    if (r[int64_t(i) * n + i] < 0) {
      for (int j = i; j < n; j++) r[int64_t(i) * n + j] = -r[int64_t(i) * n + j];
      sign[i] = T(-1), any = true;
    }
  }
  if (any)
    for (int64_t row = 0; row < m; row++)
      for (int i = 0; i < k; i++) q[row * k + i] *= sign[i];
  return {};
}

template <>
template <typename T>
Status Ops<Cpu>::svd(const T* a, int m, int n, T* u, T* s, T* vt) {
  if (!blas().loaded) return noBlas();
  // The row-major buffer is, column-major, Aᵀ (n×m). Its SVD Aᵀ = U' S V'ᵀ gives A = V' S U'ᵀ,
  // and column-major U' (n×k) is row-major Vt (k×n), column-major V'ᵀ (k×m) is row-major U (m×k).
  int k = std::min(m, n);
  std::vector<T> w;
  std::vector<int> iw;
  try {
    w.assign(a, a + int64_t(m) * n);
    iw.resize(8 * int64_t(std::max(1, k)));
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", "svd: out of memory");
  }
  int M = n, N = m, lda = std::max(1, n), ldu = std::max(1, n), ldvt = std::max(1, k), info = 0, lw = -1;
  T wq = 0;
  blas().of<T>().gesdd("S", &M, &N, w.data(), &lda, s, vt, &ldu, u, &ldvt, &wq, &lw, iw.data(), &info, 1);
  int lwork = lworkOf(double(wq));
  std::vector<T> work;
  try {
    work.resize(lwork);
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", "svd: out of memory");
  }
  info = 0;
  blas().of<T>().gesdd("S", &M, &N, w.data(), &lda, s, vt, &ldu, u, &ldvt, work.data(), &lwork, iw.data(), &info, 1);
  if (info != 0)
    return lapackFail(name(Routines<T>::prefix, "gesdd").c_str(), info,
                      info > 0 ? "the divide-and-conquer SVD did not converge" : "");
  return {};
}

template <>
template <typename T>
Status Ops<Cpu>::eigSym(const T* a, int n, T* values, T* vectors) {
  if (!blas().loaded) return noBlas();
  std::vector<T> w(a, a + int64_t(n) * n), ev(std::max(1, n));
  // Row-major lower triangle = column-major upper triangle.
  int lda = std::max(1, n), info = 0, lw = -1, liw = -1, iwq = 0;
  T wq = 0;
  // Values only: tridiagonalisation and the root-free QL/QR of dsterf, several times less work
  // than the divide and conquer with vectors for the r ≤ 64 matrices of factorSpectrum.
  const char* jobz = vectors ? "V" : "N";
  blas().of<T>().syevd(jobz, "U", &n, w.data(), &lda, ev.data(), &wq, &lw, &iwq, &liw, &info, 1, 1);
  int lwork = lworkOf(double(wq)), liwork = std::max(1, iwq);
  std::vector<T> work(lwork);
  std::vector<int> iwork(liwork);
  info = 0;
  blas().of<T>().syevd(jobz, "U", &n, w.data(), &lda, ev.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  if (info != 0)
    return lapackFail(name(Routines<T>::prefix, "syevd").c_str(), info, "the symmetric eigensolver did not converge");
  // LAPACK: ascending, eigenvector j in column j (column-major). Ours: descending, row-major.
  for (int j = 0; j < n; j++) {
    values[j] = ev[n - 1 - j];
    if (!vectors) continue;
    const T* z = w.data() + int64_t(n - 1 - j) * n;
    for (int i = 0; i < n; i++) vectors[int64_t(i) * n + j] = z[i];
  }
  return {};
}

LORA_INSTANTIATE_DENSE_OPS(Cpu, float)
LORA_INSTANTIATE_DENSE_OPS(Cpu, double)


template <>
Status Ops<Cpu>::factorStats(const uint8_t* raw, int dtype, int rows, int cols, bool gramRows, double* data, double* gram,
                   int64_t* firstNonFinite) {
  const int64_t n = int64_t(rows) * cols;
  *firstNonFinite = -1;
  if (dtype < 0 || dtype > 3) return Status::fail("BAD_DTYPE", "factorStats: unknown dtype code " + std::to_string(dtype));
  // Decode (memcpy per element: the bytes need not be aligned) and find the first non-finite value,
  // in contiguous chunks on the addon's threads (the result does not depend on the split).
  std::vector<int64_t> firstBad(std::max(1, threads()) + 1, -1);
  std::atomic<int> slot{0};
  parallelFor(n, int64_t(1) << 16, [&](int64_t b, int64_t e) {
    switch (dtype) {
      case 0:
        for (int64_t i = b; i < e; i++) { float f; std::memcpy(&f, raw + 4 * i, 4); data[i] = f; }
        break;
      case 1:
        for (int64_t i = b; i < e; i++) { uint16_t h; std::memcpy(&h, raw + 2 * i, 2); data[i] = halfToFloat(h); }
        break;
      case 2:
        for (int64_t i = b; i < e; i++) {
          uint16_t h; std::memcpy(&h, raw + 2 * i, 2); data[i] = bf16ToFloat(h);
        }
        break;
      default:
        std::memcpy(data + b, raw + 8 * b, size_t(e - b) * 8);
    }
    int64_t bad = -1;
    for (int64_t i = b; i < e; i++)
      if (!std::isfinite(data[i])) { bad = i; break; }
    firstBad[std::min<size_t>(slot++, firstBad.size() - 1)] = bad;  // slots ≤ chunks ≤ threads()
  });
  for (int64_t v : firstBad)
    if (v >= 0 && (*firstNonFinite < 0 || v < *firstNonFinite)) *firstNonFinite = v;
  if (*firstNonFinite >= 0) return {};
  const int g = gramRows ? rows : cols;
  if (n == 0) { std::fill(gram, gram + int64_t(g) * g, 0.0); return {}; }
  if (!blas().loaded) return noBlas();
  // Row-major X (rows×cols) is column-major Xc = Xᵀ (cols×rows, ld = cols).
  //   X·Xᵀ = Xcᵀ·Xc : syrk("U", "T", rows, k = cols)   or gemm("T", "N", rows, rows, cols)
  //   Xᵀ·X = Xc·Xcᵀ : syrk("U", "N", cols, k = rows)   or gemm("N", "T", cols, cols, rows)
  // syrk does half the flops; its upper triangle is mirrored, so the Gram is exactly symmetric.
  const double one = 1, zero = 0;
  int ld = std::max(1, cols);
  const Blas& b = blas();
  if (b.dsyrk) {
    int k = gramRows ? cols : rows;
    b.dsyrk("U", gramRows ? "T" : "N", &g, &k, &one, data, &ld, &zero, gram, &g, 1, 1);
    for (int j = 0; j < g; j++)
      for (int i = 0; i < j; i++) gram[int64_t(i) * g + j] = gram[int64_t(j) * g + i];
  } else if (gramRows) {
    b.of<double>().gemm("T", "N", &rows, &rows, &cols, &one, data, &ld, data, &ld, &zero, gram, &rows, 1, 1);
  } else {
    b.of<double>().gemm("N", "T", &cols, &cols, &rows, &one, data, &ld, data, &ld, &zero, gram, &cols, 1, 1);
  }
  return {};
}

template <>
Status Ops<Cpu>::kmeansLloyd(const double* x, int n, int d, const double* init, int k, const double* weights, int maxIter,
                   double tol, double* centroids, int32_t* labels, KmeansOut* out) {
  if (!blas().loaded) return noBlas();
  // Scratch kept per thread between calls: n_init runs call this back to back, and fresh
  // multi-megabyte buffers would be page-faulted in on every call.
  // (Named through references: the parallelFor lambdas run on other threads, where the
  // thread_local names would denote those threads' own, empty, vectors.)
  struct Scratch { std::vector<double> xx, cc, g, next, wsum; };
  static thread_local Scratch scratch;
  std::vector<double>&xx = scratch.xx, &cc = scratch.cc, &g = scratch.g, &next = scratch.next, &wsum = scratch.wsum;
  try {
    xx.resize(n);
    cc.resize(k);
    g.resize(int64_t(n) * k);
    next.resize(int64_t(k) * d);
    wsum.resize(k);
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", "kmeans: out of memory");
  }
  auto w = [&](int64_t i) { return weights ? weights[i] : 1.0; };
  parallelFor(n, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const double* xi = x + i * d;
      double s = 0;
      for (int j = 0; j < d; j++) s += xi[j] * xi[j];
      xx[i] = s;
    }
  });
  double* c = centroids;
  std::memcpy(c, init, sizeof(double) * size_t(k) * d);

  // E-step: nearest centroid by ‖x‖² + ‖c‖² − 2 x·c, with x·c from one dgemm (ties → lowest index).
  auto assign = [&](const double* cent) {
    for (int q = 0; q < k; q++) {
      const double* cq = cent + int64_t(q) * d;
      double s = 0;
      for (int j = 0; j < d; j++) s += cq[j] * cq[j];
      cc[q] = s;
    }
    Ops<Cpu>::gemm<double>(x, n, d, cent, k, d, false, true, 1.0, g.data());
    parallelFor(n, 256, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        labels[i] = nearestCentroid(g.data() + i * k, xx[i], cc.data(), k);
      }
    });
  };

  int iterations = 0;
  for (int it = 0; it < maxIter; it++) {
    assign(c);
    iterations = it + 1;
    // M-step, split over dimensions so every sum runs in point order whatever the thread count.
    std::fill(next.begin(), next.end(), 0.0);
    std::fill(wsum.begin(), wsum.end(), 0.0);
    for (int64_t i = 0; i < n; i++) wsum[labels[i]] += w(i);
    parallelFor(d, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = 0; i < n; i++) {
        const double wi = w(i);
        const double* xi = x + i * d;
        double* nq = next.data() + int64_t(labels[i]) * d;
        for (int64_t j = b; j < e; j++) nq[j] += wi * xi[j];
      }
    });
    double shift = 0;
    for (int q = 0; q < k; q++) {
      double* nq = next.data() + int64_t(q) * d;
      const double* cq = c + int64_t(q) * d;
      if (wsum[q] > 0) {
        double inv = wsum[q];
        for (int j = 0; j < d; j++) nq[j] /= inv;
      } else {
        for (int j = 0; j < d; j++) nq[j] = cq[j];
      }
      for (int j = 0; j < d; j++) {
        double t = nq[j] - cq[j];
        shift += t * t;
      }
    }
    std::memcpy(c, next.data(), sizeof(double) * size_t(k) * d);
    if (shift <= tol) break;
  }
  assign(c);
  // Inertia from the exact squared distances, summed in fixed blocks of points (deterministic).
  const int64_t blk = 256;
  int64_t nb = (int64_t(n) + blk - 1) / blk;
  std::vector<double> part(nb, 0.0);
  parallelFor(nb, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; p++) {
      double s = 0;
      for (int64_t i = p * blk; i < std::min<int64_t>(n, (p + 1) * blk); i++) {
        const double* xi = x + i * d;
        const double* cq = c + int64_t(labels[i]) * d;
        double di = 0;
        for (int j = 0; j < d; j++) {
          double t = xi[j] - cq[j];
          di += t * t;
        }
        s += w(i) * di;
      }
      part[p] = s;
    }
  });
  double inertia = 0;
  for (double p : part) inertia += p;
  out->inertia = inertia;
  out->iterations = iterations;
  return {};
}

}  // namespace lora
