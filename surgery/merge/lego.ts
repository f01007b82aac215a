// LoRA-LEGO (Zhao et al., ICLR 2025; docs/algorithms.md §5.5): per module, pool every rank unit
// ("minimal semantic unit", MSU) of every input as the vector m = [√s·a ; √s·b] (a = row of A,
// b = column of B, √s folded into both halves so adapters with different alpha/r compare),
// cluster the M = Σrᵢ units into k groups with k-means (k-means++, n_init, max_iter, tol, seed;
// per-adapter sample weights), and take the centroids as the new rank units. Then the dual
// reweighting, both on by default (the paper's pipeline step 5, formulas as both reimplementations have them):
//  - parameter ("norm decay"): μ_c ← μ_c · (Σ_{m∈C_c} w_m‖m‖ / Σ w_m) / ‖μ_c‖, norm L∞ (default) or L2;
//  - output ("variance expansion"): ΔW ← √(r_ref/k)·Σ_c b̄_c ā_cᵀ, r_ref = mean source rank
//    (folded as (r_ref/k)^¼ into each half).
// Sign ambiguity ((a, b) ~ (−a, −b)) is not handled by the paper or the reimplementations;
// --sign-canonicalize (opt-in) flips each unit so the largest-|·| entry of its a-half is positive.
// The weights are sample weights, never scales: N identical inputs give that input back.
import { kmeans, type KmeansInit } from "../../linalg/kmeans.js";
import type { LinalgBackend, Mat } from "../../linalg/types.js";
import type { MergedFactors, MergeTerm, TermShape } from "./types.js";
import { BufferPool } from "../../common/buffer-pool.js";

/**
 * MSU matrices of equal size reused from one module to the next (they are 10–15 MB for 7B shapes,
 * and fresh ones cost more in page faults than building them). A buffer is in use by one merge at
 * a time: taken in mergeLego, given back when its module is done; at most 64 MiB are kept.
 */
const msuBuffers = new BufferPool(64 << 20);

export interface LegoOptions {
  /** Number of clusters = output rank. */
  k: number;
  paramReweight: boolean;
  outputReweight: boolean;
  paramNorm: "inf" | "2";
  signCanonicalize: boolean;
  /** r_ref of the output reweighting; default the mean rank of the inputs holding the module. */
  refRank?: number;
  nInit: number;
  maxIter: number;
  tol: number;
  seed: number;
  /** Internal (golden examples): "first" = Lloyd from the first k units. */
  init?: KmeansInit;
}

export interface LegoDetails {
  units: number;
  k: number;
  inertia: number;
  iterations: number;
  r_ref: number;
  /** Cluster of each unit, in input order (input 0's units first). */
  labels: number[];
  [extra: string]: unknown;
}

export function legoUnits(terms: TermShape[]): number {
  return terms.reduce((s, t) => s + t.A.rows, 0);
}

/** The MSU matrix (M × (in+out)), one row [a ; b] per rank unit, and its sample weights. */
export function msuMatrix(terms: MergeTerm[], signCanonicalize: boolean, pool?: BufferPool): { X: Mat<Float64Array>; weights: Float64Array } {
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols,
    D = inn + out;
  const M = legoUnits(terms);
  // Every element is written below, so a pooled buffer needs no clearing.
  const X = pool ? new Float64Array(pool.take(M * D * 8).buffer, 0, M * D) : new Float64Array(M * D),
    weights = new Float64Array(M);
  let row = 0;
  for (const t of terms) {
    const r = t.A.rows,
      a = t.A.data,
      b = t.B.data;
    const g = Math.sqrt(Math.abs(t.scale)),
      ga = t.scale < 0 ? -g : g;
    for (let i = 0; i < r; i++) {
      const o = (row + i) * D;
      for (let j = 0; j < inn; j++) X[o + j] = ga * a[i * inn + j]!;
      weights[row + i] = t.weight;
    }
    // B's columns become the rows' second halves: B is read row by row (r values at a time).
    for (let j = 0; j < out; j++) {
      const bo = j * r,
        xo = row * D + inn + j;
      for (let i = 0; i < r; i++) X[xo + i * D] = g * b[bo + i]!;
    }
    if (signCanonicalize)
      for (let i = 0; i < r; i++) {
        const o = (row + i) * D;
        let best = 0,
          bestAbs = -1;
        for (let j = 0; j < inn; j++) {
          const v = X[o + j]!;
          if (Math.abs(v) > bestAbs) {
            bestAbs = Math.abs(v);
            best = v;
          }
        }
        if (best < 0) for (let j = 0; j < D; j++) X[o + j] = -X[o + j]!;
      }
    row += r;
  }
  return { X: { rows: M, cols: D, data: X }, weights };
}

function norm(v: Float64Array, off: number, len: number, kind: "inf" | "2"): number {
  let s = 0;
  if (kind === "inf") {
    for (let j = 0; j < len; j++) s = Math.max(s, Math.abs(v[off + j]!));
    return s;
  }
  for (let j = 0; j < len; j++) s += v[off + j]! ** 2;
  return Math.sqrt(s);
}

export async function mergeLego(be: LinalgBackend, terms: MergeTerm[], o: LegoOptions): Promise<MergedFactors & { details: LegoDetails }> {
  const { X, weights } = msuMatrix(terms, o.signCanonicalize, msuBuffers);
  try {
    return await legoFromUnits(be, terms, X, weights, o);
  } finally {
    msuBuffers.give(new Uint8Array(X.data.buffer));
  }
}

async function legoFromUnits(
  be: LinalgBackend,
  terms: MergeTerm[],
  X: Mat<Float64Array>,
  weights: Float64Array,
  o: LegoOptions,
): Promise<MergedFactors & { details: LegoDetails }> {
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols,
    D = inn + out;
  const M = X.rows,
    k = o.k;
  if (k > M) throw new Error(`lego: k = ${k} exceeds the ${M} rank units`);
  const km = await kmeans(be, X, { k, nInit: o.nInit, maxIter: o.maxIter, tol: o.tol, seed: o.seed, weights, ...(o.init ? { init: o.init } : {}) });
  const C = Float64Array.from(km.centroids.data);
  if (o.paramReweight) {
    const num = new Float64Array(k),
      den = new Float64Array(k);
    for (let i = 0; i < M; i++) {
      const c = km.labels[i]!;
      num[c] += weights[i]! * norm(X.data, i * D, D, o.paramNorm);
      den[c] += weights[i]!;
    }
    for (let c = 0; c < k; c++) {
      if (!(den[c]! > 0)) continue; // empty cluster: nothing to rescale towards
      const target = num[c]! / den[c]!;
      const cur = Math.max(norm(C, c * D, D, o.paramNorm), 1e-12);
      const f = target / cur;
      for (let j = 0; j < D; j++) C[c * D + j] *= f;
    }
  }
  const rRef = o.refRank ?? terms.reduce((s, t) => s + t.A.rows, 0) / terms.length;
  const f = o.outputReweight ? Math.pow(rRef / k, 0.25) : 1;
  const A = new Float64Array(k * inn),
    B = new Float64Array(out * k);
  for (let c = 0; c < k; c++) {
    for (let j = 0; j < inn; j++) A[c * inn + j] = f * C[c * D + j]!;
    for (let j = 0; j < out; j++) B[j * k + c] = f * C[c * D + inn + j]!;
  }
  return {
    B: { rows: out, cols: k, data: B },
    A: { rows: k, cols: inn, data: A },
    details: { units: M, k, inertia: km.inertia, iterations: km.iterations, r_ref: rRef, labels: Array.from(km.labels), runs: km.runs },
  };
}
