// svd: the Eckart–Young optimal rank-K approximation of Σ wᵢ·sᵢ·Bᵢ·Aᵢ (PEFT's
// combination_type="svd", FlexLoRA), computed from the stacked factors without the dense ΔW
// (docs/algorithms.md §2.1, §2.3: QR of B_cat and A_catᵀ, SVD of the R×R core), switching to the dense
// route only past the crossover R ≥ min(out, in)/3 where the core is no longer small. Written
// back balanced (B = U√Σ, A = √ΣVᵀ, scale 1; docs/algorithms.md §1.3).
import { lowRankSvd, splitFactors, type LowRankSvd } from "../../linalg/lowrank.js";
import { flipSigns } from "../../linalg/signs.js";
import type { LinalgBackend, Mat } from "../../linalg/types.js";
import { catRank, mergeCat } from "./cat.js";
import type { MergedFactors, MergeTerm, TermShape } from "./types.js";

/** Output rank: K, but never more than the rank the sum can have. */
export function svdRank(k: number, terms: TermShape[]): number {
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols;
  return Math.max(1, Math.min(k, catRank(terms), out, inn));
}

/** Past this the factor route's QRs cost as much as forming ΔW (docs/algorithms.md §2.1). */
export function useDenseRoute(R: number, out: number, inn: number): boolean {
  return 3 * R >= Math.min(out, inn);
}

/** Thin SVD of the exact weighted sum (factor route or dense route), signs normalised. */
export async function svdOfSum(be: LinalgBackend, terms: MergeTerm[]): Promise<LowRankSvd> {
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols;
  const R = catRank(terms);
  if (!useDenseRoute(R, out, inn)) {
    return lowRankSvd(
      be,
      terms.map((t) => ({ B: t.B, A: t.A, scale: t.weight * t.scale })),
    );
  }
  const c = mergeCat(terms);
  const dense = await be.gemm(c.B, c.A);
  const s = await be.svd(dense);
  const res = { U: s.U as Mat<Float64Array>, S: Float64Array.from(s.S, (x) => Math.max(x, 0)), Vt: s.Vt as Mat<Float64Array> };
  flipSigns(res.U, res.Vt);
  return res;
}

/** Balanced factors of the best rank-t approximation (scale 1). */
export function truncatedFactors(svd: LowRankSvd, t: number): MergedFactors {
  const { B, A } = splitFactors(svd, Math.min(t, svd.S.length), 1, "balanced");
  return { B, A };
}

export async function mergeSvd(be: LinalgBackend, terms: MergeTerm[], k: number): Promise<MergedFactors> {
  const t = svdRank(k, terms);
  const svd = await svdOfSum(be, terms);
  let kept = 0,
    total = 0;
  for (let i = 0; i < svd.S.length; i++) {
    total += svd.S[i]! ** 2;
    if (i < t) kept += svd.S[i]! ** 2;
  }
  return { ...truncatedFactors(svd, t), details: { retained_energy: total > 0 ? kept / total : 1 } };
}
