// One module merged (merge's write pass): the method chosen by --method, the factors rounded to
// what the file will hold, and their error against the target T = Σ wᵢ·ΔWᵢ.
import { decodeToFloat64, encodeFloats, type DType } from "../../formats/safetensors/index.js";
import { concatTerms, lowRankNorm, stackedNorm, type LowRankTerm } from "../../linalg/lowrank.js";
import type { LinalgBackend } from "../../linalg/types.js";
import { mergeCat } from "./cat.js";
import { mergeFair } from "./fair.js";
import { mergeFfaProjected, mergeFfaShared } from "./ffa.js";
import { mergeLego } from "./lego.js";
import { mergeLinear } from "./linear.js";
import type { Group } from "./plan.js";
import { mergeSvd } from "./svd.js";
import { mergeTies, type DenseMethod } from "./ties.js";
import type { MergedFactors, MergeOptions, MergeTerm } from "./types.js";

/**
 * A factor as the file will hold it: its bytes in `dtype`, and the values they decode to (so the
 * reported error is the error of the written factors).
 */
export function rounded(dtype: DType, x: Float64Array): { values: Float64Array; bytes: Uint8Array } {
  if (dtype === "F64") return { values: x, bytes: new Uint8Array(x.buffer, x.byteOffset, x.byteLength) };
  const bytes = encodeFloats(dtype, x);
  return { values: decodeToFloat64(dtype, bytes), bytes };
}

/** An error report: ‖T‖ and ‖P − T‖/‖T‖ as reported, and the absolute ‖P − T‖. */
export interface ErrorReport {
  norm: number;
  /** 0 when P and T are both 0 (or at rounding level); Infinity (JSON null) when only T is. */
  rel: number;
  /** ‖P − T‖, for totals over modules whose ratio is infinite. */
  diff: number;
  /** T cancelled to the rounding level of its terms and is reported as 0 (docs/algorithms.md §5). */
  cancelled?: boolean;
}

/**
 * The rounding level of a sum T = Σ tᵢ computed in float64: its value is only known to within a few
 * ε·Σ‖tᵢ‖, and the norms here add the error of the route that computes them (the QR core of the
 * stacked factors, backward stable: its error is a modest multiple, growing like √R, of ε times
 * the sizes of the stacked terms). 2⁻⁴⁴ = 256ε leaves room for that multiple for ranks into the
 * thousands, and stays ten million times below the smallest real cancellation the tests merge
 * (T = t − t + 10⁻⁷·t', at 10⁻⁷ of its terms).
 */
export const ROUNDING_LEVEL = 256 * Number.EPSILON;

/**
 * The report of ‖T‖ = tn and ‖P − T‖ = dn given `size` = Σ‖wᵢΔWᵢ‖ (the terms of T) and `outNorm` =
 * ‖P‖: a T at the rounding level of its terms is reported as 0, and its ratio as 0 when P − T is at
 * that level too (of the terms and of P), else as infinite (docs/algorithms.md §5).
 */
export function reported(tn: number, dn: number, size: number, outNorm: number): ErrorReport {
  if (tn > 0 && tn > ROUNDING_LEVEL * size) return { norm: tn, rel: dn / tn, diff: dn };
  const zero = dn === 0 || dn <= ROUNDING_LEVEL * (size + outNorm);
  return { norm: 0, rel: zero ? 0 : Infinity, diff: zero ? 0 : dn, cancelled: size > 0 };
}

/**
 * ‖T‖ and ‖P − T‖/‖T‖ from the factors. The terms of [T, −P] (each s·B·A) give both norms at once
 * through their pairwise inner products ⟨sₚBₚAₚ, s_qB_qA_q⟩ = sₚs_q⟨BₚᵀB_q, AₚA_qᵀ⟩, small products of
 * the factors (the Grams of the stacked B_cat·A_cat, block by block, docs/algorithms.md §2.3,
 * without stacking them). That route loses accuracy to cancellation when P ≈ T (or when T's terms
 * cancel), so there the norms are recomputed through the QR core (docs/algorithms.md §2.1), which has no cancellation:
 * exact merges report ~1e-16, not the Gram route's ~1e-8 floor.
 */
export async function errorOf(be: LinalgBackend, target: LowRankTerm[], got: MergedFactors): Promise<ErrorReport> {
  if (target.length === 0) return { norm: 0, rel: 0, diff: 0 };
  const approx: LowRankTerm[] = got.A.rows > 0 ? [{ B: got.B, A: got.A, scale: -1 }] : [];
  const all = [...target, ...approx];
  const nT = target.length;
  // inner[p][q] = ⟨term p, term q⟩ for p ≤ q; the target's factors were checked when read.
  const pairs: [number, number][] = [];
  for (let p = 0; p < all.length; p++) for (let q = p; q < all.length; q++) pairs.push([p, q]);
  const inner = await Promise.all(
    pairs.map(async ([p, q]) => {
      const a = all[p]!,
        b = all[q]!;
      const finite = q < nT;
      const [gb, ga] = await Promise.all([be.gemm(a.B, b.B, { transA: true, finite }), be.gemm(a.A, b.A, { transB: true, finite })]);
      let v = 0;
      for (let k = 0; k < gb.data.length; k++) v += gb.data[k]! * ga.data[k]!;
      return a.scale * b.scale * v;
    }),
  );
  let t2 = 0,
    d2 = 0,
    blocks = 0,
    blocksAll = 0,
    size = 0,
    outNorm = 0;
  pairs.forEach(([p, q], k) => {
    const v = (p === q ? 1 : 2) * inner[k]!;
    d2 += v;
    if (q < nT) t2 += v;
    if (p === q) {
      blocksAll += v; // ‖termₚ‖²: the size of what the sums cancelled
      if (p < nT) {
        blocks += v;
        size += Math.sqrt(Math.max(v, 0));
      } else outNorm = Math.sqrt(Math.max(v, 0));
    }
  });
  let tn = Math.sqrt(Math.max(t2, 0));
  if (!(t2 > 1e-8 * blocks)) tn = await lowRankNorm(be, target);
  let dn = Math.sqrt(Math.max(d2, 0));
  if (!(d2 > 1e-10 * blocksAll)) {
    const { B, A } = concatTerms(all);
    dn = await stackedNorm(be, B, A);
  }
  return reported(tn, dn, size, outNorm);
}

/**
 * ‖T‖ and ‖P − T‖/‖T‖ for an exact merge (cat: B₀·A₀ = T) whose factors were rounded to the file's
 * dtype, given what the rounding did (δB = B̃ − B₀, δA = Ã − A₀; null: nothing rounded): P − T =
 * B̃Ã − B₀A₀ = δB·Ã + B₀·δA, so ‖P − T‖² = ⟨δBᵀδB, ÃÃᵀ⟩ + 2⟨δBᵀB₀, ÃδAᵀ⟩ + ⟨B₀ᵀB₀, δAδAᵀ⟩ with
 * Ã = A₀ + δA, from six R×R products and no cancellation to recompute through QR cores
 * (docs/algorithms.md §5.1). ‖T‖² = ⟨B₀ᵀB₀, A₀A₀ᵀ⟩, through the core only when T's terms cancel (as errorOf).
 */
export async function roundingErrorOf(
  be: LinalgBackend,
  target: LowRankTerm[],
  exact: MergedFactors,
  rounding: { B: Float64Array | null; A: Float64Array | null },
): Promise<ErrorReport> {
  const R = exact.A.rows,
    out = exact.B.rows,
    inn = exact.A.cols;
  // The written factors B₀ + δB, A₀ + δA (δ = null: nothing rounded).
  const written = (): MergedFactors => ({
    B: rounding.B ? { ...exact.B, data: plus(exact.B.data, rounding.B) } : exact.B,
    A: rounding.A ? { ...exact.A, data: plus(exact.A.data, rounding.A) } : exact.A,
  });
  if (target.length === 0 || R === 0) return errorOf(be, target, written());
  // Nothing rounded (F64 outputs): the four products with δB or δA are zero and are not formed.
  const exactOut = rounding.B === null && rounding.A === null;
  const dB = { rows: out, cols: R, data: rounding.B ?? (exactOut ? new Float64Array(0) : new Float64Array(out * R)) },
    dA = { rows: R, cols: inn, data: rounding.A ?? (exactOut ? new Float64Array(0) : new Float64Array(R * inn)) };
  const B0 = exact.B,
    A0 = exact.A;
  const zero = new Float64Array(R * R);
  const [bb, db, dd, aa, ad, ee] = await Promise.all([
    be.gemm(B0, B0, { transA: true }),
    exactOut ? null : be.gemm(dB, B0, { transA: true }),
    exactOut ? null : be.gemm(dB, dB, { transA: true }),
    be.gemm(A0, A0, { transB: true }),
    exactOut ? null : be.gemm(A0, dA, { transB: true }),
    exactOut ? null : be.gemm(dA, dA, { transB: true }),
  ]).then((ms) => ms.map((m) => m?.data ?? zero));
  let d2 = 0,
    t2 = 0,
    blocks = 0,
    dBlocks = 0,
    pp = 0; // ‖P‖² = ⟨B̃ᵀB̃, ÃÃᵀ⟩
  const termBlocks = new Float64Array(target.length); // ‖termₚ‖²
  const block = new Int32Array(R);
  let off = 0;
  target.forEach((t, q) => {
    block.fill(q, off, off + t.A.rows);
    off += t.A.rows;
  });
  for (let i = 0; i < R; i++)
    for (let j = 0; j < R; j++) {
      const k = i * R + j,
        kt = j * R + i;
      // ÃÃᵀ = A₀A₀ᵀ + A₀δAᵀ + δAA₀ᵀ + δAδAᵀ and ÃδAᵀ = A₀δAᵀ + δAδAᵀ
      const d = dd[k]! * (aa[k]! + ad[k]! + ad[kt]! + ee[k]!) + 2 * db[k]! * (ad[k]! + ee[k]!) + bb[k]! * ee[k]!;
      const v = bb[k]! * aa[k]!;
      d2 += d;
      t2 += v;
      // B̃ᵀB̃ = B₀ᵀB₀ + B₀ᵀδB + δBᵀB₀ + δBᵀδB, against ÃÃᵀ as above
      pp += (bb[k]! + db[k]! + db[kt]! + dd[k]!) * (aa[k]! + ad[k]! + ad[kt]! + ee[k]!);
      if (block[i] === block[j]) {
        blocks += v;
        dBlocks += d;
        termBlocks[block[i]!]! += v;
      }
    }
  const size = termBlocks.reduce((s, v) => s + Math.sqrt(Math.max(v, 0)), 0);
  const outNorm = Math.sqrt(Math.max(pp, 0));
  // Each term's rounding error ‖(δB·Ã + B₀·δA)ᵢ‖² is a diagonal block: when the terms' errors cancel
  // (an adapter merged with its negation), the sum above lost digits, and the general route decides.
  if (dBlocks === 0) return reported(t2 > 1e-8 * blocks ? Math.sqrt(t2) : await lowRankNorm(be, target), 0, size, outNorm);
  if (!(d2 > 1e-4 * dBlocks)) return errorOf(be, target, written());
  const tn = t2 > 1e-8 * blocks ? Math.sqrt(t2) : await lowRankNorm(be, target);
  return reported(tn, Math.sqrt(d2), size, outNorm);
}

/** x + y, elementwise (the rounded factors from the exact ones and their rounding). */
function plus(x: Float64Array, y: Float64Array): Float64Array {
  const d = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) d[i] = x[i]! + y[i]!;
  return d;
}

export async function mergeModule(be: LinalgBackend, terms: MergeTerm[], g: Group, o: MergeOptions): Promise<MergedFactors> {
  const K = o.rank ?? Math.max(...terms.map((t) => t.A.rows));
  switch (o.method) {
    case "cat":
      return mergeCat(terms);
    case "svd":
      return mergeSvd(be, terms, K, g.dtype);
    case "linear":
      return mergeLinear(terms);
    case "ties":
    case "dare":
    case "dare_ties":
    case "magnitude_prune":
      return mergeTies(be, terms, {
        method: o.method as DenseMethod,
        density: o.density,
        mode: o.tiesMode,
        majoritySign: o.majoritySign,
        rank: g.rank,
        seed: o.seed,
        moduleKey: g.key,
        oversample: o.oversample,
        powerIters: o.powerIters,
      });
    case "lego":
      return mergeLego(be, terms, {
        k: g.rank,
        paramReweight: o.paramReweight,
        outputReweight: o.outputReweight,
        paramNorm: o.paramNorm,
        signCanonicalize: o.signCanonicalize,
        nInit: o.nInit,
        maxIter: o.maxIter,
        tol: o.tol,
        seed: o.seed,
        ...(o.refRank !== undefined ? { refRank: o.refRank } : {}),
        ...(o.kmeansInit ? { init: o.kmeansInit } : {}),
      });
    case "ffa":
      return g.ffaShared ? mergeFfaShared(terms) : mergeFfaProjected(be, terms, g.rank);
    case "fair":
      return mergeFair(be, terms, { solver: o.fairSolver, lambda: o.fairLambda, steps: o.fairSteps, lr: o.fairLr });
  }
}
