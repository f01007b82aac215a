// Longer than 400 lines: one self-contained program (parity table, CPU references, timings) that GPU machines build without Node.
// Standalone harness for the CUDA kernels of lora (native/src/cuda/kernels.cu), for GPU machines
// that have nvcc, CMake and Python but no Node. It
//   1. probes the device;
//   2. runs the parity table of linalg/backends.test.ts (same shapes, ranks, rank-deficient and
//      ill-conditioned inputs, same checks and tolerances) on the GPU against float64 CPU
//      references computed here (triple-loop GEMM, one-sided Jacobi σ, cyclic Jacobi λ, plain Lloyd);
//   3. times GEMM, k-means and a randomized SVD at sizes that fill an H100/H200, plus the issue's
//      CPU-target sizes (QR 4096×64, SVD 256×256, k-means 1024×8192 k=64) through the host API.
// Output: a human log on stderr and a markdown report on stdout (or --out FILE).
//
//   lora-cuda-harness [--seed N] [--quick] [--no-bench] [--no-parity] [--out FILE]
//
// Built by bench/gpu-check.sh (CMake, or nvcc directly). Built with -DLORA_CUDA_EMU against
// emu/cuda_emu.h it runs everything on the CPU (run-emu.sh), at small sizes.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "../src/common/gram_schmidt.h"
#include "../src/cuda/ops.h"

#ifdef LORA_CUDA_EMU
constexpr bool kEmu = true;
#else
#include <cuda_runtime.h>
constexpr bool kEmu = false;
#endif

namespace {

using lora::Status;
namespace cu = lora::cuda;

// ------------------------------------------------------------------------------------------------
// Generator (mulberry32 + Box–Muller, as the TS parity table)

struct Rng {
  uint32_t s;
  bool has = false;
  double spare = 0;
  explicit Rng(uint32_t seed) : s(seed ? seed : 0x9e3779b9u) {}
  double next() {
    uint32_t t = (s += 0x6d2b79f5u);
    t = (t ^ (t >> 15)) * (t | 1u);
    t ^= t + (t ^ (t >> 7)) * (t | 61u);
    return double(t ^ (t >> 14)) / 4294967296.0;
  }
  double normal() {
    if (has) {
      has = false;
      return spare;
    }
    double u = 0;
    while (u == 0) u = next();
    double r = std::sqrt(-2 * std::log(u)), th = 6.283185307179586 * next();
    spare = r * std::sin(th);
    has = true;
    return r * std::cos(th);
  }
  int integer(int n) { return int(next() * n); }
};

uint32_t caseSeed(uint32_t seed, int i) {
  uint32_t h = seed ^ (uint32_t(i + 1) * 0x85ebca6bu);
  h = (h ^ (h >> 16)) * 0x7feb352du;
  return h ^ (h >> 15);
}

// ------------------------------------------------------------------------------------------------
// float64 matrices and references

struct M64 {
  int rows = 0, cols = 0;
  std::vector<double> d;
  M64() = default;
  M64(int r, int c) : rows(r), cols(c), d(size_t(r) * c, 0.0) {}
  double& at(int i, int j) { return d[size_t(i) * cols + j]; }
  double at(int i, int j) const { return d[size_t(i) * cols + j]; }
};

M64 gaussian(Rng& r, int m, int n) {
  M64 a(m, n);
  for (auto& x : a.d) x = r.normal();
  return a;
}

M64 mul(const M64& a, const M64& b, bool ta = false, bool tb = false) {
  int m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols, n = tb ? b.rows : b.cols;
  M64 c(m, n);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double s = 0;
      for (int p = 0; p < k; p++) s += (ta ? a.at(p, i) : a.at(i, p)) * (tb ? b.at(j, p) : b.at(p, j));
      c.at(i, j) = s;
    }
  return c;
}

M64 transpose(const M64& a) {
  M64 t(a.cols, a.rows);
  for (int i = 0; i < a.rows; i++)
    for (int j = 0; j < a.cols; j++) t.at(j, i) = a.at(i, j);
  return t;
}

double fro(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

double diffFro(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}

double orthoErr(const M64& x) {  // max |XᵀX − I| over the columns of X
  M64 g = mul(x, x, true, false);
  double e = 0;
  for (int i = 0; i < g.rows; i++)
    for (int j = 0; j < g.cols; j++) e = std::max(e, std::fabs(g.at(i, j) - (i == j ? 1 : 0)));
  return e;
}

M64 orthonormal(Rng& r, int rows, int cols) {
  M64 q = transpose(gaussian(r, rows, cols));  // row j = column j
  for (int j = 0; j < cols; j++) {
    double* qj = &q.d[size_t(j) * rows];
    const double nr = lora::orthogonalizeTwice(qj, rows, q.d.data(), j, [](int) { return true; });
    for (int i = 0; i < rows; i++) qj[i] /= nr;
  }
  return transpose(q);
}

M64 withSpectrum(Rng& r, int m, int n, const std::vector<double>& sigma) {
  int k = int(sigma.size());
  M64 u = orthonormal(r, m, k), v = orthonormal(r, n, k);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < k; j++) u.at(i, j) *= sigma[j];
  return mul(u, v, false, true);
}

std::vector<double> geometric(int k, double cond) {
  std::vector<double> s(k);
  for (int i = 0; i < k; i++) s[i] = k == 1 ? 1 : std::pow(cond, -double(i) / (k - 1));
  return s;
}

M64 lowRank(Rng& r, int m, int n, int rank) { return mul(gaussian(r, m, rank), gaussian(r, rank, n)); }

std::vector<double> refSigma(const M64& a) {
  M64 t = a.rows >= a.cols ? a : transpose(a);
  int m = t.rows, n = t.cols;
  M64 w = transpose(t);
  for (int sweep = 0; sweep < 80; sweep++) {
    bool rotated = false;
    for (int p = 0; p < n - 1; p++)
      for (int q = p + 1; q < n; q++) {
        double al = 0, be = 0, ga = 0;
        double* x = &w.d[size_t(p) * m];
        double* y = &w.d[size_t(q) * m];
        for (int i = 0; i < m; i++) {
          al += x[i] * x[i];
          be += y[i] * y[i];
          ga += x[i] * y[i];
        }
        if (ga == 0 || std::fabs(ga) <= 1e-16 * std::sqrt(al * be)) continue;
        rotated = true;
        double zeta = (be - al) / (2 * ga);
        double tt = (zeta >= 0 ? 1.0 : -1.0) / (std::fabs(zeta) + std::sqrt(1 + zeta * zeta));
        double c = 1 / std::sqrt(1 + tt * tt), s = c * tt;
        for (int i = 0; i < m; i++) {
          double u = x[i], v = y[i];
          x[i] = c * u - s * v;
          y[i] = s * u + c * v;
        }
      }
    if (!rotated) break;
  }
  std::vector<double> s(n);
  for (int j = 0; j < n; j++) {
    double z = 0;
    for (int i = 0; i < m; i++) z += w.d[size_t(j) * m + i] * w.d[size_t(j) * m + i];
    s[j] = std::sqrt(z);
  }
  std::sort(s.begin(), s.end(), std::greater<double>());
  return s;
}

std::vector<double> refEig(const M64& a) {
  int n = a.rows;
  M64 w(n, n);
  for (int i = 0; i < n; i++)
    for (int j = 0; j <= i; j++) w.at(i, j) = w.at(j, i) = a.at(i, j);
  for (int sweep = 0; sweep < 100; sweep++) {
    double off = 0, tot = 0;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < n; j++) (i == j ? tot : off) += w.at(i, j) * w.at(i, j);
    if (off <= 1e-34 * (tot + off)) break;
    for (int p = 0; p < n - 1; p++)
      for (int q = p + 1; q < n; q++) {
        double apq = w.at(p, q);
        if (apq == 0) continue;
        double theta = (w.at(q, q) - w.at(p, p)) / (2 * apq);
        double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(1 + theta * theta));
        double c = 1 / std::sqrt(1 + t * t), s = t * c;
        for (int k = 0; k < n; k++) {
          double akp = w.at(k, p), akq = w.at(k, q);
          w.at(k, p) = c * akp - s * akq;
          w.at(k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < n; k++) {
          double apk = w.at(p, k), aqk = w.at(q, k);
          w.at(p, k) = c * apk - s * aqk;
          w.at(q, k) = s * apk + c * aqk;
        }
      }
  }
  std::vector<double> l(n);
  for (int i = 0; i < n; i++) l[i] = w.at(i, i);
  std::sort(l.begin(), l.end(), std::greater<double>());
  return l;
}

struct LloydRef {
  std::vector<double> c;
  std::vector<int> labels;
  double inertia = 0;
  int iterations = 0;
};

LloydRef refLloyd(const M64& x, const M64& init, const std::vector<double>* w, int maxIter, double tol) {
  int n = x.rows, d = x.cols, k = init.rows;
  LloydRef r;
  r.c = init.d;
  r.labels.assign(n, 0);
  auto wt = [&](int i) { return w ? (*w)[i] : 1.0; };
  auto assign = [&] {
    double in = 0;
    for (int i = 0; i < n; i++) {
      int best = 0;
      double bd = INFINITY;
      for (int q = 0; q < k; q++) {
        double s = 0;
        for (int j = 0; j < d; j++) {
          double t = x.at(i, j) - r.c[size_t(q) * d + j];
          s += t * t;
        }
        if (s < bd) {
          bd = s;
          best = q;
        }
      }
      r.labels[i] = best;
      in += wt(i) * bd;
    }
    return in;
  };
  for (int it = 0; it < maxIter; it++) {
    assign();
    r.iterations = it + 1;
    std::vector<double> next(size_t(k) * d, 0.0), ws(k, 0.0);
    for (int i = 0; i < n; i++) {
      int q = r.labels[i];
      ws[q] += wt(i);
      for (int j = 0; j < d; j++) next[size_t(q) * d + j] += wt(i) * x.at(i, j);
    }
    double shift = 0;
    for (int q = 0; q < k; q++)
      for (int j = 0; j < d; j++) {
        size_t o = size_t(q) * d + j;
        next[o] = ws[q] > 0 ? next[o] / ws[q] : r.c[o];
        shift += (next[o] - r.c[o]) * (next[o] - r.c[o]);
      }
    r.c = next;
    if (shift <= tol) break;
  }
  r.inertia = assign();
  return r;
}

// ------------------------------------------------------------------------------------------------
// The case table (mirrors linalg/backends.test.ts)

enum class Op { Gemm, Qr, Svd, Eig, Kmeans };
struct GemmIn {
  M64 a, b;
  bool ta = false, tb = false;
  double alpha = 1;
};
struct KmIn {
  M64 x, init;
  std::vector<double> w;
  bool weighted = false;
  int maxIter = 0;
  double tol = 0;
};
struct Case {
  Op op;
  std::string name;
  bool f32;
  std::function<GemmIn(Rng&)> gemm;
  std::function<M64(Rng&)> mat;
  std::function<KmIn(Rng&)> km;
};

M64 symmetric(Rng& r, int n, bool garbage) {
  M64 g = gaussian(r, n, n), s(n, n);
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) s.at(i, j) = (g.at(i, j) + g.at(j, i)) / 2;
  if (garbage)
    for (int i = 0; i < n; i++)
      for (int j = i + 1; j < n; j++) s.at(i, j) = 1e3 * r.normal();
  return s;
}

M64 blobs(Rng& r, int n, int d, int centres, double spread) {
  M64 mu = gaussian(r, centres, d), x(n, d);
  for (int i = 0; i < n; i++) {
    int c = r.integer(centres);
    for (int j = 0; j < d; j++) x.at(i, j) = 4 * mu.at(c, j) + spread * r.normal();
  }
  return x;
}

M64 pickRows(Rng& r, const M64& m, int k) {
  std::vector<int> idx;
  while (int(idx.size()) < k) {
    int i = r.integer(m.rows);
    if (std::find(idx.begin(), idx.end(), i) == idx.end()) idx.push_back(i);
  }
  M64 out(k, m.cols);
  for (int q = 0; q < k; q++)
    for (int j = 0; j < m.cols; j++) out.at(q, j) = m.at(idx[q], j);
  return out;
}

std::vector<Case> buildCases() {
  std::vector<Case> cs;
  for (bool f32 : {true, false}) {
    auto g = [](int m, int k, int n, bool ta, bool tb, double alpha) {
      return [=](Rng& r) {
        GemmIn in;
        in.a = ta ? gaussian(r, k, m) : gaussian(r, m, k);
        in.b = tb ? gaussian(r, n, k) : gaussian(r, k, n);
        in.ta = ta;
        in.tb = tb;
        in.alpha = alpha;
        return in;
      };
    };
    auto G = [&](std::string name, std::function<GemmIn(Rng&)> f) { cs.push_back({Op::Gemm, name, f32, f, {}, {}}); };
    G("1x1 . 1x1", g(1, 1, 1, false, false, 1));
    G("tall 300x16 . 16x40", g(300, 16, 40, false, false, 1));
    G("A^T: (64x37)^T . 64x300, alpha 0.5", g(37, 64, 300, true, false, 0.5));
    G("B^T: 5x64 . (37x64)^T", g(5, 64, 37, false, true, 1));
    G("A^T B^T: (16x300)^T . (300x16)^T, alpha -2", g(300, 16, 300, true, true, -2));
    G("square 128 rank-1 factors", [](Rng& r) {
      GemmIn in;
      in.a = lowRank(r, 128, 128, 1);
      in.b = gaussian(r, 128, 128);
      return in;
    });
    // The QR, SVD and eigSym inputs, one table an op (name, generator), in the TS table's order:
    // a Gaussian m×n, a product of rank k, a given spectrum, or a generator of its own.
    using MatFn = std::function<M64(Rng&)>;
    auto Mt = [&](Op op, std::initializer_list<std::pair<const char*, MatFn>> table) {
      for (const auto& [name, f] : table) cs.push_back({op, name, f32, {}, f, {}});
    };
    auto gauss = [](int m, int n) -> MatFn { return [=](Rng& r) { return gaussian(r, m, n); }; };
    auto rank = [](int m, int n, int k) -> MatFn { return [=](Rng& r) { return lowRank(r, m, n, k); }; };
    auto spectrum = [](int m, int n, std::vector<double> s) -> MatFn {
      return [=](Rng& r) { return withSpectrum(r, m, n, s); };
    };
    auto sym = [](int n, bool garbage) -> MatFn { return [=](Rng& r) { return symmetric(r, n, garbage); }; };
    const double cq = f32 ? 1e5 : 1e12, cs6 = f32 ? 1e6 : 1e12, ce = f32 ? 1e2 : 1e5;
    std::vector<double> repeated = {3, 3, 3, 2, 2, 1};
    repeated.resize(20, 0.5);
    Mt(Op::Qr, {{"tall 300x16", gauss(300, 16)}, {"tall 1024x64", gauss(1024, 64)}, {"square 64x64", gauss(64, 64)},
                {"wide 16x100", gauss(16, 100)}, {"rank-deficient 200x32 rank 5", rank(200, 32, 5)},
                {"rank 1, 500x8", rank(500, 8, 1)}, {"ill-conditioned 128x32", spectrum(128, 32, geometric(32, cq))},
                {"zero column, 50x6",
                 [](Rng& r) {
                   M64 m = gaussian(r, 50, 6);
                   for (int i = 0; i < 50; i++) m.at(i, 2) = 0;
                   return m;
                 }},
                {"1x1", gauss(1, 1)}});
    Mt(Op::Svd, {{"tall 120x40", gauss(120, 40)}, {"wide 30x100", gauss(30, 100)}, {"square 64x64", gauss(64, 64)},
                 {"square 96x96 rank 64", rank(96, 96, 64)}, {"rank-deficient 80x60 rank 7", rank(80, 60, 7)},
                 {"rank 1, 50x50", rank(50, 50, 1)}, {"ill-conditioned 64x48", spectrum(64, 48, geometric(48, cs6))},
                 {"repeated sigma, 40x20", spectrum(40, 20, repeated)},
                 {"tall 1024x32 (QR route)", gauss(1024, 32)}, {"1x7", gauss(1, 7)}});
    Mt(Op::Eig, {{"1x1", gauss(1, 1)}, {"random 5x5", sym(5, false)}, {"random 64x64", sym(64, false)},
                 {"lower triangle only 32x32", sym(32, true)},
                 {"PSD rank 3 of 40",
                  [](Rng& r) {
                    M64 b = gaussian(r, 40, 3);
                    return mul(b, b, false, true);
                  }},
                 {"Gram of ill-conditioned 100x16", [=](Rng& r) {
                    M64 b = withSpectrum(r, 100, 16, geometric(16, ce));
                    return mul(b, b, true, false);
                  }}});
  }
  auto K = [&](std::string name, std::function<KmIn(Rng&)> f) { cs.push_back({Op::Kmeans, name, false, {}, {}, f}); };
  // One k-means case: data x and k initial centroids drawn from its rows.
  auto km = [](Rng& r, M64 x, int k, int maxIter, double tol = 0) {
    KmIn in;
    in.init = pickRows(r, x, k);
    in.x = std::move(x);
    in.maxIter = maxIter;
    in.tol = tol;
    return in;
  };
  K("blobs 500x16 k=8, converges", [=](Rng& r) { return km(r, blobs(r, 500, 16, 8, 1), 8, 100); });
  K("overlapping 400x6 k=5, maxIter 3", [=](Rng& r) { return km(r, blobs(r, 400, 6, 3, 3), 5, 3); });
  K("weighted 300x10 k=6, tol 1e-4", [=](Rng& r) {
    KmIn in = km(r, blobs(r, 300, 10, 6, 1.5), 6, 50, 1e-4);
    in.w.resize(300);
    for (auto& v : in.w) v = 0.1 + r.next();
    in.weighted = true;
    return in;
  });
  K("empty cluster keeps its centroid, 200x4 k=4", [=](Rng& r) {
    KmIn in = km(r, blobs(r, 200, 4, 3, 0.5), 4, 30);
    for (int j = 0; j < 4; j++) in.init.at(3, j) = 1e3;
    return in;
  });
  K("k=1, 64x3", [=](Rng& r) { return km(r, gaussian(r, 64, 3), 1, 10); });
  K("maxIter 0, 100x5 k=3", [=](Rng& r) { return km(r, gaussian(r, 100, 5), 3, 0); });
  K("larger 1500x200 k=16", [=](Rng& r) { return km(r, blobs(r, 1500, 200, 16, 3), 16, 20, 1e-6); });
  return cs;
}

// ------------------------------------------------------------------------------------------------
// Running a case through the host API in float or double

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}
template <typename T>
M64 back(const std::vector<T>& v, int r, int c) {
  M64 m(r, c);
  for (size_t i = 0; i < v.size(); i++) m.d[i] = double(v[i]);
  return m;
}

struct Result {
  bool ok = true;
  std::string why;  // first failed check
  double worst = 0;  // max over checks of measured/tolerance
  void check(const char* what, double got, double tol) {
    double r = got / tol;
    if (!(r <= worst)) worst = r;
    if (!(got <= tol) && ok) {
      ok = false;
      char b[256];
      std::snprintf(b, sizeof b, "%s = %.3e > %.1e", what, got, tol);
      why = b;
    }
  }
  void require(bool cond, const char* what) {
    if (!cond && ok) {
      ok = false;
      why = what;
    }
  }
};

template <typename T>
Result runMat(const Case& c, Rng& rng) {
  Result res;
  double tol = std::is_same<T, float>::value ? 1e-5 : 1e-12;
  if (c.op == Op::Gemm) {
    GemmIn in = c.gemm(rng);
    auto a = cast<T>(in.a.d), b = cast<T>(in.b.d);
    M64 A = back(a, in.a.rows, in.a.cols), B = back(b, in.b.rows, in.b.cols);
    int m = in.ta ? in.a.cols : in.a.rows, n = in.tb ? in.b.rows : in.b.cols;
    std::vector<T> cc(size_t(m) * n);
    Status s = lora::CudaOps::gemm<T>(a.data(), A.rows, A.cols, b.data(), B.rows, B.cols, in.ta, in.tb, T(in.alpha), cc.data());
    if (!s.ok()) return res.require(false, s.message.c_str()), res;
    M64 ref = mul(A, B, in.ta, in.tb);
    for (auto& x : ref.d) x *= in.alpha;
    res.check("|C-Cref|/(|A||B|)", diffFro(back(cc, m, n).d, ref.d) / (std::fabs(in.alpha) * fro(A.d) * fro(B.d)), tol);
    return res;
  }
  M64 src = c.mat(rng);
  auto a = cast<T>(src.d);
  M64 A = back(a, src.rows, src.cols);
  int m = A.rows, n = A.cols, k = std::min(m, n);
  if (c.op == Op::Qr) {
    std::vector<T> q(size_t(m) * k), r(size_t(k) * n);
    Status s = lora::CudaOps::qr<T>(a.data(), m, n, q.data(), r.data());
    if (!s.ok()) return res.require(false, s.message.c_str()), res;
    M64 Q = back(q, m, k), R = back(r, k, n);
    res.check("max|QtQ-I|", orthoErr(Q), tol);
    res.check("|QR-A|/|A|", diffFro(mul(Q, R).d, A.d) / fro(A.d), tol);
    for (int i = 0; i < k; i++) {
      for (int j = 0; j < std::min(i, n); j++) res.require(R.at(i, j) == 0, "R not upper triangular");
      res.require(R.at(i, i) >= 0, "R diagonal < 0");
    }
    return res;
  }
  if (c.op == Op::Svd) {
    std::vector<T> u(size_t(m) * k), sv(k), vt(size_t(k) * n);
    Status s = lora::CudaOps::svd<T>(a.data(), m, n, u.data(), sv.data(), vt.data());
    if (!s.ok()) return res.require(false, s.message.c_str()), res;
    std::vector<double> ref = refSigma(A);
    double e = 0;
    for (int i = 0; i < k; i++) {
      e = std::max(e, std::fabs(double(sv[i]) - ref[i]));
      if (i > 0) res.require(sv[i] <= sv[i - 1], "S not descending");
    }
    res.check("max|s-sref|/smax", e / ref[0], tol);
    M64 U = back(u, m, k), Vt = back(vt, k, n), US = U;
    for (int i = 0; i < m; i++)
      for (int j = 0; j < k; j++) US.at(i, j) *= double(sv[j]);
    res.check("|USVt-A|/|A|", diffFro(mul(US, Vt).d, A.d) / fro(A.d), tol);
    res.check("max|UtU-I|", orthoErr(U), tol);
    res.check("max|VtVt^T-I|", orthoErr(transpose(Vt)), tol);
    return res;
  }
  // eigSym
  std::vector<T> vals(n), vecs(size_t(n) * n);
  Status s = lora::CudaOps::eigSym<T>(a.data(), n, vals.data(), vecs.data());
  if (!s.ok()) return res.require(false, s.message.c_str()), res;
  std::vector<double> ref = refEig(A);
  double scale = 0, e = 0;
  for (double x : ref) scale = std::max(scale, std::fabs(x));
  for (int i = 0; i < n; i++) {
    e = std::max(e, std::fabs(double(vals[i]) - ref[i]));
    if (i > 0) res.require(vals[i] <= vals[i - 1], "eigenvalues not descending");
  }
  res.check("max|l-lref|/max|l|", scale > 0 ? e / scale : e, tol);
  M64 V = back(vecs, n, n), S(n, n);
  for (int i = 0; i < n; i++)
    for (int j = 0; j <= i; j++) S.at(i, j) = S.at(j, i) = A.at(i, j);
  M64 AV = mul(S, V), VL = V;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) VL.at(i, j) *= double(vals[j]);
  double sf = fro(S.d);
  res.check("|AV-VL|/|A|", sf > 0 ? diffFro(AV.d, VL.d) / sf : diffFro(AV.d, VL.d), tol);
  res.check("max|VtV-I|", orthoErr(V), tol);
  return res;
}

Result runKmeans(const Case& c, Rng& rng) {
  Result res;
  KmIn in = c.km(rng);
  int n = in.x.rows, d = in.x.cols, k = in.init.rows;
  std::vector<double> cent(size_t(k) * d);
  std::vector<int32_t> labels(n);
  lora::KmeansOut out;
  Status s = lora::CudaOps::kmeansLloyd(in.x.d.data(), n, d, in.init.d.data(), k, in.weighted ? in.w.data() : nullptr, in.maxIter,
                             in.tol, cent.data(), labels.data(), &out);
  if (!s.ok()) return res.require(false, s.message.c_str()), res;
  LloydRef ref = refLloyd(in.x, in.init, in.weighted ? &in.w : nullptr, in.maxIter, in.tol);
  res.require(out.iterations == ref.iterations, "iteration count differs");
  int diff = 0;
  for (int i = 0; i < n; i++) diff += labels[i] != ref.labels[i];
  res.require(diff == 0, "labels differ from the reference");
  res.check("|inertia-ref|/ref", std::fabs(out.inertia - ref.inertia) / std::max(ref.inertia, 1e-300), 1e-9);
  res.check("|C-Cref|/|Cref|", diffFro(cent, ref.c) / fro(ref.c), 1e-9);
  return res;
}

// ------------------------------------------------------------------------------------------------
// Timings

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of `reps` wall times of f() (which must synchronize), after one warm-up.
double best(int reps, const std::function<void()>& f) {
  f();
  double b = 1e300;
  for (int i = 0; i < reps; i++) {
    double t0 = now();
    f();
    b = std::min(b, now() - t0);
  }
  return b;
}

template <typename T>
struct Dev {
  T* p = nullptr;
  explicit Dev(size_t n) {
    if (cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) {
      std::fprintf(stderr, "cudaMalloc of %zu MiB failed\n", n * sizeof(T) >> 20);
      std::exit(3);
    }
  }
  ~Dev() { cudaFree(p); }
};

void die(const Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.message.c_str());
    std::exit(3);
  }
}

struct Row {
  std::string what, size, time, rate, note;
};

// Seconds of one device-resident N×N·N×N GEMM of T (random operands), best of 3.
template <typename T>
double timeGemm(int N) {
  Dev<T> A(size_t(N) * N), B(size_t(N) * N), C(size_t(N) * N);
  die(cu::dev::randn<T>(A.p, size_t(N) * N, 1));
  die(cu::dev::randn<T>(B.p, size_t(N) * N, 2));
  return best(3, [&] {
    die(cu::dev::gemm<T>(A.p, N, N, B.p, N, N, false, false, T(1), C.p));
    die(cu::dev::synchronize());
  });
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t seed = uint32_t(std::time(nullptr));
  bool quick = kEmu, bench = true, parity = true;
  const char* outPath = nullptr;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) seed = uint32_t(std::strtoul(argv[++i], nullptr, 10));
    else if (a == "--quick") quick = true;
    else if (a == "--no-bench") bench = false;
    else if (a == "--no-parity") parity = false;
    else if (a == "--out" && i + 1 < argc) outPath = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--seed N] [--quick] [--no-bench] [--no-parity] [--out FILE]\n", argv[0]);
      return 2;
    }
  }
  std::string md;
  auto emit = [&](const std::string& s) { md += s + "\n"; };

  cu::Probe p = cu::probe();
  std::fprintf(stderr, "device: %s (sm_%d%d, %.0f GiB, %d SMs), runtime %d, driver %d, error %d (%s)\n",
               p.device.c_str(), p.ccMajor, p.ccMinor, double(p.memoryBytes) / (1ull << 30), p.multiprocessors,
               p.runtimeVersion, p.driverVersion, p.error, p.errorString.c_str());
  if (p.error != 0 || p.deviceCount < 1) {
    std::fprintf(stderr, "no usable CUDA device: %s%s\n", p.errorString.c_str(),
                 p.libcuda ? "" : (" (libcuda: " + p.dlerror + ")").c_str());
    return 2;
  }
  char line[512];
  std::snprintf(line, sizeof line, "Device: %s (sm_%d%d, %.0f GiB, %d SMs), CUDA runtime %d.%d, driver %d.%d%s.",
                p.device.c_str(), p.ccMajor, p.ccMinor, double(p.memoryBytes) / (1ull << 30), p.multiprocessors,
                p.runtimeVersion / 1000, p.runtimeVersion % 1000 / 10, p.driverVersion / 1000,
                p.driverVersion % 1000 / 10, kEmu ? " — CPU EMULATION, not a GPU" : "");
  emit(line);
  emit("");

  // ---- parity ----
  std::vector<Case> cases = buildCases();
  std::fprintf(stderr, "parity: %zu cases, seed %u (--seed %u replays)\n", cases.size(), seed, seed);
  std::snprintf(line, sizeof line, "Parity (seed %u): tolerances f32 1e-5, f64 1e-12 relative; k-means labels and iterations exact, inertia/centroids 1e-9.", seed);
  emit(line);
  emit("");
  emit("| op | dtype | case | worst measured/tolerance | result |");
  emit("|---|---|---|---|---|");
  int failed = 0;
  static const char* names[] = {"gemm", "qr", "svd", "eigSym", "kmeans"};
  double t0 = now();
  for (size_t i = 0; i < (parity ? cases.size() : 0); i++) {
    const Case& c = cases[i];
    Rng rng(caseSeed(seed, int(i)));
    Result r = c.op == Op::Kmeans ? runKmeans(c, rng) : c.f32 ? runMat<float>(c, rng) : runMat<double>(c, rng);
    if (!r.ok) failed++;
    std::fprintf(stderr, "  %-6s %s %-45s %s %s\n", names[int(c.op)], c.f32 ? "f32" : "f64", c.name.c_str(),
                 r.ok ? "ok  " : "FAIL", r.ok ? "" : r.why.c_str());
    std::snprintf(line, sizeof line, "| %s | %s | %s | %.3f | %s |", names[int(c.op)], c.f32 ? "f32" : "f64",
                  c.name.c_str(), r.worst, r.ok ? "pass" : ("**FAIL** " + r.why).c_str());
    emit(line);
  }
  std::fprintf(stderr, "parity: %d of %zu failed (%.1f s)\n", failed, cases.size(), now() - t0);
  emit("");
  if (parity) std::snprintf(line, sizeof line, "Parity: %zu cases, %d failed.", cases.size(), failed);
  else std::snprintf(line, sizeof line, "Parity: skipped (--no-parity).");
  emit(line);
  emit("");

  // ---- timings ----
  if (bench) {
    std::vector<Row> rows;
    char a[128], b[128], c[128];
    // GEMM at a size that fills the chip.
    for (int f = 0; f < 2; f++) {
      int N = quick ? 128 : 8192;
      double secs = f == 0 ? timeGemm<float>(N) : timeGemm<double>(N);
      std::snprintf(a, sizeof a, "%d^3", N);
      std::snprintf(b, sizeof b, "%.3f s", secs);
      std::snprintf(c, sizeof c, "%.1f TFLOP/s", 2.0 * N * N * double(N) / secs / 1e12);
      rows.push_back({f == 0 ? "gemm f32 (device-resident)" : "gemm f64 (device-resident)", a, b, c, ""});
      std::fprintf(stderr, "  %s %s %s\n", a, b, c);
    }
    // k-means, float64, device-resident points.
    {
      int n = quick ? 512 : 1 << 20, d = quick ? 64 : 1024, k = quick ? 16 : 1024, iters = quick ? 3 : 10;
      Dev<double> X(size_t(n) * d), C(size_t(k) * d);
      die(cu::dev::randn<double>(X.p, size_t(n) * d, 3));
      std::vector<int32_t> labels(n);
      lora::KmeansOut out;
      double secs = best(1, [&] {
        cudaMemcpy(C.p, X.p, size_t(k) * d * sizeof(double), cudaMemcpyDeviceToDevice);  // init: first k points
        die(cu::dev::kmeansLloyd(X.p, n, d, C.p, k, nullptr, iters, -1, labels.data(), &out));
      });
      std::snprintf(a, sizeof a, "%d points x %d dims, k=%d, %d iterations", n, d, k, out.iterations);
      std::snprintf(b, sizeof b, "%.3f s (%.1f ms/iter)", secs, secs / out.iterations * 1e3);
      std::snprintf(c, sizeof c, "%.1f TFLOP/s in the distance GEMM", 2.0 * n * double(d) * k * (out.iterations + 1) / secs / 1e12);
      rows.push_back({"k-means Lloyd f64 (device-resident)", a, b, c, "inertia " + std::to_string(out.inertia)});
      std::fprintf(stderr, "  kmeans %s %s\n", a, b);
    }
    // Randomized SVD of an exactly known spectrum: M = Q_L diag(σ) Q_Rᵀ (rank t) + nothing else,
    // so the rank-t rSVD must return σ to rounding.
    {
      int dd = quick ? 256 : 32768, kk = quick ? 192 : 32768, t = quick ? 8 : 256, pOver = 10, q = 2;
      Dev<float> L(size_t(dd) * t), R(size_t(kk) * t), QL(size_t(dd) * t), QR(size_t(kk) * t), M(size_t(dd) * kk);
      die(cu::dev::randn<float>(L.p, size_t(dd) * t, 4));
      die(cu::dev::randn<float>(R.p, size_t(kk) * t, 5));
      die(cu::dev::orthonormalize<float>(L.p, dd, t, QL.p));
      die(cu::dev::orthonormalize<float>(R.p, kk, t, QR.p));
      std::vector<float> sig(t), scaled;
      for (int i = 0; i < t; i++) sig[i] = float(std::pow(1e-3, double(i) / (t - 1)));
      // QL·diag(σ): scale on the host (small), then M = (QL σ) · QRᵀ.
      std::vector<float> ql(size_t(dd) * t);
      cudaMemcpy(ql.data(), QL.p, ql.size() * sizeof(float), cudaMemcpyDeviceToHost);
      for (size_t i = 0; i < ql.size(); i++) ql[i] *= sig[i % t];
      cudaMemcpy(QL.p, ql.data(), ql.size() * sizeof(float), cudaMemcpyHostToDevice);
      die(cu::dev::gemm<float>(QL.p, dd, t, QR.p, kk, t, false, true, 1.f, M.p));
      die(cu::dev::synchronize());
      std::vector<float> S(t);
      Dev<float> U(size_t(dd) * t), Vt(size_t(t) * kk);
      double secs = best(2, [&] { die(cu::dev::rsvd<float>(M.p, dd, kk, t, pOver, q, 7, S.data(), U.p, Vt.p)); });
      double e = 0;
      for (int i = 0; i < t; i++) e = std::max(e, std::fabs(double(S[i]) - sig[i]));
      std::snprintf(a, sizeof a, "%dx%d f32, rank %d, p=%d, q=%d", dd, kk, t, pOver, q);
      std::snprintf(b, sizeof b, "%.3f s", secs);
      std::snprintf(c, sizeof c, "%.1f TFLOP/s in its GEMMs", (2.0 * q + 2) * 2.0 * dd * double(kk) * (t + pOver) / secs / 1e12);
      char note[96];
      std::snprintf(note, sizeof note, "max|s - s_true| = %.1e", e);
      rows.push_back({"randomized SVD (device-resident)", a, b, c, note});
      std::fprintf(stderr, "  rsvd %s %s %s\n", a, b, note);
      if (e > 1e-4) {
        std::fprintf(stderr, "rsvd: singular values off by %.2e\n", e);
        failed++;
      }
    }
    // The CPU-target sizes through the host API (transfers included), for comparison.
    {
      Rng r(seed);
      int qm = quick ? 512 : 4096, sn = quick ? 32 : 256;
      M64 qa = gaussian(r, qm, 64);
      auto af = cast<float>(qa.d);
      std::vector<float> q(size_t(qm) * 64), rr(64 * 64);
      double s1 = best(quick ? 1 : 5, [&] { die(lora::CudaOps::qr<float>(af.data(), qm, 64, q.data(), rr.data())); });
      std::snprintf(a, sizeof a, "%dx64", qm);
      std::snprintf(b, sizeof b, "%.2f ms", s1 * 1e3);
      rows.push_back({"thin QR f32 (host API, transfers included)", a, b, "", ""});
      M64 s = gaussian(r, sn, sn);
      auto sf = cast<float>(s.d);
      std::vector<float> u(size_t(sn) * sn), sv(sn), vt(size_t(sn) * sn);
      double s2 = best(quick ? 1 : 3, [&] { die(lora::CudaOps::svd<float>(sf.data(), sn, sn, u.data(), sv.data(), vt.data())); });
      std::snprintf(a, sizeof a, "%dx%d", sn, sn);
      std::snprintf(b, sizeof b, "%.2f ms", s2 * 1e3);
      rows.push_back({"SVD f32 (host API, one-sided Jacobi)", a, b, "", ""});
      int n = quick ? 256 : 1024, d = quick ? 512 : 8192, k = 64;
      M64 x = gaussian(r, n, d);
      std::vector<double> init(x.d.begin(), x.d.begin() + size_t(k) * d), cent(size_t(k) * d);
      std::vector<int32_t> lab(n);
      lora::KmeansOut out;
      double s3 = best(3, [&] { die(lora::CudaOps::kmeansLloyd(x.d.data(), n, d, init.data(), k, nullptr, 10, -1, cent.data(), lab.data(), &out)); });
      std::snprintf(a, sizeof a, "%dx%d, k=%d, 10 iterations", n, d, k);
      std::snprintf(b, sizeof b, "%.2f ms", s3 * 1e3);
      rows.push_back({"k-means f64 (host API, transfers included)", a, b, "", ""});
    }
    emit("| operation | size | time (best) | rate | note |");
    emit("|---|---|---|---|---|");
    for (auto& rw : rows) emit("| " + rw.what + " | " + rw.size + " | " + rw.time + " | " + rw.rate + " | " + rw.note + " |");
    emit("");
  }
  std::fprintf(stderr, "total %.1f s\n", now() - t0);
  if (outPath) {
    FILE* f = std::fopen(outPath, "w");
    if (f) {
      std::fputs(md.c_str(), f);
      std::fclose(f);
    }
  } else {
    std::fputs(md.c_str(), stdout);
  }
  return failed ? 1 : 0;
}
