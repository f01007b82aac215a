// The operations of both addons, declared once: Ops<Cpu> is defined by cpu/ (BLAS/LAPACK, own
// fused kernels), Ops<Cuda> by cuda/ (own kernels and cuBLAS when present, the r×r algebra of the
// fused operations reusing the cpu code). common/napi_ops.h binds either to N-API with the same
// argument checks, so both addons export the same functions (mirrored by linalg/native/binding.ts).
// No N-API or CUDA types here: the harness and the CPU emulation of CUDA include it too.
//
// Host buffers, row-major; shapes are validated by linalg/native before they get here.
#pragma once
#include <cstdint>

#include "status.h"

namespace lora {

/** The two backends; each names its addon, as errors name the worker. */
struct Cpu {
  static constexpr const char* label = "lora_cpu";
};
struct Cuda {
  static constexpr const char* label = "lora_cuda";
};

/** One module's raw factors and what truncateFactors / factorSpectrum should make of them. */
struct TruncateArgs {
  const uint8_t* rawB = nullptr;  // out×r, row-major, little-endian of dtypeB (0 F32, 1 F16, 2 BF16, 3 F64)
  int dtypeB = 0;
  const uint8_t* rawA = nullptr;  // r×in
  int dtypeA = 0;
  int out = 0, r = 0, in = 0;
  int t = 0;                       // 1 ≤ t ≤ r
  double scale = 1, scaleOut = 1;  // s of the input, s' of the output: s'·B'·A' = U_t Σ_t V_tᵀ of s·B·A
  bool balanced = true;            // √Σ into each factor, else Σ into B (all-in-up)
  int outDtype = 0;
  bool productsInDouble = false;   // force float64 products even for 16-bit outputs (tests)
  const double* grams = nullptr;   // optional: G_B then G_A (r×r each, symmetric) of these bytes: no Gram pass
};

struct TruncateOutcome {
  enum Kind { Done = 0, Fallback = 1, NonFinite = 2 };
  int kind = Done;
  int badFactor = -1;  // NonFinite: 0 = A, 1 = B (A is checked first)
  int64_t badIndex = -1;
  double badValue = 0;
  double norm2 = 0;   // ‖sBA‖²_F
  double err2 = 0;    // Σ of the σ² not written (the exact truncation's squared error)
  double resid2 = 0;  // ‖s'(B''A'' − B'A')‖²: what rounding to outDtype adds (svd.ts truncationError)
  int productBits = 64;
};

/** One term coef·B·A of `lora apply`'s merge: B out×r, A r×in, float32 row-major. */
struct MergeTerm {
  const float* B = nullptr;
  const float* A = nullptr;
  int r = 0;
  float coef = 1;
};

/** One weight of `lora apply` (docs/algorithms.md "apply"): W' = encode(decode(W) + Σ coef·B·A). */
struct MergeArgs {
  uint8_t* data = nullptr;  // the stored weight's bytes (dtype 0 F32, 1 F16, 2 BF16), overwritten by W'
  int dtype = 0;
  int out = 0, in = 0;      // ΔW is out×in; W is stored out×in, or in×out when transposed (GPT-2 Conv1D)
  bool transposed = false;
  const MergeTerm* terms = nullptr;
  int nTerms = 0;
};

struct MergeOutcome {
  enum Kind { Done = 0, BaseNonFinite = 1, Overflow = 2 };
  int kind = Done;
  int64_t index = -1;  // stored element index of the first bad value
  double value = 0;    // the base's value (BaseNonFinite)
};

/**
 * Randomized range finder with adaptive power iterations (lora extract; linalg/truncated-svd.ts
 * sketch(), the same steps and stopping rule): M is rows×cols float32, Ω cols×l float32.
 */
struct SketchArgs {
  const float* m = nullptr;
  const float* omega = nullptr;
  int rows = 0, cols = 0, l = 0, t = 0;
  double allowed = 0, floor = 0, norm2 = 0;
  int maxIters = 12;
};

struct SketchOut {
  double* Q = nullptr;    // rows×l
  double* Uz = nullptr;   // cols×l  (Z = MᵀQ = Uz Σ Vzᵀ)
  double* VzT = nullptr;  // l×l
  double* sigma = nullptr;  // l
  int iters = 0;
  double excess2 = 0;
  bool floorLimited = false;
  int64_t firstNonFinite = -1;  // M holds NaN/±Inf at this index: nothing else is written
};

template <class Device>
struct Ops {
  /** "lora_cpu" / "lora_cuda": names the worker in errors. */
  static const char* label() { return Device::label; }

  /** C (m×n) = alpha · op(A) · op(B); op(A) is m×kk, op(B) is kk×n. */
  template <typename T>
  static Status gemm(const T* a, int aRows, int aCols, const T* b, int bRows, int bCols, bool transA, bool transB,
                     T alpha, T* c);
  /** Thin QR: A (m×n) = Q (m×k) R (k×n), k = min(m, n), R's diagonal ≥ 0. */
  template <typename T>
  static Status qr(const T* a, int m, int n, T* q, T* r);
  /** Thin SVD: A (m×n) = U (m×k) diag(S) Vt (k×n), k = min(m, n), S descending. */
  template <typename T>
  static Status svd(const T* a, int m, int n, T* u, T* s, T* vt);
  /**
   * Symmetric eigen-decomposition (lower triangle read): values descending, column j of V ↔ values[j].
   * vectors == nullptr: the values alone (the cpu backend then skips the eigenvectors' work; the
   * values may differ from those computed with vectors in the last bits).
   */
  template <typename T>
  static Status eigSym(const T* a, int n, T* values, T* vectors);

  /**
   * Weighted Lloyd iterations from `init` (k×d), sklearn semantics as linalg/js/kmeans.ts: assign,
   * move every centroid to the weighted mean of its points (an empty cluster keeps its centroid),
   * stop once Σ‖shift‖² ≤ tol; a final assignment gives the labels and inertia. weights may be null.
   */
  static Status kmeansLloyd(const double* x, int n, int d, const double* init, int k, const double* weights,
                            int maxIter, double tol, double* centroids, int32_t* labels, KmeansOut* out);

  /**
   * One factor's raw bytes (dtype codes as TruncateArgs) decoded into `data` (float64, exact),
   * *firstNonFinite = index of the first NaN/±Inf or -1, and only when all are finite the float64
   * Gram: X·Xᵀ (rows×rows) when gramRows, else Xᵀ·X (cols×cols).
   */
  static Status factorStats(const uint8_t* raw, int dtype, int rows, int cols, bool gramRows, double* data,
                            double* gram, int64_t* firstNonFinite);

  /**
   * One module's optimal rank-t truncation (docs/algorithms.md §2.2, cpu/truncate.cc): outB out×t and
   * outA t×in of outDtype, S the r singular values of sBA. Fallback (the Gram route's guards
   * refused) writes nothing; NonFinite names the value.
   */
  static Status truncateFactors(const TruncateArgs& a, uint8_t* outB, uint8_t* outA, double* S, TruncateOutcome* o);

  /** σ of sBA alone (r, descending), by the same Gram route; gramsOut (2r², may be null) gets G_B then G_A. */
  static Status factorSpectrum(const TruncateArgs& a, double* S, double* gramsOut, TruncateOutcome* o);

  /**
   * Randomized SVD (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1; docs/algorithms.md §2.4) of M (m×n)
   * with the given Gaussian test matrix Ω (n×l) and q power iterations, each half-step
   * re-orthonormalised by QR: Q = qr(MΩ); q × {Z = qr(MᵀQ), Q = qr(MZ)}; SVD of QᵀM (l×n).
   * U (m×t), S (t), Vt (t×n): the leading t triplets, signs not normalised. Needs l ≤ min(m, n).
   */
  template <typename T>
  static Status randomizedSvd(const T* m, int rows, int cols, const T* omega, int l, int q, int t, T* u, T* s,
                              T* vt);

  /**
   * `lora apply`'s fused kernel (common/streamed.h): decode a block of rows of W to float32, add
   * coef·B·A for each term (the product by gemm<float> with alpha = coef, then one float32 add per
   * term, the order linalg/js merges in), check finiteness, encode back in place (ties to even).
   * A non-finite base value or sum is reported in `o`, the bytes then partly rewritten.
   */
  static Status mergeWeight(const MergeArgs& a, MergeOutcome* o);

  /**
   * ΔW = tuned − base for n raw values of one dtype (0 F32, 1 F16, 2 BF16) into float32 `delta`,
   * and *norm2 += Σ ΔW² in float64 (element by element, in order); *firstNonFinite = the first index where either input or the difference
   * is NaN/±Inf (-1 if none), *which = 0 tuned, 1 base, 2 the difference.
   */
  static Status weightDelta(const uint8_t* tuned, const uint8_t* base, int dtype, int64_t n, float* delta,
                            double* norm2, int64_t* firstNonFinite, int* which);

  /** The adaptive range finder of SketchArgs (common/streamed.h). */
  static Status sketch(const SketchArgs& a, SketchOut* o);
  /** sketch's steps; sketch then gives the freed scratch back to the system. */
  static Status sketchSteps(const SketchArgs& a, SketchOut* o);
};

/**
 * The explicit instantiations of Ops<D>'s typed dense operations for T (float, double), in the file
 * of each backend that defines them (cpu/ops.cc, cuda/kernels.cu): one list for both.
 */
#define LORA_INSTANTIATE_DENSE_OPS(D, T)                                                      \
  template Status Ops<D>::gemm<T>(const T*, int, int, const T*, int, int, bool, bool, T, T*); \
  template Status Ops<D>::qr<T>(const T*, int, int, T*, T*);                                  \
  template Status Ops<D>::svd<T>(const T*, int, int, T*, T*, T*);                             \
  template Status Ops<D>::eigSym<T>(const T*, int, T*, T*);

using CpuOps = Ops<Cpu>;
using CudaOps = Ops<Cuda>;

}  // namespace lora
