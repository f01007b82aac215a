// The CPU operations on raw row-major buffers: no N-API in here, so they can be unit-tested and
// reused. Every function returns a Status; on failure nothing useful is in the outputs.
// Shapes are validated by linalg/native.ts before they get here; these functions trust them.
#pragma once
#include <cstdint>

#include "../common/status.h"

namespace lora {

/** C (m×n) = alpha · op(A) · op(B), row-major; op(A) is m×kk, op(B) is kk×n. */
template <typename T>
Status gemm(const T* a, int aRows, int aCols, const T* b, int bRows, int bCols, bool transA, bool transB, T alpha,
            T* c);

/** Thin QR: A (m×n) = Q (m×k) R (k×n), k = min(m, n), R's diagonal ≥ 0 (as linalg/js). */
template <typename T>
Status qr(const T* a, int m, int n, T* q, T* r);

/** Thin SVD: A (m×n) = U (m×k) diag(S) Vt (k×n), k = min(m, n), S descending. */
template <typename T>
Status svd(const T* a, int m, int n, T* u, T* s, T* vt);

/** Symmetric eigen-decomposition (lower triangle read): values descending, column j of V ↔ values[j]. */
template <typename T>
Status eigSym(const T* a, int n, T* values, T* vectors);

/**
 * Weighted Lloyd iterations from `init` (k×d), sklearn semantics as in linalg/js/kmeans.ts: each
 * iteration assigns then moves every centroid to the weighted mean of its points (an empty
 * cluster keeps its centroid) and stops once Σ‖shift‖² ≤ tol; a final assignment gives the labels
 * and inertia of the returned centroids. weights may be null (all 1).
 */
Status kmeansLloyd(const double* x, int n, int d, const double* init, int k, const double* weights, int maxIter,
                   double tol, double* centroids, int32_t* labels, KmeansOut* out);

/**
 * One factor's statistics in one pass (linalg/types.ts `factorStats`): the raw little-endian bytes
 * (dtype 0 = F32, 1 = F16, 2 = BF16, 3 = F64) of a row-major rows×cols tensor are decoded into
 * `data` (float64, exact), every value is checked finite (*firstNonFinite = index of the first
 * NaN/±Inf, or -1), and — only when all are finite — the float64 Gram matrix is written to `gram`:
 * X·Xᵀ (rows×rows) when gramRows, else Xᵀ·X (cols×cols), by one BLAS dgemm.
 */
Status factorStats(const uint8_t* raw, int dtype, int rows, int cols, bool gramRows, double* data, double* gram,
                   int64_t* firstNonFinite);

}  // namespace lora
