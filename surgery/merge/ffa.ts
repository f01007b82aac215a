// ffa (FFA-LoRA, Sun et al. ICLR 2024; docs/algorithms.md §5.7): clients train B only, on an A frozen
// at a shared random initialisation, so the server's B̄ = Σ wₖ·sₖ·Bₖ gives B̄·A = Σ wₖ·sₖ·Bₖ·A
// exactly. The precondition is checked: within a module every input has the same rank and
// max|Aₖ − A₁| ≤ tol·max|A₁|. When the A's differ this is not FFA-LoRA, and the merge refuses
// unless --project: then A* is an orthonormal basis (rank ≤ K) of the weighted row space of
// [√|w₁|A₁; …; √|w_N|A_N] (its top right singular vectors) and Bₖ' = sₖ·Bₖ·Aₖ·A*ᵀ, the
// least-squares fit of each ΔWₖ restricted to that row space; the error report says what it cost.
import type { LinalgBackend, Mat } from "../../linalg/types.js";
import type { MergedFactors, MergeTerm, TermShape } from "./types.js";

/** max|Aₖ − A₁| / max|A₁| over the terms; Infinity when the ranks differ. */
export function sharedADeviation(terms: MergeTerm[]): number {
  const a0 = terms[0]!.A;
  let scale = 0;
  for (const v of a0.data) scale = Math.max(scale, Math.abs(v));
  let dev = 0;
  for (const t of terms.slice(1)) {
    if (t.A.rows !== a0.rows || t.A.cols !== a0.cols) return Infinity;
    for (let i = 0; i < a0.data.length; i++) dev = Math.max(dev, Math.abs(t.A.data[i]! - a0.data[i]!));
  }
  return scale > 0 ? dev / scale : dev;
}

/** Exact FFA aggregation: A = A₁, B = Σ wₖ·sₖ·Bₖ (scale 1). */
export function mergeFfaShared(terms: MergeTerm[]): MergedFactors {
  const A0 = terms[0]!.A;
  const out = terms[0]!.B.rows,
    r = A0.rows;
  const B = new Float64Array(out * r);
  for (const t of terms) {
    const f = t.weight * t.scale;
    for (let i = 0; i < B.length; i++) B[i] += f * t.B.data[i]!;
  }
  return { B: { rows: out, cols: r, data: B }, A: { rows: r, cols: A0.cols, data: Float64Array.from(A0.data) } };
}

export function projectedRank(k: number, terms: TermShape[]): number {
  const R = terms.reduce((s, t) => s + t.A.rows, 0);
  return Math.max(1, Math.min(k, R, terms[0]!.A.cols));
}

/** --project: shared orthonormal A* from the weighted stack of A's, each ΔWₖ projected onto it. */
export async function mergeFfaProjected(be: LinalgBackend, terms: MergeTerm[], k: number): Promise<MergedFactors> {
  const inn = terms[0]!.A.cols,
    out = terms[0]!.B.rows;
  const R = terms.reduce((s, t) => s + t.A.rows, 0);
  const stack = new Float64Array(R * inn);
  let off = 0;
  for (const t of terms) {
    const g = Math.sqrt(Math.abs(t.weight));
    for (let j = 0; j < t.A.data.length; j++) stack[off * inn + j] = g * t.A.data[j]!;
    off += t.A.rows;
  }
  const s = await be.svd({ rows: R, cols: inn, data: stack });
  const r = projectedRank(k, terms);
  const aStar: Mat<Float64Array> = { rows: r, cols: inn, data: Float64Array.from((s.Vt.data as Float64Array).subarray(0, r * inn)) };
  const B = new Float64Array(out * r);
  for (const t of terms) {
    const proj = await be.gemm(t.A, aStar, { transB: true }); // rₖ×r = Aₖ·A*ᵀ
    const bp = await be.gemm(t.B, proj, { alpha: t.weight * t.scale }); // out×r
    for (let i = 0; i < B.length; i++) B[i] += bp.data[i]!;
  }
  return { B: { rows: out, cols: r, data: B }, A: aStar };
}
