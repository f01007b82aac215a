// One module's optimal rank-t truncation (and its spectrum alone), fused into a single call on the calling thread
// (linalg/types.ts `truncateFactors`; the same maths as commands/truncate/svd.ts's Gram route,
// docs/algorithms.md §2.2, §3.1): raw factor bytes in, output factor bytes out.
#pragma once
#include <cstdint>

#include "../common/status.h"

namespace lora {

struct TruncateArgs {
  const uint8_t* rawB = nullptr;  // out×r, row-major, little-endian of dtypeB (kernels::DType codes)
  int dtypeB = 0;
  const uint8_t* rawA = nullptr;  // r×in
  int dtypeA = 0;
  int out = 0, r = 0, in = 0;
  int t = 0;                       // 1 ≤ t ≤ r
  double scale = 1, scaleOut = 1;  // s of the input, s' of the output: s'·B'·A' = U_t Σ_t V_tᵀ of s·B·A
  bool balanced = true;            // √Σ into each factor, else Σ into B (all-in-up)
  int outDtype = 0;
  bool productsInDouble = false;   // force float64 products even for 16-bit outputs (tests)
  const double* grams = nullptr;   // optional: G_B then G_A (r×r each, symmetric) from factorSpectrum of these bytes
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

/**
 * outB: out×t values of outDtype, outA: t×in, S: r singular values of sBA (descending). On
 * Fallback (the Gram route's guards refused: cancelling or ill-conditioned factors) nothing is
 * written and the caller runs its general route; on NonFinite the offending value is named.
 */
Status truncateFactors(const TruncateArgs& a, uint8_t* outB, uint8_t* outA, double* S, TruncateOutcome* o);

/**
 * The singular values of sBA alone (r, descending; `t`, `scaleOut`, `outDtype` unused): the Grams
 * and one r×r eigenproblem, σ² = eig(s²R G_A Rᵀ) with RᵀR = G_B (docs/algorithms.md §2.2,
 * float64). σ below the route's resolution (2e-8·s‖B‖_F‖A‖_F) are 0. Fallback and NonFinite
 * as truncateFactors; norm2 is set. gramsOut (2r² values, may be null) receives G_B then G_A, for a
 * later truncateFactors of the same bytes (TruncateArgs::grams) to skip its first pass.
 */
Status factorSpectrum(const TruncateArgs& a, double* S, double* gramsOut, TruncateOutcome* o);

}  // namespace lora
