// svd: the Eckart–Young optimal rank-K approximation of Σ wᵢ·sᵢ·Bᵢ·Aᵢ (PEFT's
// combination_type="svd", FlexLoRA), computed from the stacked factors without the dense ΔW: into
// F32/F16/BF16 by truncate's Gram route (the backend's truncateFactors, docs/algorithms.md §5.2),
// else (F64, or sums the Gram route refuses) by QR of B_cat and A_catᵀ and the SVD of the R×R core
// (§2.1, §2.3); the dense route only past the crossover R ≥ min(out, in)/3 where the core is no
// longer small. Written back balanced (B = U√Σ, A = √ΣVᵀ, scale 1; docs/algorithms.md §1.3).
import { decodeToFloat64, type DType } from "../../formats/safetensors/index.js";
import { concatTerms, lowRankSvd, splitFactors, type LowRankSvd } from "../../linalg/lowrank.js";
import { flipSigns } from "../../linalg/signs.js";
import { retainedEnergy } from "../../linalg/truncate.js";
import type { FactorDType, LinalgBackend, Mat } from "../../linalg/types.js";
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

/** Output dtypes the Gram route writes directly (F64 outputs take the QR route). */
const GRAM_OUT: readonly DType[] = ["F32", "F16", "BF16"];

/**
 * The Gram route (docs/algorithms.md §2.2, §3.1): the stacked factors (§2.3) handed to the
 * backend's truncateFactors as one LoRA of rank R, which returns the balanced rank-t factors already
 * in `dtype`, the σ, and the error of those bytes (the σ tail plus their rounding). null where its
 * guards refuse (terms that cancel, ill-conditioned stacks): the QR route then runs.
 */
async function gramRoute(be: LinalgBackend, terms: MergeTerm[], t: number, dtype: DType): Promise<MergedFactors | null> {
  const { B, A } = concatTerms(terms.map((x) => ({ B: x.B, A: x.A, scale: x.weight * x.scale })));
  const raw = (m: Mat<Float64Array>) => ({
    raw: new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength),
    dtype: "F64" as const,
    rows: m.rows,
    cols: m.cols,
  });
  const r = await be.truncateFactors({ B: raw(B), A: raw(A), scale: 1, rank: t, scaleOut: 1, split: "balanced", outDtype: dtype as FactorDType });
  if (r.kind !== "done") return null;
  const norm = Math.sqrt(r.norm2);
  const diff = Math.sqrt(Math.max(0, r.err2) + r.resid2);
  return {
    B: { rows: B.rows, cols: t, data: decodeToFloat64(dtype, r.B) },
    A: { rows: t, cols: A.cols, data: decodeToFloat64(dtype, r.A) },
    written: { B: r.B, A: r.A, norm, rel: norm > 0 ? diff / norm : diff === 0 ? 0 : Number.POSITIVE_INFINITY, diff },
    details: { retained_energy: retainedEnergy(r.S, t) },
  };
}

/**
 * The best rank-k approximation of the weighted sum. `dtype`: the file's dtype, when the factors
 * may come back already written in it (the Gram route, where the sum is in the factor route's range).
 */
export async function mergeSvd(be: LinalgBackend, terms: MergeTerm[], k: number, dtype?: DType): Promise<MergedFactors> {
  const t = svdRank(k, terms);
  const R = catRank(terms);
  if (dtype && GRAM_OUT.includes(dtype) && !useDenseRoute(R, terms[0]!.B.rows, terms[0]!.A.cols)) {
    const g = await gramRoute(be, terms, t, dtype);
    if (g) return g;
  }
  const svd = await svdOfSum(be, terms);
  return { ...truncatedFactors(svd, t), details: { retained_energy: retainedEnergy(svd.S, t) } };
}
