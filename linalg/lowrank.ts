// LoRA maths on factors (docs/algorithms.md §2.1, §2.3): the SVD of ΔW = s·B·A, and of a weighted sum
// Σ sᵢBᵢAᵢ, computed from the factors without ever forming the dense out×in matrix:
//   B = Q_B R_B,  Aᵀ = Q_A R_A,  M = s·R_B·R_Aᵀ (r×r),  M = U_M Σ V_Mᵀ,  U = Q_B U_M,  V = Q_A V_M.
// Everything here runs in float64 (conditioning matters for inspect and error reports).
import { flipSigns } from "./signs.js";
import type { FloatArray, LinalgBackend, Mat } from "./types.js";

/** One term s·B·A of a low-rank sum. B is out×r, A is r×in (conv kernels flattened). */
export interface LowRankTerm {
  B: Mat;
  A: Mat;
  scale: number;
}

export interface LowRankSvd {
  /** out×k, orthonormal columns. */
  U: Mat<Float64Array>;
  /** k singular values, descending. */
  S: Float64Array;
  /** k×in, orthonormal rows. */
  Vt: Mat<Float64Array>;
}

export function toF64(m: Mat): Mat<Float64Array> {
  return m.data instanceof Float64Array ? (m as Mat<Float64Array>) : { rows: m.rows, cols: m.cols, data: Float64Array.from(m.data) };
}

export function transpose<T extends FloatArray>(m: Mat<T>): Mat<T> {
  const out = new (m.data.constructor as { new (n: number): T })(m.rows * m.cols);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) out[j * m.rows + i] = m.data[i * m.cols + j]!;
  return { rows: m.cols, cols: m.rows, data: out };
}

/** Stack terms into one product B_cat·A_cat = Σ sᵢBᵢAᵢ (scales folded into B), float64. */
export function concatTerms(terms: LowRankTerm[]): { B: Mat<Float64Array>; A: Mat<Float64Array> } {
  if (terms.length === 0) throw new Error("concatTerms: no terms");
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols;
  let R = 0;
  for (const t of terms) {
    if (t.B.rows !== out || t.A.cols !== inn || t.B.cols !== t.A.rows) {
      throw new Error(`concatTerms: shape mismatch (${t.B.rows}×${t.B.cols} · ${t.A.rows}×${t.A.cols} vs ${out}×·×${inn})`);
    }
    R += t.A.rows;
  }
  const B = new Float64Array(out * R),
    A = new Float64Array(R * inn);
  let off = 0;
  for (const t of terms) {
    const r = t.A.rows;
    for (let i = 0; i < out; i++) for (let j = 0; j < r; j++) B[i * R + off + j] = t.scale * t.B.data[i * r + j]!;
    A.set(t.A.data, off * inn);
    off += r;
  }
  return { B: { rows: out, cols: R, data: B }, A: { rows: R, cols: inn, data: A } };
}

async function cores(be: LinalgBackend, B: Mat<Float64Array>, A: Mat<Float64Array>) {
  const qb = await be.qr(B); // out×kb, kb×r
  const qa = await be.qr(transpose(A)); // in×ka, ka×r
  const M = await be.gemm(qb.R, qa.R, { transB: true }); // kb×ka
  return { qb, qa, M };
}

/** Exact thin SVD of Σ sᵢBᵢAᵢ from the factors (docs/algorithms.md §2.1). Signs per linalg/signs.ts. */
export async function lowRankSvd(be: LinalgBackend, terms: LowRankTerm | LowRankTerm[]): Promise<LowRankSvd> {
  const { B, A } = concatTerms(Array.isArray(terms) ? terms : [terms]);
  const { qb, qa, M } = await cores(be, B, A);
  const s = await be.svd(M);
  const U = await be.gemm(qb.Q, s.U); // out×k
  const Vt = await be.gemm(s.Vt, qa.Q, { transB: true }); // k×in
  const S = Float64Array.from(s.S, (x) => Math.max(x, 0));
  flipSigns(U, Vt);
  return { U, S, Vt };
}

/** Singular values only (inspect): the r×r core's SVD, descending. */
export async function lowRankSingularValues(be: LinalgBackend, terms: LowRankTerm | LowRankTerm[]): Promise<Float64Array> {
  const { B, A } = concatTerms(Array.isArray(terms) ? terms : [terms]);
  const { M } = await cores(be, B, A);
  const s = await be.svd(M);
  return Float64Array.from(s.S, (x) => Math.max(x, 0));
}

/** ‖Σ sᵢBᵢAᵢ‖_F via the r×r core (exact up to rounding; no cancellation). */
export async function lowRankNorm(be: LinalgBackend, terms: LowRankTerm | LowRankTerm[]): Promise<number> {
  const { B, A } = concatTerms(Array.isArray(terms) ? terms : [terms]);
  return stackedNorm(be, B, A);
}

/** ‖B·A‖_F of factors already stacked (concatTerms) via the core, as lowRankNorm. */
export async function stackedNorm(be: LinalgBackend, B: Mat<Float64Array>, A: Mat<Float64Array>): Promise<number> {
  const { M } = await cores(be, B, A);
  let s = 0;
  for (let i = 0; i < M.data.length; i++) s += M.data[i]! ** 2;
  return Math.sqrt(s);
}

/**
 * ‖P − T‖_F / ‖T‖_F for two low-rank sums, from the factors: the difference is itself the
 * low-rank sum [T, −P], whose norm comes from its core (docs/algorithms.md §2.3). 0 when ‖T‖ = 0 and ‖P‖ = 0.
 */
export async function relativeError(be: LinalgBackend, target: LowRankTerm[], approx: LowRankTerm[]): Promise<number> {
  const t = target.filter((x) => x.A.rows > 0);
  const p = approx.filter((x) => x.A.rows > 0);
  const tn = t.length ? await lowRankNorm(be, t) : 0;
  const diffTerms = [...t, ...p.map((x) => ({ ...x, scale: -x.scale }))];
  const dn = diffTerms.length ? await lowRankNorm(be, diffTerms) : 0;
  if (tn === 0) return dn === 0 ? 0 : Infinity;
  return dn / tn;
}

export type SplitMode = "balanced" | "all-in-up";

/**
 * Factors of a rank-t truncation written back with scale s' (docs/algorithms.md §1.3):
 * balanced: B' = U_t Σ^{1/2}/√s', A' = Σ^{1/2} V_tᵀ/√s'; all-in-up: B' = U_t Σ / s', A' = V_tᵀ.
 * Then s'·B'·A' = U_t Σ_t V_tᵀ.
 */
export function splitFactors(svd: LowRankSvd, t: number, scaleOut: number, mode: SplitMode): { B: Mat<Float64Array>; A: Mat<Float64Array> } {
  const out = svd.U.rows,
    inn = svd.Vt.cols,
    k = svd.U.cols;
  if (t > k) throw new Error(`splitFactors: rank ${t} exceeds ${k}`);
  const B = new Float64Array(out * t),
    A = new Float64Array(t * inn);
  for (let c = 0; c < t; c++) {
    const sv = svd.S[c]!;
    const bf = mode === "balanced" ? Math.sqrt(sv / scaleOut) : sv / scaleOut;
    const af = mode === "balanced" ? Math.sqrt(sv / scaleOut) : 1;
    for (let i = 0; i < out; i++) B[i * t + c] = svd.U.data[i * k + c]! * bf;
    for (let j = 0; j < inn; j++) A[c * inn + j] = svd.Vt.data[c * inn + j]! * af;
  }
  return { B: { rows: out, cols: t, data: B }, A: { rows: t, cols: inn, data: A } };
}

/** Cumulative energy fractions Σ_{i≤j} σᵢ² / Σ σᵢ² (1 for an all-zero spectrum). */
export function cumulativeEnergy(S: ArrayLike<number>): number[] {
  let total = 0;
  for (let i = 0; i < S.length; i++) total += S[i]! ** 2;
  const out: number[] = [];
  let acc = 0;
  for (let i = 0; i < S.length; i++) {
    acc += S[i]! ** 2;
    out.push(total > 0 ? acc / total : 1);
  }
  return out;
}

/** exp of the entropy of σ/Σσ (docs/algorithms.md §2.6); 0 for an all-zero spectrum. */
export function effectiveRank(S: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < S.length; i++) sum += S[i]!;
  if (!(sum > 0)) return 0;
  let h = 0;
  for (let i = 0; i < S.length; i++) {
    const p = S[i]! / sum;
    if (p > 0) h -= p * Math.log(p);
  }
  return Math.exp(h);
}
