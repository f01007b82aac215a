// The streamed full-model kernels of `lora apply` and `lora extract` (ops.h mergeWeight,
// weightDelta, sketch), defined once as members of any Ops<Device>: the products and factorizations
// go through Ops<Device>::gemm/qr/svd (host buffers), the decode/add/encode loops run on the host.
// cpu/streamed.cc and cuda/streamed.cc instantiate them. Semantics mirror the TS routes that the js
// backend runs (linalg/js/streamed.ts), so that the cpu backend writes the bytes it wrote before.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <vector>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "halfs.h"
#include "ops.h"

namespace lora {
namespace streamed {

inline bool finite(float x) { return x - x == 0; }

/** The 16-bit storage formats element by element: get → float32 exact, put ← float32 ties to even. */
struct F16 {
  static float get(uint16_t h) { return halfToFloat(h); }
  static uint16_t put(float f) { return floatToHalf(f); }
};
struct BF16 {
  static float get(uint16_t h) { return bf16ToFloat(h); }
  static uint16_t put(float f) {  // finite values only (callers check first), so no NaN case
    uint32_t x;
    std::memcpy(&x, &f, 4);
    return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
  }
};

template <class Format>
void decode16(const uint8_t* raw, int64_t n, float* dst) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(raw);
  for (int64_t i = 0; i < n; i++) dst[i] = Format::get(h[i]);
}

template <class Format>
void encode16(const float* v, int64_t n, uint8_t* raw) {
  uint16_t* h = reinterpret_cast<uint16_t*>(raw);
  for (int64_t i = 0; i < n; i++) h[i] = Format::put(v[i]);
}

/** n stored values (dtype 0 F32, 1 F16, 2 BF16) → float32, exact. */
inline void decode(const uint8_t* raw, int dtype, int64_t n, float* dst) {
  if (dtype == 0) std::memcpy(dst, raw, size_t(n) * 4);
  else if (dtype == 2) decode16<BF16>(raw, n, dst);
  else decode16<F16>(raw, n, dst);
}

/** n float32 values → stored dtype bytes, ties to even (common/half.ts f32BitsTo*Bits). */
inline void encode(const float* v, int dtype, int64_t n, uint8_t* raw) {
  if (dtype == 0) std::memmove(raw, v, size_t(n) * 4);
  else if (dtype == 2) encode16<BF16>(v, n, raw);
  else encode16<F16>(v, n, raw);
}

/** The largest exponent field among n float32 values: 0x7f800000 when one of them is ±Inf or NaN. */
inline uint32_t topExponent(const float* v, int64_t n) {
  uint32_t top = 0;
  for (int64_t j = 0; j < n; j++) {
    uint32_t u;
    std::memcpy(&u, v + j, 4);
    top = std::max(top, u & 0x7f800000u);  // a max reduction, vectorised (a NaN-aware compare is not)
  }
  return top;
}

/** The index of the first ±Inf or NaN among n values, or -1. */
inline int64_t firstBad(const float* v, int64_t n) {
  if (topExponent(v, n) != 0x7f800000u) return -1;
  for (int64_t i = 0; i < n; i++)
    if (!finite(v[i])) return i;
  return -1;
}

/**
 * Rows of B multiplied at a time, as linalg/streamed.ts: OpenBLAS's sgemm rounds a few elements
 * differently for other row counts (edge tiles), and the output must not depend on the backend route.
 * 64 rows keep the product block (64×in floats, ≤ 2.8 MB for in = 11008) near the cache while it
 * is added to the weight; OpenBLAS packs A once per block, 1/64 of the block's arithmetic.
 */
constexpr int kMergeRows = 64;

/**
 * Scratch kept from call to call, one per thread (apply merges pieces on several threads side by
 * side): fresh pages cost more than the arithmetic on them on virtual machines (a page fault per 4 KB).
 */
struct Reused {
  std::vector<float> W, D;
  static Reused& get() {
    thread_local Reused r;
    return r;
  }
};

inline void fit(std::vector<float>& v, size_t n) {
  if (v.size() < n) {
    v.clear();
    v.shrink_to_fit();
    v.resize(n);
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(LORA_NO_CLONES)
#define LORA_STREAM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LORA_STREAM_CLONES
#endif

/** row[j] = decode(raw[j]) + D[j] for j < m, in one pass (16-bit formats). */
template <class Format>
inline void decodeAdd16(const uint8_t* raw, const float* D, int64_t m, float* row) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(raw);
  for (int64_t j = 0; j < m; j++) row[j] = Format::get(h[j]) + D[j];
}

/** One term, W stored out×in: rows [0, n) of raw += D, decoded and summed a run of rowLen at a time, checked, encoded (AVX2 where present). */
LORA_STREAM_CLONES static int64_t addEncodeRows(uint8_t* raw, int dtype, const float* D, int64_t len, float* row, int64_t rowLen) {
  const size_t es = dtype == 0 ? 4 : 2;
  for (int64_t b0 = 0; b0 < len; b0 += rowLen) {
    const int64_t m = std::min(rowLen, len - b0);
    uint8_t* r = raw + b0 * es;
    if (dtype == 0) {
      const float* f = reinterpret_cast<const float*>(r);
      for (int64_t j = 0; j < m; j++) row[j] = f[j] + D[b0 + j];
    } else if (dtype == 2) {
      decodeAdd16<BF16>(r, D + b0, m, row);
    } else {
      decodeAdd16<F16>(r, D + b0, m, row);
    }
    const int64_t bad = firstBad(row, m);
    if (bad >= 0) return b0 + bad;
    encode(row, dtype, m, r);
  }
  return -1;
}

}  // namespace streamed

template <class Device>
Status Ops<Device>::mergeWeight(const MergeArgs& a, MergeOutcome* o) {
  using namespace streamed;
  const int out = a.out, inn = a.in;
  const int64_t total = int64_t(out) * inn;
  const size_t es = a.dtype == 0 ? 4 : 2;
  Reused& scratch = Reused::get();
  try {
    if (!a.transposed) {
      // Rows [i0, i0 + n) of W (stored out×in): decode, add each term's rows of coef·B·A, encode in place.
      const int rowsPer = std::min(out, kMergeRows);
      fit(scratch.D, size_t(rowsPer) * inn);
      fit(scratch.W, a.nTerms == 1 ? size_t(16384) : size_t(rowsPer) * inn);
      float* W = scratch.W.data();
      float* D = scratch.D.data();
      if (a.nTerms == 1) {
        // The common case in one pass over the block: the base is checked as it is decoded.
        const MergeTerm& t = a.terms[0];
        for (int i0 = 0; i0 < out; i0 += rowsPer) {
          const int n = std::min(rowsPer, out - i0);
          const int64_t len = int64_t(n) * inn, off = int64_t(i0) * inn;
          Status st = gemm<float>(t.B + int64_t(i0) * t.r, n, t.r, t.A, t.r, inn, false, false, t.coef, D);
          if (!st.ok()) return st;
          const int64_t bad = addEncodeRows(a.data + off * es, a.dtype, D, len, W, 16384);
          if (bad >= 0) {
            float base;
            decode(a.data + (off + bad) * es, a.dtype, 1, &base);
            if (!finite(base))
              o->kind = MergeOutcome::BaseNonFinite, o->index = off + bad, o->value = base;
            else
              o->kind = MergeOutcome::Overflow, o->index = off + bad;
            return {};
          }
        }
        o->kind = MergeOutcome::Done;
        return {};
      }
      for (int i0 = 0; i0 < out; i0 += rowsPer) {
        const int n = std::min(rowsPer, out - i0);
        const int64_t len = int64_t(n) * inn, off = int64_t(i0) * inn;
        decode(a.data + off * es, a.dtype, len, W);
        int64_t bad = firstBad(W, len);
        if (bad >= 0) {
          o->kind = MergeOutcome::BaseNonFinite, o->index = off + bad, o->value = W[bad];
          return {};
        }
        for (int k = 0; k < a.nTerms; k++) {
          const MergeTerm& t = a.terms[k];
          Status st = gemm<float>(t.B + int64_t(i0) * t.r, n, t.r, t.A, t.r, inn, false, false, t.coef, D);
          if (!st.ok()) return st;
          for (int64_t j = 0; j < len; j++) W[j] = W[j] + D[j];
        }
        bad = firstBad(W, len);
        if (bad >= 0) {
          o->kind = MergeOutcome::Overflow, o->index = off + bad;
          return {};
        }
        encode(W, a.dtype, len, a.data + off * es);
      }
    } else {
      // W stored in×out: the whole weight in float32, each term's product (out×in, a block of rows
      // at a time) added transposed.
      std::vector<float> W(static_cast<size_t>(total));
      decode(a.data, a.dtype, total, W.data());
      int64_t bad = firstBad(W.data(), total);
      if (bad >= 0) {
        o->kind = MergeOutcome::BaseNonFinite, o->index = bad, o->value = W[bad];
        return {};
      }
      const int rowsPer = std::min(out, kMergeRows);
      std::vector<float> D(size_t(rowsPer) * inn);
      for (int k = 0; k < a.nTerms; k++) {
        const MergeTerm& t = a.terms[k];
        for (int i0 = 0; i0 < out; i0 += rowsPer) {
          const int n = std::min(rowsPer, out - i0);
          Status st = gemm<float>(t.B + int64_t(i0) * t.r, n, t.r, t.A, t.r, inn, false, false, t.coef, D.data());
          if (!st.ok()) return st;
          for (int i = 0; i < n; i++)
            for (int j = 0; j < inn; j++) {
              float& w = W[int64_t(j) * out + i0 + i];
              w = w + D[int64_t(i) * inn + j];
            }
        }
      }
      bad = firstBad(W.data(), total);
      if (bad >= 0) {
        o->kind = MergeOutcome::Overflow, o->index = bad;
        return {};
      }
      encode(W.data(), a.dtype, total, a.data);
    }
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", "mergeWeight: out of memory");
  }
  o->kind = MergeOutcome::Done;
  return {};
}

template <class Device>
Status Ops<Device>::weightDelta(const uint8_t* tuned, const uint8_t* base, int dtype, int64_t n, float* delta,
                                double* norm2, int64_t* firstNonFinite, int* which) {
  using namespace streamed;
  constexpr int64_t B = 4096;
  float tb[B], bb[B];
  const size_t es = dtype == 0 ? 4 : 2;
  // Σd² in float64 over eight running sums (element i of this call into sum i mod 8), added to
  // *norm2 in a fixed order at the end, as the TS route does (linalg/streamed.ts weightDeltaTs):
  // one running sum is a chain of dependent additions, ~4 cycles an element.
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  static_assert(B % 8 == 0, "blocks start at a multiple of the lane count");
  *firstNonFinite = -1;
  for (int64_t b0 = 0; b0 < n; b0 += B) {
    const int64_t m = std::min(B, n - b0);
    decode(tuned + b0 * es, dtype, m, tb);
    decode(base + b0 * es, dtype, m, bb);
    float* d = delta + b0;
    for (int64_t i = 0; i < m; i++) d[i] = tb[i] - bb[i];
    if (topExponent(d, m) == 0x7f800000u) {
      for (int64_t i = 0; i < m; i++) {
        int w = !finite(tb[i]) ? 0 : !finite(bb[i]) ? 1 : !finite(d[i]) ? 2 : -1;
        if (w >= 0) {
          *firstNonFinite = b0 + i, *which = w;
          return {};
        }
      }
    }
    int64_t i = 0;
    for (; i + 8 <= m; i += 8)
      for (int l = 0; l < 8; l++) lane[l] += double(d[i + l]) * double(d[i + l]);
    for (; i < m; i++) lane[i & 7] += double(d[i]) * double(d[i]);
  }
  *norm2 += ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  return {};
}

namespace streamed {
// Gives the heap's free pages back to the system: a sketch allocates and frees tens of megabytes
// of scratch per weight, and glibc's retained free memory grew peak RSS by ~50 MB over 25
// weights of lora extract (docs/BENCHMARKS.md "extract and apply").
inline void releaseFreeHeap() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}
}  // namespace streamed

template <class Device>
Status Ops<Device>::sketch(const SketchArgs& a, SketchOut* o) {
  Status st = sketchSteps(a, o);
  streamed::releaseFreeHeap();
  return st;
}

template <class Device>
Status Ops<Device>::sketchSteps(const SketchArgs& a, SketchOut* o) {
  using streamed::firstBad;
  const int d = a.rows, k = a.cols, l = a.l;
  const int64_t n = int64_t(d) * k;
  o->firstNonFinite = firstBad(a.m, n);
  if (o->firstNonFinite >= 0) return {};
  try {
    std::vector<float> Y(size_t(d) * l), Q(size_t(d) * l), Z(size_t(k) * l), Zq(size_t(k) * l), R(size_t(l) * l);
    std::vector<double> Zd(size_t(k) * l), S(l), G(size_t(l) * l), Gv(size_t(l) * l);
    Status st;
    auto ok = [&](Status x) {
      st = std::move(x);
      return st.ok();
    };
    // Q = qr(M Ω).Q
    if (!ok(gemm<float>(a.m, d, k, a.omega, k, l, false, false, 1.f, Y.data())) ||
        !ok(qr<float>(Y.data(), d, l, Q.data(), R.data())))
      return st;
    double prev = 0, prevDelta = 0;
    bool havePrev = false, havePrevDelta = false;
    for (int q = 0;; q++) {
      // Z = MᵀQ (= Bᵀ) in float64; the captured energy of the leading t from the eigenvalues of ZᵀZ
      // (ℓ×ℓ): the SVD of Z, k×ℓ, is computed once, when the iterations stop (linalg/streamed.ts).
      if (!ok(gemm<float>(a.m, d, k, Q.data(), d, l, true, false, 1.f, Z.data()))) return st;
      for (size_t i = 0; i < Zd.size(); i++) Zd[i] = Z[i];
      if (!ok(gemm<double>(Zd.data(), k, l, Zd.data(), k, l, true, false, 1.0, G.data())) ||
          !ok(eigSym<double>(G.data(), l, S.data(), Gv.data())))
        return st;
      double e = 0;
      for (int i = 0; i < a.t; i++) e += std::max(S[i], 0.0);
      const double err2 = std::max(a.norm2 - e, 0.0);
      double excess = HUGE_VAL;
      if (havePrev) {
        const double delta = std::max(e - prev, 0.0);
        const double rho = havePrevDelta && prevDelta > 0 ? std::min(std::max(delta / prevDelta, 0.5), 0.99) : 0.5;
        excess = (delta * rho) / (1 - rho);
        prevDelta = delta, havePrevDelta = true;
      }
      prev = e, havePrev = true;
      if (excess <= 0.5 * a.allowed * err2 + a.floor || q >= a.maxIters) {
        if (!ok(svd<double>(Zd.data(), k, l, o->Uz, S.data(), o->VzT))) return st;
        for (int i = 0; i < l; i++) o->sigma[i] = std::max(S[i], 0.0);
        o->floorLimited = excess > 0.5 * a.allowed * err2;
        o->iters = q;
        o->excess2 = std::isfinite(excess) ? excess : err2;
        for (size_t i = 0; i < Q.size(); i++) o->Q[i] = Q[i];
        return {};
      }
      // Q = qr(M · qr(Z).Q).Q
      if (!ok(qr<float>(Z.data(), k, l, Zq.data(), R.data())) ||
          !ok(gemm<float>(a.m, d, k, Zq.data(), k, l, false, false, 1.f, Y.data())) ||
          !ok(qr<float>(Y.data(), d, l, Q.data(), R.data())))
        return st;
    }
  } catch (const std::bad_alloc&) {
    return Status::fail("ALLOC", "sketch: out of memory");
  }
}

}  // namespace lora
