// Longer than 400 lines: every multi-versioned (target_clones) kernel of the fused route in one unit.
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../common/halfs.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

// Three builds of each entry point, picked by the loader (GCC/Clang function multi-versioning).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(LORA_NO_CLONES)
#define LORA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LORA_CLONES
#endif
#define LORA_INLINE inline __attribute__((always_inline))

// _Float16 (GCC ≥ 12, Clang ≥ 15 on x86-64): vectorised F16 conversions (vcvtph2ps) in the v3/v4 builds.
#if defined(__FLT16_MAX__) && defined(__x86_64__)
#define LORA_HAVE_FLOAT16 1
#endif

namespace lora {
namespace kernels {

namespace {

// 256-bit generic vectors: one AVX2 register, half an AVX-512 register pair on Zen 4, two SSE.
typedef double vd __attribute__((vector_size(32)));
typedef float vf __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));
template <typename T> struct Vec;
template <> struct Vec<float> { typedef vf v; static constexpr int n = 8; };
template <> struct Vec<double> { typedef vd v; static constexpr int n = 4; };

template <typename V, typename T>
LORA_INLINE V load(const T* p) {
  V x;
  std::memcpy(&x, p, sizeof x);
  return x;
}
template <typename V, typename T>
LORA_INLINE void store(T* p, V x) {
  std::memcpy(p, &x, sizeof x);
}

// Four consecutive values of X as float64 (exact from float32).
LORA_INLINE vd load4(const double* p) { return load<vd>(p); }
LORA_INLINE vd load4(const float* p) { return __builtin_convertvector(load<vf4>(p), vd); }

// Gram tile: kTA rows × kNB·4 columns of XᵀX, accumulated in float64 registers over `rows` rows.
// Rows are taken in chunks that stay in L1/L2 while every tile of the chunk is formed.
constexpr int kTA = 4, kNB = 4, kTB = kNB * 4;

template <typename T>
LORA_INLINE void gramTile(const T* X, int rows, int ld, int a0, int b0, double* G) {
  vd acc[kTA][kNB];
  for (int a = 0; a < kTA; a++)
    for (int b = 0; b < kNB; b++) acc[a][b] = vd{};
  for (int i = 0; i < rows; i++) {
    const T* x = X + int64_t(i) * ld;
    vd xb[kNB];
    for (int b = 0; b < kNB; b++) xb[b] = load4(x + b0 + 4 * b);
    for (int a = 0; a < kTA; a++) {
      const double s = double(x[a0 + a]);
      const vd xa = {s, s, s, s};  // a broadcast (no "0 + s": acc starts at +0 and is never −0, so the sums are the same bits)
      for (int b = 0; b < kNB; b++) acc[a][b] += xa * xb[b];
    }
  }
  for (int a = 0; a < kTA; a++)
    for (int b = 0; b < kNB; b++) {
      double* g = G + int64_t(a0 + a) * ld + b0 + 4 * b;
      store(g, load<vd>(g) + acc[a][b]);
    }
}

// Every entry of G gets, per chunk, the float64 sum of its row products in row order, added to G:
// the chunk boundaries (≈ 32 KiB of X as given) fix the rounding, so they never depend on how a
// chunk is then processed. A float chunk is widened to float64 once (exact) and the tiles read the
// doubles: one conversion per element instead of one per element and tile.
template <typename T>
LORA_INLINE void gramBody(const T* X, int64_t n, int ld, double* G) {
  const int64_t chunk = std::max<int64_t>(kTA, (int64_t(32) << 10) / (int64_t(std::max(ld, 1)) * int64_t(sizeof(T))));  // ≈ 32 KiB of X
  static thread_local std::vector<double> wide;
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    int rows = int(std::min<int64_t>(chunk, n - c0));
    const double* Xc;
    if constexpr (sizeof(T) == 4) {
      if (wide.size() < size_t(rows) * ld) wide.resize(size_t(rows) * ld);
      const T* src = X + c0 * ld;
      double* w = wide.data();
      for (int64_t i = 0; i < int64_t(rows) * ld; i += 4) store(w + i, load4(src + i));  // ld is a multiple of 16
      Xc = w;
    } else {
      Xc = X + c0 * ld;
    }
    // Column blocks outermost: a block's 16 columns of the chunk stay in L1 while every tile row meets them.
    for (int b0 = 0; b0 < ld; b0 += kTB)
      for (int a0 = 0; a0 < std::min(ld, b0 + kTB); a0 += kTA) gramTile<double>(Xc, rows, ld, a0, b0, G);
  }
}

// Thin product block: kTR rows × kNC vectors of columns of X·P, accumulated in C over k < w.
constexpr int kTR = 4, kNC = 2;

template <typename X, typename C>
LORA_INLINE void productBody(const X* x, int64_t n, int w, int ld, const C* P, int tp, C* Y) {
  typedef typename Vec<C>::v vt;
  constexpr int L = Vec<C>::n, TC = kNC * L;
  for (int64_t i0 = 0; i0 < n; i0 += kTR) {
    int rr = int(std::min<int64_t>(kTR, n - i0));
    for (int c0 = 0; c0 < tp; c0 += TC) {
      int nc = std::min(kNC, (tp - c0) / L);
      vt acc[kTR][kNC];
      for (int r = 0; r < kTR; r++)
        for (int j = 0; j < kNC; j++) acc[r][j] = vt{};
      if (rr == kTR && nc == kNC) {
        for (int k = 0; k < w; k++) {
          vt p[kNC];
          for (int j = 0; j < kNC; j++) p[j] = load<vt>(P + int64_t(k) * tp + c0 + j * L);
          for (int r = 0; r < kTR; r++) {
            vt xr = vt{} + C(x[(i0 + r) * ld + k]);
            for (int j = 0; j < kNC; j++) acc[r][j] += xr * p[j];
          }
        }
      } else {
        for (int k = 0; k < w; k++)
          for (int r = 0; r < rr; r++) {
            vt xr = vt{} + C(x[(i0 + r) * ld + k]);
            for (int j = 0; j < nc; j++) acc[r][j] += xr * load<vt>(P + int64_t(k) * tp + c0 + j * L);
          }
      }
      for (int r = 0; r < rr; r++)
        for (int j = 0; j < nc; j++) store(Y + (i0 + r) * tp + c0 + j * L, acc[r][j]);
    }
  }
}

// binary16 runs with F16C (vcvtph2ps/vcvtps2ph, 8 values an instruction) where the CPU has it:
// GCC does not vectorise _Float16 conversions, so these are written with intrinsics and chosen at
// run time; the portable loops below are the fallback.
#if defined(__x86_64__) && defined(__GNUC__)
#define LORA_F16C 1
__attribute__((target("avx2,f16c"))) void halfRunF16C(const uint8_t* s, int n, float* d) {
  int j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(d + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * j))));
  for (; j < n; j++) { uint16_t h; std::memcpy(&h, s + 2 * j, 2); d[j] = halfToFloat(h); }
}
// LORA_KERNELS=portable turns these paths off (the portable loops give the same bytes: both round
// to nearest even; test/e2e/kernels.test.ts compares the two routes' outputs).
bool haveF16C() {
  static const bool yes = (__builtin_cpu_init(), __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) &&
                          !(std::getenv("LORA_KERNELS") && std::strcmp(std::getenv("LORA_KERNELS"), "portable") == 0);
  return yes;
}
#endif

/** n binary16 values at s → d (float), exact. */
inline void halfRun(const uint8_t* s, int n, float* d) {
#ifdef LORA_F16C
  if (haveF16C()) return halfRunF16C(s, n, d);
#endif
  for (int j = 0; j < n; j++) { uint16_t h; std::memcpy(&h, s + 2 * j, 2); d[j] = halfToFloat(h); }
}

template <typename T>
LORA_INLINE T decodeAt(const uint8_t* raw, int dtype, int64_t i) {
  switch (dtype) {
    case F32: { float f; std::memcpy(&f, raw + 4 * i, 4); return T(f); }
    case F16: {
#ifdef LORA_HAVE_FLOAT16
      _Float16 h; std::memcpy(&h, raw + 2 * i, 2); return T(float(h));
#else
      uint16_t h; std::memcpy(&h, raw + 2 * i, 2); return T(halfToFloat(h));
#endif
    }
    case BF16: { uint16_t h; std::memcpy(&h, raw + 2 * i, 2); return T(bf16ToFloat(h)); }
    default: { double d; std::memcpy(&d, raw + 8 * i, 8); return T(d); }
  }
}

// The dtype switch is hoisted out of the loops so that each loop vectorises.
template <typename T, int D>
LORA_INLINE void decodeRowsD(const uint8_t* raw, int64_t rows, int cols, int ld, T* dst) {
  for (int64_t i = 0; i < rows; i++) {
    T* d = dst + i * ld;
    const uint8_t* s = raw + i * cols * dtypeSize(D);
    if constexpr (D == F16 && sizeof(T) == 4) halfRun(s, cols, reinterpret_cast<float*>(d));
    else for (int j = 0; j < cols; j++) d[j] = decodeAt<T>(s, D, j);
    for (int j = cols; j < ld; j++) d[j] = T(0);
  }
}

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define LORA_HAVE_SHUFFLEVECTOR 1
// dst[j·dld + i] = src[i·sld + j] for an 8×8 float block, in registers (unpack, shuffle, lane swap).
LORA_INLINE void transpose8(const float* src, int sld, float* dst, int dld) {
  vf r[8], u[8], v[8];
  for (int k = 0; k < 8; k++) r[k] = load<vf>(src + k * sld);
  for (int k = 0; k < 8; k += 2) {
    u[k] = __builtin_shufflevector(r[k], r[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    u[k + 1] = __builtin_shufflevector(r[k], r[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int k = 0; k < 8; k += 4) {
    v[k] = __builtin_shufflevector(u[k], u[k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    v[k + 1] = __builtin_shufflevector(u[k], u[k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    v[k + 2] = __builtin_shufflevector(u[k + 1], u[k + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    v[k + 3] = __builtin_shufflevector(u[k + 1], u[k + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int k = 0; k < 4; k++) {
    store(dst + k * dld, __builtin_shufflevector(v[k], v[k + 4], 0, 1, 2, 3, 8, 9, 10, 11));
    store(dst + (k + 4) * dld, __builtin_shufflevector(v[k], v[k + 4], 4, 5, 6, 7, 12, 13, 14, 15));
  }
}
#endif

#ifdef LORA_F16C
// float → binary16 with F16C (vcvtps2ph, round to nearest even: the bits floatToHalf and _Float16 give).
__attribute__((target("avx2,f16c"))) void encodeHalfRowsF16C(const float* Y, int64_t n, int t, int tp, uint8_t* dst) {
  for (int64_t i = 0; i < n; i++) {
    const float* y = Y + i * tp;
    uint8_t* d = dst + i * t * 2;
    int c = 0;
    for (; c + 8 <= t; c += 8) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * c), _mm256_cvtps_ph(_mm256_loadu_ps(y + c), _MM_FROUND_TO_NEAREST_INT));
    for (; c < t; c++) { uint16_t h = floatToHalf(y[c]); std::memcpy(d + 2 * c, &h, 2); }
  }
}

// Rounding to binary16 and back (exact round trip of the rounded value), stacking as roundAndStack.
__attribute__((target("avx2,f16c"))) void roundStackHalfF16C(float* Y, int64_t n, int t, int tp, const float* sign, bool roundedFirst, float* S, int ld2) {
  for (int64_t i = 0; i < n; i++) {
    float* y = Y + i * tp;
    float* s = S + i * ld2;
    int c = 0;
    for (; c + 8 <= t; c += 8) {
      __m256 v = _mm256_mul_ps(_mm256_loadu_ps(sign + c), _mm256_loadu_ps(y + c));
      __m256 r = _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
      _mm256_storeu_ps(s + c, roundedFirst ? r : v);
      _mm256_storeu_ps(s + t + c, _mm256_sub_ps(r, v));
      _mm256_storeu_ps(y + c, r);
    }
    for (; c < t; c++) {
      float v = sign[c] * y[c], r = halfToFloat(floatToHalf(v));
      s[c] = roundedFirst ? r : v;
      s[t + c] = r - v;
      y[c] = r;
    }
    for (c = 2 * t; c < ld2; c++) s[c] = 0.0f;
  }
}

#ifdef LORA_HAVE_SHUFFLEVECTOR
// Columns of Y (n×t, stride tp, a multiple of 8) → binary16 rows at dst + c·stride: 8×8 blocks
// transposed in registers, then one vcvtps2ph per destination row segment.
__attribute__((target("avx2,f16c"))) void encodeHalfColumnsF16C(const float* Y, int n, int t, int tp, uint8_t* dst, int64_t stride) {
  alignas(32) float blk[64];
  int j = 0;
  for (; j + 8 <= n; j += 8)
    for (int c0 = 0; c0 < t; c0 += 8) {
      transpose8(Y + int64_t(j) * tp + c0, tp, blk, 8);  // blk[k·8 + i] = Y[j + i][c0 + k]
      for (int k = 0; k < 8 && c0 + k < t; k++)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (int64_t(c0 + k) * stride + j) * 2), _mm256_cvtps_ph(_mm256_load_ps(blk + 8 * k), _MM_FROUND_TO_NEAREST_INT));
    }
  for (; j < n; j++)
    for (int c = 0; c < t; c++) { uint16_t h = floatToHalf(Y[int64_t(j) * tp + c]); std::memcpy(dst + (int64_t(c) * stride + j) * 2, &h, 2); }
}
#endif
#endif

template <typename T, int D>
LORA_INLINE void decodeColumnsD(const uint8_t* raw, int rows, int64_t cols, int64_t j0, int n, int ld, T* dst) {
  // Blocks of 64 columns: each row's segment decoded contiguously (vectorised), then written
  // transposed from that L1-resident block (contiguous stores of dst rows).
  constexpr int kBlock = 64;
  static thread_local std::vector<T> tmp;
  if (tmp.size() < size_t(rows) * kBlock) tmp.resize(size_t(rows) * kBlock);
  T* t = tmp.data();
  for (int b0 = 0; b0 < n; b0 += kBlock) {
    int nb = std::min(kBlock, n - b0);
    for (int i = 0; i < rows; i++) decodeRowsD<T, D>(raw + (int64_t(i) * cols + j0 + b0) * dtypeSize(D), 1, nb, kBlock, t + i * kBlock);
    int i8 = 0;
#ifdef LORA_HAVE_SHUFFLEVECTOR
    if constexpr (sizeof(T) == 4) {  // 8×8 register transposes for float
      if (nb % 8 == 0)
        for (; i8 + 8 <= rows; i8 += 8)
          for (int j = 0; j < nb; j += 8) transpose8(t + i8 * kBlock + j, kBlock, dst + int64_t(b0 + j) * ld + i8, ld);
    }
#endif
    for (int j = 0; j < nb; j++) {
      T* d = dst + int64_t(b0 + j) * ld;
      for (int i = i8; i < rows; i++) d[i] = t[i * kBlock + j];
      for (int i = rows; i < ld; i++) d[i] = T(0);
    }
  }
}

}  // namespace


int gramStride(int w) { return std::max(kTB, (w + kTB - 1) / kTB * kTB); }
template <> int productStride<float>(int t) { constexpr int L = Vec<float>::n; return std::max(L, (t + L - 1) / L * L); }
template <> int productStride<double>(int t) { constexpr int L = Vec<double>::n; return std::max(L, (t + L - 1) / L * L); }

LORA_CLONES static void gramF(const float* X, int64_t n, int ld, double* G) { gramBody<float>(X, n, ld, G); }
LORA_CLONES static void gramD(const double* X, int64_t n, int ld, double* G) { gramBody<double>(X, n, ld, G); }
template <> void gramAccumulate<float>(const float* X, int64_t n, int ld, double* G) { gramF(X, n, ld, G); }
template <> void gramAccumulate<double>(const double* X, int64_t n, int ld, double* G) { gramD(X, n, ld, G); }

LORA_CLONES static void productFF(const float* X, int64_t n, int w, int ld, const float* P, int tp, float* Y) { productBody<float, float>(X, n, w, ld, P, tp, Y); }
LORA_CLONES static void productFD(const float* X, int64_t n, int w, int ld, const double* P, int tp, double* Y) { productBody<float, double>(X, n, w, ld, P, tp, Y); }
LORA_CLONES static void productDD(const double* X, int64_t n, int w, int ld, const double* P, int tp, double* Y) { productBody<double, double>(X, n, w, ld, P, tp, Y); }
template <> void thinProduct<float, float>(const float* X, int64_t n, int w, int ld, const float* P, int tp, float* Y) { productFF(X, n, w, ld, P, tp, Y); }
template <> void thinProduct<float, double>(const float* X, int64_t n, int w, int ld, const double* P, int tp, double* Y) { productFD(X, n, w, ld, P, tp, Y); }
template <> void thinProduct<double, double>(const double* X, int64_t n, int w, int ld, const double* P, int tp, double* Y) { productDD(X, n, w, ld, P, tp, Y); }

namespace {
// Whether any of n values has an all-ones exponent (NaN or ±Inf): a branch-free OR over the bits
// that vectorises; the exact index is then found in the block that has one.
template <typename U, U kExp>
LORA_INLINE bool anyNonFinite(const uint8_t* raw, int64_t n) {
  U hit = 0;
  for (int64_t i = 0; i < n; i++) {
    U u;
    std::memcpy(&u, raw + sizeof(U) * i, sizeof(U));
    hit |= U((u & kExp) == kExp);
  }
  return hit != 0;
}
}  // namespace

LORA_CLONES static bool anyNonFinite32(const uint8_t* raw, int64_t n) { return anyNonFinite<uint32_t, 0x7f800000u>(raw, n); }
LORA_CLONES static bool anyNonFinite16(const uint8_t* raw, int64_t n) { return anyNonFinite<uint16_t, 0x7c00u>(raw, n); }
LORA_CLONES static bool anyNonFiniteB16(const uint8_t* raw, int64_t n) { return anyNonFinite<uint16_t, 0x7f80u>(raw, n); }
LORA_CLONES static bool anyNonFinite64(const uint8_t* raw, int64_t n) { return anyNonFinite<uint64_t, 0x7ff0000000000000ull>(raw, n); }

int64_t firstNonFinite(const uint8_t* raw, int dtype, int64_t n, double* value) {
  constexpr int64_t kBlock = 4096;
  const int size = dtypeSize(dtype);
  for (int64_t b0 = 0; b0 < n; b0 += kBlock) {
    const int64_t nb = std::min(kBlock, n - b0);
    const uint8_t* p = raw + b0 * size;
    bool any = dtype == F32 ? anyNonFinite32(p, nb) : dtype == F16 ? anyNonFinite16(p, nb) : dtype == BF16 ? anyNonFiniteB16(p, nb) : anyNonFinite64(p, nb);
    if (!any) continue;
    for (int64_t i = 0; i < nb; i++) {
      double v = decodeAt<double>(p, dtype, i);
      if (!std::isfinite(v)) {
        *value = v;
        return b0 + i;
      }
    }
  }
  return -1;
}

// One multi-versioned entry per (element type, dtype): the dtype switch stays outside the loops.
// LORA_EACH lists the pairs; LORA_BY_DTYPE picks the entry for a run-time dtype.
#define LORA_EACH(M) \
  M(float, F32, F32f) M(float, F16, F16f) M(float, BF16, BF16f) M(float, F64, F64f) \
  M(double, F32, F32d) M(double, F16, F16d) M(double, BF16, BF16d) M(double, F64, F64d)
#define LORA_BY_DTYPE(NAME, S, ...)                  \
  switch (dtype) {                                   \
    case F32: NAME##F32##S(__VA_ARGS__); break;       \
    case F16: NAME##F16##S(__VA_ARGS__); break;       \
    case BF16: NAME##BF16##S(__VA_ARGS__); break;     \
    default: NAME##F64##S(__VA_ARGS__);               \
  }

#define LORA_DECODE(T, D, SUFFIX)                                                                                 \
  LORA_CLONES static void rows##SUFFIX(const uint8_t* raw, int64_t rows, int cols, int ld, T* dst) {               \
    decodeRowsD<T, D>(raw, rows, cols, ld, dst);                                                                  \
  }                                                                                                               \
  LORA_CLONES static void cols##SUFFIX(const uint8_t* raw, int rows, int64_t cols, int64_t j0, int n, int ld, T* dst) { \
    decodeColumnsD<T, D>(raw, rows, cols, j0, n, ld, dst);                                                        \
  }
LORA_EACH(LORA_DECODE)
#undef LORA_DECODE

template <> void decodeRows<float>(const uint8_t* raw, int dtype, int64_t rows, int cols, int ld, float* dst) { LORA_BY_DTYPE(rows, f, raw, rows, cols, ld, dst) }
template <> void decodeRows<double>(const uint8_t* raw, int dtype, int64_t rows, int cols, int ld, double* dst) { LORA_BY_DTYPE(rows, d, raw, rows, cols, ld, dst) }
template <> void decodeColumns<float>(const uint8_t* raw, int dtype, int rows, int64_t cols, int64_t j0, int n, int ld, float* dst) { LORA_BY_DTYPE(cols, f, raw, rows, cols, j0, n, ld, dst) }
template <> void decodeColumns<double>(const uint8_t* raw, int dtype, int rows, int64_t cols, int64_t j0, int n, int ld, double* dst) { LORA_BY_DTYPE(cols, d, raw, rows, cols, j0, n, ld, dst) }

namespace {

// x rounded to the output dtype (ties to even), in C. The float cases vectorise: _Float16
// (vcvtps2ph in the v3/v4 builds) and bfloat16 as integer ops on the bits.
template <typename C>
LORA_INLINE C roundOne(int dtype, C x);

template <>
LORA_INLINE float roundOne<float>(int dtype, float x) {
  if (dtype == F16) {
#ifdef LORA_HAVE_FLOAT16
    return float(_Float16(x));
#else
    return halfToFloat(floatToHalf(x));
#endif
  }
  if (dtype == BF16) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;  // finite inputs only (products of finite factors)
    float y;
    std::memcpy(&y, &u, 4);
    return y;
  }
  return x;
}

template <>
LORA_INLINE double roundOne<double>(int dtype, double x) {
  switch (dtype) {
    case F32: return double(float(x));
    case F16: return roundToFormat(x, 11, -14, 15);
    case BF16: return roundToFormat(x, 8, -126, 127);
    default: return x;
  }
}

template <typename C, int D>
LORA_INLINE void roundStackBody(C* Y, int64_t n, int t, int tp, const C* sign, bool roundedFirst, C* S, int ld2) {
  for (int64_t i = 0; i < n; i++) {
    C* y = Y + i * tp;
    C* s = S + i * ld2;
    for (int c = 0; c < t; c++) {
      C v = sign[c] * y[c], r = roundOne<C>(D, v);
      s[c] = roundedFirst ? r : v;
      s[t + c] = r - v;
      y[c] = r;
    }
    for (int c = 2 * t; c < ld2; c++) s[c] = C(0);
  }
}

template <int D, typename C>
LORA_INLINE void encodeOne(C v, uint8_t* d) {
  if (D == F32) { float f = float(v); std::memcpy(d, &f, 4); }
  else if (D == F64) { double x = double(v); std::memcpy(d, &x, 8); }
  else if (D == BF16) { float f = float(v); uint32_t u; std::memcpy(&u, &f, 4); uint16_t h = uint16_t(u >> 16); std::memcpy(d, &h, 2); }
  else {
#ifdef LORA_HAVE_FLOAT16
    _Float16 h = _Float16(float(v)); std::memcpy(d, &h, 2);
#else
    uint16_t h = floatToHalf(float(v)); std::memcpy(d, &h, 2);
#endif
  }
}

// Rows of Y (n×t of stride tp) → dst rows (n×t, contiguous).
template <typename C, int D>
LORA_INLINE void encodeRowsBody(const C* Y, int64_t n, int t, int tp, uint8_t* dst) {
  for (int64_t i = 0; i < n; i++)
    for (int c = 0; c < t; c++) encodeOne<D>(Y[i * tp + c], dst + (i * t + c) * dtypeSize(D));
}

// Columns of Y (n×t of stride tp) → rows of dst (t×n, row stride `stride` elements).
template <typename C, int D>
LORA_INLINE void encodeColumnsBody(const C* Y, int n, int t, int tp, uint8_t* dst, int64_t stride) {
  for (int c = 0; c < t; c++) {
    uint8_t* d = dst + int64_t(c) * stride * dtypeSize(D);
    for (int j = 0; j < n; j++) encodeOne<D>(Y[int64_t(j) * tp + c], d + int64_t(j) * dtypeSize(D));
  }
}

}  // namespace

#define LORA_OUT(C, D, SUFFIX)                                                                                    \
  LORA_CLONES static void stack##SUFFIX(C* Y, int64_t n, int t, int tp, const C* sg, bool f, C* S, int ld2) {       \
    roundStackBody<C, D>(Y, n, t, tp, sg, f, S, ld2);                                                               \
  }                                                                                                                 \
  LORA_CLONES static void encR##SUFFIX(const C* Y, int64_t n, int t, int tp, uint8_t* d) { encodeRowsBody<C, D>(Y, n, t, tp, d); } \
  LORA_CLONES static void encC##SUFFIX(const C* Y, int n, int t, int tp, uint8_t* d, int64_t st) {                 \
    encodeColumnsBody<C, D>(Y, n, t, tp, d, st);                                                                    \
  }
LORA_EACH(LORA_OUT)
#undef LORA_OUT


template <> void roundAndStack<float>(float* Y, int64_t n, int t, int tp, int dtype, const float* sign, bool roundedFirst, float* S, int ld2) {
#ifdef LORA_F16C
  if (dtype == F16 && haveF16C()) return roundStackHalfF16C(Y, n, t, tp, sign, roundedFirst, S, ld2);
#endif
  LORA_BY_DTYPE(stack, f, Y, n, t, tp, sign, roundedFirst, S, ld2)
}
template <> void roundAndStack<double>(double* Y, int64_t n, int t, int tp, int dtype, const double* sign, bool roundedFirst, double* S, int ld2) { LORA_BY_DTYPE(stack, d, Y, n, t, tp, sign, roundedFirst, S, ld2) }
template <> void encodeRows<float>(const float* Y, int64_t n, int t, int tp, int dtype, uint8_t* dst) {
#ifdef LORA_F16C
  if (dtype == F16 && haveF16C()) return encodeHalfRowsF16C(Y, n, t, tp, dst);
#endif
  LORA_BY_DTYPE(encR, f, Y, n, t, tp, dst)
}
template <> void encodeRows<double>(const double* Y, int64_t n, int t, int tp, int dtype, uint8_t* dst) { LORA_BY_DTYPE(encR, d, Y, n, t, tp, dst) }
template <> void encodeColumns<float>(const float* Y, int n, int t, int tp, int dtype, uint8_t* dst, int64_t stride) {
#if defined(LORA_F16C) && defined(LORA_HAVE_SHUFFLEVECTOR)
  if (dtype == F16 && haveF16C()) return encodeHalfColumnsF16C(Y, n, t, tp, dst, stride);
#endif
  LORA_BY_DTYPE(encC, f, Y, n, t, tp, dst, stride)
}
template <> void encodeColumns<double>(const double* Y, int n, int t, int tp, int dtype, uint8_t* dst, int64_t stride) { LORA_BY_DTYPE(encC, d, Y, n, t, tp, dst, stride) }
#undef LORA_BY_DTYPE
#undef LORA_EACH

}  // namespace kernels
}  // namespace lora
