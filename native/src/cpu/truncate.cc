// Longer than 400 lines: the three streaming passes and the r×r algebra of one fused route, kept together.
// The Gram route of commands/truncate/svd.ts in one native call (docs/algorithms.md §2.2):
//   G_B = BᵀB, G_A = AAᵀ (float64), R_B = Λ_B^{1/2}V_Bᵀ, R_A likewise, M = s·R_B·R_Aᵀ = U_M Σ V_Mᵀ,
//   B' = B·P with P = s R_Aᵀ V_M,t Σ_t⁻¹ ·(√Σ_t / √s' or 1/s'),  A' = Q·A with Q = s Σ_t⁻¹ U_M,tᵀ R_B ·(…),
// then B'·A' is rounded to the output dtype, and the rounding's contribution to the error is
// measured from two 2t×2t Grams, exactly as svd.ts's truncationError does.
//
// Precision: the factors are decoded exactly (float32 holds F16/BF16/F32 exactly; F64 stays
// float64); the Grams and all r×r algebra are float64. The products B·P and Aᵀ·Qᵀ run in float32
// only when the output is F16/BF16, whose rounding (2⁻⁹ relative) is 10⁴× coarser than float32's.
#include "truncate.h"

#include <algorithm>
#include <cmath>
#include <new>
#include <vector>

#include "kernels.h"

namespace lora {

namespace {

using kernels::F64;

double frob(const double* x, const double* y, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
  return s;
}

// Upper-tile Gram (kernels::gramAccumulate) → full symmetric w×w, float64.
std::vector<double> symmetricGram(const std::vector<double>& G, int ld, int w) {
  std::vector<double> g(int64_t(w) * w);
  for (int a = 0; a < w; a++)
    for (int b = a; b < w; b++) g[int64_t(a) * w + b] = g[int64_t(b) * w + a] = G[int64_t(a) * ld + b];
  return g;
}

// R with RᵀR = G. Cholesky (R upper triangular) when G is safely positive definite, else
// R = Λ^{1/2}Vᵀ from the eigen-decomposition (negative rounding noise clamped). Any such R serves:
// B = Q_B·R for an orthonormal Q_B (on B's range) that is never formed.
Status gramRoot(const std::vector<double>& g, int n, std::vector<double>& R) {
  R.assign(int64_t(n) * n, 0.0);
  double maxDiag = 0;
  for (int i = 0; i < n; i++) maxDiag = std::max(maxDiag, g[int64_t(i) * n + i]);
  bool pd = maxDiag > 0;
  for (int j = 0; j < n && pd; j++) {  // RᵀR = G, row j of R from rows < j
    double d = g[int64_t(j) * n + j];
    for (int k = 0; k < j; k++) d -= R[int64_t(k) * n + j] * R[int64_t(k) * n + j];
    if (!(d > 1e-10 * maxDiag)) { pd = false; break; }  // (near) singular: the eigen route below
    double rjj = std::sqrt(d);
    R[int64_t(j) * n + j] = rjj;
    for (int i = j + 1; i < n; i++) {
      double x = g[int64_t(j) * n + i];
      for (int k = 0; k < j; k++) x -= R[int64_t(k) * n + j] * R[int64_t(k) * n + i];
      R[int64_t(j) * n + i] = x / rjj;
    }
  }
  if (pd) return {};
  std::vector<double> values(n), vectors(int64_t(n) * n);
  Status st = Ops<Cpu>::eigSym<double>(g.data(), n, values.data(), vectors.data());
  if (!st.ok()) return st;
  std::fill(R.begin(), R.end(), 0.0);
  for (int i = 0; i < n; i++) {
    double l = std::sqrt(std::max(0.0, values[i]));
    if (l == 0) continue;
    for (int j = 0; j < n; j++) R[int64_t(i) * n + j] = l * vectors[int64_t(j) * n + i];
  }
  return {};
}

// The r×r part: S, and P (r×t), Q (t×r) with B' = B·P, A' = Q·A. Returns accepted = false when a
// guard refuses the Gram route (the caller falls back), with the guards of svd.ts's gramRoute.
//
// With RᵀR = G_B (B = Q_B R): sBA = Q_B (sRA), so ΔWΔWᵀ = Q_B N Q_Bᵀ with N = s²R G_A Rᵀ = U_N Λ U_Nᵀ
// and σ² = Λ. Then V_t = ΔWᵀU_tΣ_t⁻¹ = s Aᵀ Rᵀ U_N,t Σ_t⁻¹ and U_t = ΔW V_t Σ_t⁻¹ = s² B G_A Rᵀ U_N,t Σ_t⁻²,
// so B' = B·(s² G_A Rᵀ U_N,t Σ_t⁻² · D_B) and A' = (D_A · s Σ_t⁻¹ U_N,tᵀ R)·A, with D_B = D_A =
// diag(√σ/√s') (balanced) or D_B = diag(σ/s'), D_A = I (all-in-up): one Cholesky and one r×r
// eigen-decomposition per module, no inverse of R.
struct Small {
  std::vector<double> P, Q;
  double norm2 = 0, scale2 = 0, tail = 0;
  bool zero = false;  // sBA = 0 and the factors are zero: write zeros
};

// The spectrum part, shared with factorSpectrum: ‖sBA‖², s²‖B‖²‖A‖², guard (1), R and the
// eigen-decomposition of N. S gets σ (descending); `ok` is false when guard (1) refuses.
struct Core {
  double norm2 = 0, scale2 = 0;
  bool zero = false, ok = false;
  std::vector<double> R, UN;
};

// withVectors = false (factorSpectrum): σ alone, c->UN left empty.
Status spectrumCore(const std::vector<double>& GB, const std::vector<double>& GA, int r, double s, double* S, Core* c,
                    bool withVectors = true) {
  double normB2 = 0, normA2 = 0;
  for (int i = 0; i < r; i++) normB2 += GB[int64_t(i) * r + i], normA2 += GA[int64_t(i) * r + i];
  c->scale2 = s * s * normB2 * normA2;
  c->norm2 = std::max(0.0, s * s * frob(GB.data(), GA.data(), int64_t(r) * r));
  std::fill(S, S + r, 0.0);
  if (c->norm2 == 0 && c->scale2 == 0) {
    c->zero = c->ok = true;
    return {};
  }
  // Guard (1): the large directions of B and A cancel; the Gram route would lose the result.
  if (!(c->norm2 >= 1e-3 * c->scale2)) return {};
  Status st = gramRoot(GB, r, c->R);
  if (!st.ok()) return st;
  const std::vector<double>& R = c->R;
  // RG = R·G_A (r×r), N = s²·RG·Rᵀ (symmetrised).
  std::vector<double> RG(int64_t(r) * r, 0.0), N(int64_t(r) * r, 0.0);
  std::vector<double> lambda(r);
  if (!withVectors) {
    // σ alone (factorSpectrum): both products by BLAS, whose sums run in another order than the
    // loops below (the truncation's route keeps those, so its output bytes do not move).
    st = Ops<Cpu>::gemm<double>(R.data(), r, r, GA.data(), r, r, false, false, 1.0, RG.data());
    if (st.ok()) st = Ops<Cpu>::gemm<double>(RG.data(), r, r, R.data(), r, r, false, true, s * s, N.data());
    if (st.ok()) st = Ops<Cpu>::eigSym<double>(N.data(), r, lambda.data(), nullptr);  // lower triangle read
    if (!st.ok()) return st;
    for (int i = 0; i < r; i++) S[i] = std::sqrt(std::max(0.0, lambda[i]));
    c->ok = true;
    return {};
  }
  for (int i = 0; i < r; i++)
    for (int k = 0; k < r; k++) {
      double x = R[int64_t(i) * r + k];
      if (x == 0) continue;
      for (int j = 0; j < r; j++) RG[int64_t(i) * r + j] += x * GA[int64_t(k) * r + j];
    }
  for (int i = 0; i < r; i++)
    for (int j = 0; j <= i; j++) {
      double x = 0;
      for (int k = 0; k < r; k++) x += RG[int64_t(i) * r + k] * R[int64_t(j) * r + k];
      N[int64_t(i) * r + j] = N[int64_t(j) * r + i] = s * s * x;
    }
  c->UN.assign(int64_t(r) * r, 0.0);
  st = Ops<Cpu>::eigSym<double>(N.data(), r, lambda.data(), c->UN.data());
  if (!st.ok()) return st;
  for (int i = 0; i < r; i++) S[i] = std::sqrt(std::max(0.0, lambda[i]));
  c->ok = true;
  return {};
}

// Components below the Gram route's noise floor are zero: √ε·s‖B‖‖A‖ is what it resolves.
double noiseFloor(double scale2) { return 2e-8 * std::sqrt(scale2); }

Status smallAlgebra(const std::vector<double>& GB, const std::vector<double>& GA, int r, double s, int t, double s2,
                    bool balanced, double* S, Small* out, bool* accepted) {
  *accepted = false;
  Core core;
  Status st = spectrumCore(GB, GA, r, s, S, &core);
  if (!st.ok()) return st;
  out->norm2 = core.norm2, out->scale2 = core.scale2, out->zero = core.zero;
  if (!core.ok) return {};
  if (core.zero) {
    *accepted = true;
    return {};
  }
  const std::vector<double>&R = core.R, &UN = core.UN;
  const double floor = noiseFloor(out->scale2);
  out->tail = 0;
  for (int i = 0; i < r; i++)
    if (i >= t || !(S[i] > floor)) out->tail += S[i] * S[i];
  // W = Rᵀ U_N,t (r×t); P = s² G_A W Σ⁻² D_B, Q = D_A s Σ⁻¹ Wᵀ.
  out->P.assign(int64_t(r) * t, 0.0);
  out->Q.assign(int64_t(t) * r, 0.0);
  std::vector<double> W(int64_t(r) * t, 0.0);
  for (int k = 0; k < r; k++)
    for (int i = 0; i < r; i++) {
      double x = R[int64_t(k) * r + i];
      if (x == 0) continue;
      for (int c = 0; c < t; c++) W[int64_t(i) * t + c] += x * UN[int64_t(k) * r + c];
    }
  for (int c = 0; c < t && c < r; c++) {
    double sv = S[c];
    if (!(sv > floor)) continue;
    double dB = balanced ? std::sqrt(sv / s2) : sv / s2, dA = balanced ? std::sqrt(sv / s2) : 1.0;
    double fP = s * s / (sv * sv) * dB, fQ = s / sv * dA;
    for (int i = 0; i < r; i++) {
      double x = 0;
      for (int k = 0; k < r; k++) x += GA[int64_t(i) * r + k] * W[int64_t(k) * t + c];
      out->P[int64_t(i) * t + c] = fP * x;
      out->Q[int64_t(c) * r + i] = fQ * W[int64_t(i) * t + c];
    }
  }
  // Guard (2): the r×r model of ‖sBA − s'B·P·Q·A‖² must match Σ_{i≥t} σᵢ².
  std::vector<double> X(int64_t(r) * t, 0.0), Y(int64_t(t) * r, 0.0), K(int64_t(t) * t, 0.0), L(int64_t(t) * t, 0.0);
  for (int i = 0; i < r; i++)
    for (int k = 0; k < r; k++)
      for (int c = 0; c < t; c++) {
        X[int64_t(i) * t + c] += GB[int64_t(i) * r + k] * out->P[int64_t(k) * t + c];
        Y[int64_t(c) * r + i] += out->Q[int64_t(c) * r + k] * GA[int64_t(k) * r + i];
      }
  double tr = 0;
  for (int i = 0; i < r; i++)
    for (int c = 0; c < t; c++) tr += X[int64_t(i) * t + c] * Y[int64_t(c) * r + i];
  for (int a = 0; a < t; a++)
    for (int b = 0; b < t; b++) {
      double k = 0, l = 0;
      for (int i = 0; i < r; i++) {
        k += out->P[int64_t(i) * t + a] * X[int64_t(i) * t + b];
        l += Y[int64_t(a) * r + i] * out->Q[int64_t(b) * r + i];
      }
      K[int64_t(a) * t + b] = k;
      L[int64_t(a) * t + b] = l;
    }
  double cross = s * s2 * tr, own = s2 * s2 * frob(K.data(), L.data(), int64_t(t) * t);
  double err2 = out->norm2 - 2 * cross + own;
  *accepted = std::fabs(err2 - out->tail) <= 1e-9 * out->norm2 + 1e-12 * out->scale2;
  return {};
}

// Per-thread working buffers, grown as needed and kept between calls (fresh multi-MB allocations
// are fresh pages: a page fault every 4 KiB).
template <typename T>
T* scratch(std::vector<T>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
  return v.data();
}
template <typename X, typename C>
struct Scratch {
  std::vector<X> chunk;       // kChunk decoded rows (B) or columns (A), L1/L2-sized
  std::vector<C> YB, YA, stack;
};
template <typename X, typename C>
Scratch<X, C>& scratchOf() {
  static thread_local Scratch<X, C> s;
  return s;
}

// Rows of B (columns of A) per streamed chunk: decoded into a buffer that stays in cache while the
// Gram tiles or the product run over it, so the decoded factors never travel to memory.
constexpr int kChunk = 128;

// fn(first, n) over [0, total) in chunks of kChunk.
template <typename F>
void eachChunk(int64_t total, F fn) {
  for (int64_t first = 0; first < total; first += kChunk) fn(first, int(std::min<int64_t>(kChunk, total - first)));
}

// Rows [i0, i0 + n) of B, or columns [j0, j0 + n) of A as rows, decoded into buf (n×ld).
template <typename X>
void decodeBRows(const TruncateArgs& a, int64_t i0, int n, int ld, X* buf) {
  kernels::decodeRows<X>(a.rawB + i0 * a.r * kernels::dtypeSize(a.dtypeB), a.dtypeB, n, a.r, ld, buf);
}
template <typename X>
void decodeAColumns(const TruncateArgs& a, int64_t j0, int n, int ld, X* buf) {
  kernels::decodeColumns<X>(a.rawA, a.dtypeA, a.r, a.in, j0, n, ld, buf);
}

// G_B = BᵀB and G_A = AAᵀ (ld×ld upper tiles, ld = gramStride(r)), streaming the raw bytes through
// `buf` (kChunk·ld values of X).
template <typename X>
void grams(const TruncateArgs& a, X* buf, std::vector<double>& gb, std::vector<double>& ga) {
  const int ld = kernels::gramStride(a.r);
  gb.assign(int64_t(ld) * ld, 0.0);
  ga.assign(int64_t(ld) * ld, 0.0);
  eachChunk(a.out, [&](int64_t i0, int n) {
    decodeBRows(a, i0, n, ld, buf);
    kernels::gramAccumulate<X>(buf, n, ld, gb.data());
  });
  eachChunk(a.in, [&](int64_t j0, int n) {
    decodeAColumns(a, j0, n, ld, buf);
    kernels::gramAccumulate<X>(buf, n, ld, ga.data());
  });
}

// NaN/±Inf are refused, naming the factor and element (A first, as formats/adapter/factors.ts).
bool refuseNonFinite(const TruncateArgs& a, TruncateOutcome* o) {
  double v = 0;
  int64_t bad = kernels::firstNonFinite(a.rawA, a.dtypeA, int64_t(a.r) * a.in, &v);
  if (bad >= 0) {
    o->kind = TruncateOutcome::NonFinite, o->badFactor = 0, o->badIndex = bad, o->badValue = v;
    return true;
  }
  bad = kernels::firstNonFinite(a.rawB, a.dtypeB, int64_t(a.out) * a.r, &v);
  if (bad >= 0) {
    o->kind = TruncateOutcome::NonFinite, o->badFactor = 1, o->badIndex = bad, o->badValue = v;
    return true;
  }
  return false;
}

// Whether the diagonal of a w×w Gram is finite: a NaN or ±Inf anywhere in a factor reaches the
// diagonal (x² is NaN or +Inf, and a sum of squares never cancels it).
bool finiteDiagonal(const std::vector<double>& g, int w) {
  double d = 0;
  for (int i = 0; i < w; i++) d += g[int64_t(i) * w + i];
  return std::isfinite(d);
}

// σ of sBA (factorSpectrum): the Grams and spectrumCore, σ below the noise floor set to 0.
template <typename X>
Status spectrum(const TruncateArgs& a, double* S, double* gramsOut, TruncateOutcome* o) {
  const int ld = kernels::gramStride(a.r);
  Scratch<X, X>& w = scratchOf<X, X>();
  std::vector<double> GB, GA;
  if (a.grams) {  // formed elsewhere (the cuda addon's GPU Grams)
    if (refuseNonFinite(a, o)) return {};
    GB.assign(a.grams, a.grams + int64_t(a.r) * a.r);
    GA.assign(a.grams + int64_t(a.r) * a.r, a.grams + 2 * int64_t(a.r) * a.r);
  } else {
    std::vector<double> gb, ga;
    grams<X>(a, scratch(w.chunk, int64_t(kChunk) * ld), gb, ga);
    GB = symmetricGram(gb, ld, a.r), GA = symmetricGram(ga, ld, a.r);
    // The scan for NaN/±Inf (which names the first one) only when the Grams show there is one:
    // a separate pass over the bytes otherwise.
    if (!(finiteDiagonal(GB, a.r) && finiteDiagonal(GA, a.r)) && refuseNonFinite(a, o)) return {};
  }
  if (gramsOut) {  // kept by the caller for a later truncateFactors of the same bytes
    std::copy(GB.begin(), GB.end(), gramsOut);
    std::copy(GA.begin(), GA.end(), gramsOut + GB.size());
  }
  Core core;
  Status st = spectrumCore(GB, GA, a.r, a.scale, S, &core, false);
  if (!st.ok()) return st;
  o->norm2 = core.norm2;
  if (!core.ok) {
    o->kind = TruncateOutcome::Fallback;
    return {};
  }
  const double floor = noiseFloor(core.scale2);
  for (int i = 0; i < a.r; i++)
    if (!(S[i] > floor)) S[i] = 0;
  return {};
}

// X: decoded factors (float, or double for F64 inputs); C: precision of the products.
// Three streaming passes over the raw bytes: Grams; products; signs, rounding, residual and bytes.
template <typename X, typename C>
Status route(const TruncateArgs& a, uint8_t* outB, uint8_t* outA, double* S, TruncateOutcome* o) {
  const int r = a.r, t = a.t;
  const int64_t out = a.out, in = a.in;
  const int ld = kernels::gramStride(r);
  Scratch<X, C>& w = scratchOf<X, C>();
  X* buf = scratch(w.chunk, int64_t(kChunk) * ld);
  // Pass 1: G_B = BᵀB, G_A = AAᵀ (or those factorSpectrum already formed from these bytes).
  std::vector<double> GB, GA;
  if (a.grams) {
    GB.assign(a.grams, a.grams + int64_t(r) * r);
    GA.assign(a.grams + int64_t(r) * r, a.grams + 2 * int64_t(r) * r);
  } else {
    std::vector<double> gb, ga;
    grams<X>(a, buf, gb, ga);
    GB = symmetricGram(gb, ld, r), GA = symmetricGram(ga, ld, r);
    // The scan for NaN/±Inf (which names the first one) only when the Grams show there may be one,
    // as spectrum() does: no separate pass over the bytes otherwise.
    if (!(finiteDiagonal(GB, r) && finiteDiagonal(GA, r)) && refuseNonFinite(a, o)) return {};
  }
  Small sm;
  bool accepted = false;
  Status st = smallAlgebra(GB, GA, r, a.scale, t, a.scaleOut, a.balanced, S, &sm, &accepted);
  if (!st.ok()) return st;
  o->norm2 = sm.norm2;
  if (!accepted) {
    o->kind = TruncateOutcome::Fallback;
    return {};
  }
  const int osize = kernels::dtypeSize(a.outDtype);
  if (sm.zero) {  // +0.0 is all-zero bytes in every dtype
    std::fill(outB, outB + out * t * osize, uint8_t(0));
    std::fill(outA, outA + t * in * osize, uint8_t(0));
    o->err2 = 0;
    return {};
  }
  o->err2 = sm.tail;
  // Pass 2: B' = B·P (out×t) and A'ᵀ = Aᵀ·Qᵀ (in×t), in C, padded to tp columns.
  const int tp = kernels::productStride<C>(t);
  std::vector<C> P(int64_t(r) * tp, C(0)), Qt(int64_t(r) * tp, C(0));
  for (int i = 0; i < r; i++)
    for (int c = 0; c < t; c++) {
      P[int64_t(i) * tp + c] = C(sm.P[int64_t(i) * t + c]);
      Qt[int64_t(i) * tp + c] = C(sm.Q[int64_t(c) * r + i]);
    }
  C* YB = scratch(w.YB, out * tp);
  C* YA = scratch(w.YA, in * tp);
  eachChunk(out, [&](int64_t i0, int n) {
    decodeBRows(a, i0, n, ld, buf);
    kernels::thinProduct<X, C>(buf, n, r, ld, P.data(), tp, YB + i0 * tp);
  });
  eachChunk(in, [&](int64_t j0, int n) {
    decodeAColumns(a, j0, n, ld, buf);
    kernels::thinProduct<X, C>(buf, n, r, ld, Qt.data(), tp, YA + j0 * tp);
  });
  // Signs (linalg/signs.ts, sklearn's svd_flip on u): the largest-magnitude entry of every column
  // of B' is positive; the matching row of A' flips with it.
  std::vector<C> sign(t, C(1));
  for (int c = 0; c < t; c++) {
    C best = 0, bestAbs = -1;
    for (int64_t i = 0; i < out; i++) {
      C v = YB[i * tp + c];
      if (std::fabs(v) > bestAbs) bestAbs = std::fabs(v), best = v;
    }
    if (best < 0) sign[c] = C(-1);
  }
  // Pass 3: signs, rounding to the output dtype and the bytes; [B' | δB] and [A''ᵀ | δAᵀ] give the
  // rounding residual (svd.ts truncationError): ‖R‖² = s'²(⟨δBᵀδB, A''A''ᵀ⟩ + 2⟨δBᵀB', A''δAᵀ⟩ + ⟨B'ᵀB', δAδAᵀ⟩).
  const bool rounds = a.outDtype != F64;
  const int ld2 = kernels::gramStride(2 * t);
  C* stk = scratch(w.stack, int64_t(kChunk) * ld2);
  std::vector<double> gs(int64_t(ld2) * ld2, 0.0), hs(int64_t(ld2) * ld2, 0.0);
  eachChunk(out, [&](int64_t i0, int n) {
    kernels::roundAndStack<C>(YB + i0 * tp, n, t, tp, a.outDtype, sign.data(), false, stk, ld2);  // [B' | δB]
    if (rounds) kernels::gramAccumulate<C>(stk, n, ld2, gs.data());
    kernels::encodeRows<C>(YB + i0 * tp, n, t, tp, a.outDtype, outB + i0 * t * osize);
  });
  eachChunk(in, [&](int64_t j0, int n) {
    kernels::roundAndStack<C>(YA + j0 * tp, n, t, tp, a.outDtype, sign.data(), true, stk, ld2);  // [A''ᵀ | δAᵀ]
    if (rounds) kernels::gramAccumulate<C>(stk, n, ld2, hs.data());
    kernels::encodeColumns<C>(YA + j0 * tp, n, t, tp, a.outDtype, outA + j0 * osize, in);
  });
  if (rounds) {
    auto g = [&](const std::vector<double>& G, int i, int j) { return i <= j ? G[int64_t(i) * ld2 + j] : G[int64_t(j) * ld2 + i]; };
    double t11 = 0, t10 = 0, t00 = 0;
    for (int i = 0; i < t; i++)
      for (int j = 0; j < t; j++) {
        t11 += g(gs, t + i, t + j) * g(hs, i, j);
        t10 += g(gs, t + i, j) * g(hs, i, t + j);
        t00 += g(gs, i, j) * g(hs, t + i, t + j);
      }
    o->resid2 = a.scaleOut * a.scaleOut * std::max(0.0, t11 + 2 * t10 + t00);
  }
  o->productBits = 8 * int(sizeof(C));
  return {};
}

}  // namespace

template <>
Status Ops<Cpu>::truncateFactors(const TruncateArgs& a, uint8_t* outB, uint8_t* outA, double* S, TruncateOutcome* o) {
  *o = TruncateOutcome();
  if (a.r < 1 || a.t < 1 || a.t > a.r || a.out < 1 || a.in < 1)
    return Status::fail("BAD_SHAPE", "truncateFactors: need 1 ≤ t ≤ r and non-empty factors");
  if (a.grams && refuseNonFinite(a, o)) return {};  // otherwise route() scans when its Grams are not finite
  const bool wide = a.dtypeA == F64 || a.dtypeB == F64;
  const bool narrowOut = (a.outDtype == kernels::F16 || a.outDtype == kernels::BF16) && !a.productsInDouble;
  try {
    if (wide) return route<double, double>(a, outB, outA, S, o);
    if (narrowOut) return route<float, float>(a, outB, outA, S, o);
    return route<float, double>(a, outB, outA, S, o);
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", "truncateFactors: out of memory");
  }
}

template <>
Status Ops<Cpu>::factorSpectrum(const TruncateArgs& a, double* S, double* gramsOut, TruncateOutcome* o) {
  *o = TruncateOutcome();
  if (a.r < 1 || a.out < 1 || a.in < 1) return Status::fail("BAD_SHAPE", "factorSpectrum: need non-empty factors");
  try {
    if (a.dtypeA == F64 || a.dtypeB == F64) return spectrum<double>(a, S, gramsOut, o);
    return spectrum<float>(a, S, gramsOut, o);
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", "factorSpectrum: out of memory");
  }
}

}  // namespace lora
