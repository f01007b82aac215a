// Hand-written CPU kernels for the fused truncation (truncate.cc): the shapes it needs (tall n×w
// matrices with w ≤ a few hundred, products with an r×t matrix) are ones where a BLAS call per
// module costs more in thread wake-ups than in arithmetic, and the call must run on the calling
// thread alone so that several modules can be computed side by side. Every function here is
// single-threaded and compiled three times (x86-64-v4, x86-64-v3, baseline; chosen at load time).
//
// Layout: row-major with a row stride `ld`; padded columns are zero.
#pragma once
#include <cstdint>

namespace lora {
namespace kernels {

/** Row stride a Gram operand must use: w rounded up to the Gram kernel's tile width (16). */
int gramStride(int w);

/**
 * G (ld×ld, row-major, float64) += upper tiles of XᵀX for X n×ld (padded columns zero), every
 * product and sum in float64 (float32 X is widened exactly). Only entries (a, b) in tiles meeting
 * the upper triangle are formed: callers read G[a][b] for a ≤ b and mirror.
 */
template <typename T>
void gramAccumulate(const T* X, int64_t n, int ld, double* G);

/** Column count a thinProduct result must be padded to (a multiple of the vector width). */
template <typename T>
int productStride(int t);

/**
 * Y (n×tp, row-major) = X (n×w, stride ld) · P (w×tp, row-major), products and sums in C;
 * tp = productStride<C>(t). Instantiated for (X, C) = (float, float), (float, double), (double, double).
 */
template <typename X, typename C>
void thinProduct(const X* x, int64_t n, int w, int ld, const C* P, int tp, C* Y);

/** Element types of safetensors factors: 0 F32, 1 F16, 2 BF16, 3 F64 (as linalg/native.ts codes them). */
enum DType { F32 = 0, F16 = 1, BF16 = 2, F64 = 3 };
constexpr int dtypeSize(int dtype) { return dtype == F32 ? 4 : dtype == F64 ? 8 : 2; }

/**
 * Index of the first NaN/±Inf among n raw little-endian values (-1 if none), and in *value that
 * value decoded (to tell NaN from ±Inf).
 */
int64_t firstNonFinite(const uint8_t* raw, int dtype, int64_t n, double* value);

/** dst (rows×ld) = decoded raw (rows×cols, row-major); columns cols..ld-1 set to 0. Exact. */
template <typename T>
void decodeRows(const uint8_t* raw, int dtype, int64_t rows, int cols, int ld, T* dst);

/**
 * dst (n×ld) = transpose of columns [j0, j0 + n) of decoded raw (rows×cols, row-major); columns
 * rows..ld-1 of dst set to 0.
 */
template <typename T>
void decodeColumns(const uint8_t* raw, int dtype, int rows, int64_t cols, int64_t j0, int n, int ld, T* dst);

/**
 * Y (n×t, row stride tp) ← round(sign[c]·Y) in place, to `dtype` (ties to even), and row by row
 * into S (n×ld2, ld2 ≥ 2t): columns [0, t) the signed values before rounding (or after, when
 * roundedFirst), columns [t, 2t) rounded − unrounded, columns [2t, ld2) zero.
 */
template <typename C>
void roundAndStack(C* Y, int64_t n, int t, int tp, int dtype, const C* sign, bool roundedFirst, C* S, int ld2);

/** Little-endian bytes of `dtype` (n×t, row-major) for Y (n×t, row stride tp), each value already representable. */
template <typename C>
void encodeRows(const C* Y, int64_t n, int t, int tp, int dtype, uint8_t* dst);

/** Column c of Y (n×t, row stride tp) as `dtype` bytes at dst + c·stride elements (n values each). */
template <typename C>
void encodeColumns(const C* Y, int n, int t, int tp, int dtype, uint8_t* dst, int64_t stride);

}  // namespace kernels
}  // namespace lora
