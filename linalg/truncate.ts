// The Eckart–Young optimal rank-t truncation of one module ΔW = s·B·A (lora truncate --method svd), from
// the factors alone (docs/algorithms.md §3.1, §2.2), never from a dense ΔW.
//
// The fast route is BLAS-3 only (the "Gram route"): with G_B = BᵀB and G_A = AAᵀ (r×r, in
// float64), take square roots R_B = Λ_B^{1/2}V_Bᵀ and R_A (so B = Q_B R_B, Aᵀ = Q_A R_A for some
// orthonormal Q's that are never formed), M = s·R_B·R_Aᵀ = U_M Σ V_Mᵀ. Then ΔW = (Q_B U_M) Σ (Q_A V_M)ᵀ
// and, because A·Q_A = R_Aᵀ and Bᵀ·Q_B = R_Bᵀ,
//     U_t = ΔW V_t Σ_t⁻¹ = B · (s R_Aᵀ V_M,t Σ_t⁻¹),      V_t = ΔWᵀ U_t Σ_t⁻¹ = Aᵀ · (s R_Bᵀ U_M,t Σ_t⁻¹),
// so the new factors are B·P and Q·A for small r×t / t×r matrices P and Q: two Gram products and
// two thin products per module, ≈ 2(out+in)·r·(r+t) flops, against ≈ 6(out+in)·r² for Householder.
//
// The Gram route squares the condition number, so it is guarded: (1) when ‖ΔW‖² is tiny next to
// s²‖B‖²‖A‖² (factors whose large directions cancel), and (2) when an r×r self-check of the result
// (‖ΔW − s'B'A'‖² from the Grams, against Σ_{i>t}σᵢ²) disagrees, the module is redone by the
// Householder route of linalg/lowrank.ts. Either way s'·B'·A' = U_t Σ_t V_tᵀ (docs/algorithms.md §1.3).
//
// The relative error in the report is measured on the factors as written (rounded to the output
// dtype): ‖sBA − s'B''A''‖² = s²⟨G_B, G_A⟩ − 2ss'⟨BᵀB'', AA''ᵀ⟩ + s'²⟨B''ᵀB'', A''A''ᵀ⟩.
import { decodeToFloat32, encodeFloats, type DType } from "../common/dtype.js";
import { lowRankSvd, splitFactors, type SplitMode } from "./lowrank.js";
import type { LinalgBackend, Mat } from "./types.js";

export type { SplitMode };

type M64 = Mat<Float64Array>;

/** ⟨X, Y⟩ = Σ X∘Y for equally shaped matrices. */
function frob(x: Float64Array, y: Float64Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * y[i]!;
  return s;
}

function trace(x: Float64Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i * n + i]!;
  return s;
}

/** Small dense row-major product (r×r sizes; float64, no backend round trip). */
function mm(a: Float64Array, ar: number, ac: number, b: Float64Array, bc: number, transA = false, transB = false): Float64Array {
  // op(a) is ar'×ac', op(b) is ac'×bc
  const m = transA ? ac : ar,
    k = transA ? ar : ac;
  const out = new Float64Array(m * bc);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const x = transA ? a[p * ac + i]! : a[i * ac + p]!;
      if (x === 0) continue;
      for (let j = 0; j < bc; j++) out[i * bc + j] += x * (transB ? b[j * k + p]! : b[p * bc + j]!);
    }
  }
  return out;
}

function symmetrize(g: Float64Array, n: number): void {
  for (let i = 0; i < n; i++)
    for (let j = 0; j < i; j++) {
      const v = 0.5 * (g[i * n + j]! + g[j * n + i]!);
      g[i * n + j] = v;
      g[j * n + i] = v;
    }
}

/** R with RᵀR = G: R = Λ^{1/2}Vᵀ from the eigen-decomposition (negative rounding noise clamped). */
async function gramRoot(be: LinalgBackend, g: Float64Array, n: number): Promise<Float64Array> {
  const e = await be.eigSym({ rows: n, cols: n, data: g });
  const R = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const l = Math.sqrt(Math.max(0, e.values[i]!));
    if (l === 0) continue;
    for (let j = 0; j < n; j++) R[i * n + j] = l * e.vectors.data[j * n + i]!;
  }
  return R;
}

/** The Grams of one module's factors (kept for the error report). */
export interface Grams {
  GB: Float64Array;
  GA: Float64Array;
  /** ‖ΔW‖²_F = s²⟨G_B, G_A⟩. */
  norm2: number;
}

export async function gramsOf(be: LinalgBackend, B: M64, A: M64, scale: number): Promise<Grams> {
  // One product at a time: the native backends already use every core for each.
  const gb = await be.gemm(B, B, { transA: true });
  const ga = await be.gemm(A, A, { transB: true });
  return gramsFrom(gb.data, ga.data, A.rows, scale);
}

/** Grams from BᵀB and AAᵀ (r×r) computed elsewhere (e.g. readFactorsWithGrams); symmetrized in place. */
export function gramsFrom(GB: Float64Array, GA: Float64Array, r: number, scale: number): Grams {
  symmetrize(GB, r);
  symmetrize(GA, r);
  return { GB, GA, norm2: Math.max(0, scale * scale * frob(GB, GA)) };
}

export interface TruncatedFactors {
  /** out×t */
  B: M64;
  /** t×in */
  A: M64;
  /** Every singular value of ΔW the route computed (descending, length ≤ r). */
  S: Float64Array;
  route: "gram" | "householder";
  /** ‖ΔW − s'B'A'‖²_F of these (unrounded) factors: the σ² not written (the tail, plus any zeroed component). */
  err2: number;
}

/**
 * Factors of the optimal rank-t approximation of ΔW = s·B·A, written for the scale `scaleOut`
 * (s'·B'·A' = U_t Σ_t V_tᵀ) with the singular values split as `split` says. t may exceed the
 * number of non-zero singular values: the extra components are zero (kohya-compat padding).
 * Signs: the largest-magnitude entry of every column of B' is positive (linalg/signs.ts).
 */
export async function truncateModule(
  be: LinalgBackend,
  B: M64,
  A: M64,
  scale: number,
  t: number,
  scaleOut: number,
  split: SplitMode,
  grams?: Grams,
): Promise<TruncatedFactors & { grams: Grams }> {
  const g = grams ?? (await gramsOf(be, B, A, scale));
  const viaGram = await gramRoute(be, B, A, scale, t, scaleOut, split, g);
  if (viaGram) return { ...viaGram, grams: g };
  return { ...(await householderRoute(be, B, A, scale, t, scaleOut, split)), grams: g };
}

export async function gramRoute(
  be: LinalgBackend,
  B: M64,
  A: M64,
  s: number,
  t: number,
  s2: number,
  split: SplitMode,
  g: Grams,
): Promise<TruncatedFactors | null> {
  const r = A.rows,
    out = B.rows,
    inn = A.cols;
  const normB2 = trace(g.GB, r),
    normA2 = trace(g.GA, r);
  const scale2 = s * s * normB2 * normA2;
  if (g.norm2 === 0 && scale2 === 0) {
    return {
      B: { rows: out, cols: t, data: new Float64Array(out * t) },
      A: { rows: t, cols: inn, data: new Float64Array(t * inn) },
      S: new Float64Array(r),
      route: "gram",
      err2: 0,
    };
  }
  // Guard (1): large directions of B and A cancel; the Gram route would lose the result.
  if (!(g.norm2 >= 1e-3 * scale2)) return null;
  const RB = await gramRoot(be, g.GB, r);
  const RA = await gramRoot(be, g.GA, r);
  const M = mm(RB, r, r, RA, r, false, true);
  for (let i = 0; i < M.length; i++) M[i]! *= s;
  const svd = await be.svd({ rows: r, cols: r, data: M });
  const S = Float64Array.from(svd.S, (x) => Math.max(0, x));
  const UM = svd.U.data,
    VMt = svd.Vt.data; // r×r each; V_M = VMtᵀ
  // Components below the Gram route's noise floor are zero (√ε·s‖B‖‖A‖ is what it can resolve).
  const floor = 2e-8 * Math.sqrt(scale2);
  const P = new Float64Array(r * t); // B' = B·P
  const Q = new Float64Array(t * r); // A' = Q·A
  let tail = 0;
  for (let i = 0; i < S.length; i++) if (i >= t || !(S[i]! > floor)) tail += S[i]! ** 2;
  for (let c = 0; c < t && c < r; c++) {
    const sv = S[c]!;
    if (!(sv > floor)) continue;
    // column c of R_Aᵀ V_M and of R_Bᵀ U_M
    const fB = split === "balanced" ? s / Math.sqrt(sv * s2) : s / s2; // × (R_Aᵀ v_c)
    const fA = split === "balanced" ? s / Math.sqrt(sv * s2) : s / sv; // × (R_Bᵀ u_c)
    for (let i = 0; i < r; i++) {
      let xb = 0,
        xa = 0;
      for (let k = 0; k < r; k++) {
        xb += RA[k * r + i]! * VMt[c * r + k]!;
        xa += RB[k * r + i]! * UM[k * r + c]!;
      }
      P[i * t + c] = fB * xb;
      Q[c * r + i] = fA * xa;
    }
  }
  // Guard (2): the r×r model of ‖ΔW − s'·B·P·Q·A‖² must match the spectrum's Σ_{i≥t} σᵢ².
  // In rank-t pieces (≈ 4r²t flops instead of 3r³): X = G_B P (r×t), Y = Q G_A (t×r), K = PᵀX (t×t).
  const X = mm(g.GB, r, r, P, t);
  const Y = mm(Q, t, r, g.GA, r);
  let tr = 0;
  for (let i = 0; i < r; i++) for (let c = 0; c < t; c++) tr += X[i * t + c]! * Y[c * r + i]!;
  const cross = s * s2 * tr; // ⟨sBA, s'BPQA⟩ = ss'·tr(G_B PQ G_A) = ss'·Σ X∘Yᵀ
  const K = mm(P, r, t, X, t, true); // t×t
  const own = s2 * s2 * frob(K, mm(Y, t, r, Q, t, false, true)); // ‖s'BPQA‖² = s'²⟨PᵀG_BP, Q G_A Qᵀ⟩
  const err2 = g.norm2 - 2 * cross + own;
  if (!(Math.abs(err2 - tail) <= 1e-9 * g.norm2 + 1e-12 * scale2)) return null;
  const Bn = await be.gemm(B, { rows: r, cols: t, data: P });
  const An = await be.gemm({ rows: t, cols: r, data: Q }, A);
  flipColumnSigns(Bn, An);
  return { B: Bn as M64, A: An as M64, S, route: "gram", err2: tail };
}

async function householderRoute(be: LinalgBackend, B: M64, A: M64, s: number, t: number, s2: number, split: SplitMode): Promise<TruncatedFactors> {
  const svd = await lowRankSvd(be, { B, A, scale: s });
  const k = Math.min(t, svd.S.length);
  const f = splitFactors(svd, k, s2, split); // already sign-normalised through U
  let err2 = 0;
  for (let i = k; i < svd.S.length; i++) err2 += svd.S[i]! ** 2;
  if (k === t) return { B: f.B, A: f.A, S: svd.S, route: "householder", err2 };
  const out = B.rows,
    inn = A.cols;
  const Bp = new Float64Array(out * t),
    Ap = new Float64Array(t * inn);
  for (let i = 0; i < out; i++) for (let c = 0; c < k; c++) Bp[i * t + c] = f.B.data[i * k + c]!;
  Ap.set(f.A.data);
  return { B: { rows: out, cols: t, data: Bp }, A: { rows: t, cols: inn, data: Ap }, S: svd.S, route: "householder", err2 };
}

/** sklearn's svd_flip on u, applied to B' (whose columns are positive multiples of U's). */
export function flipColumnSigns(B: Mat, A: Mat): void {
  const t = B.cols,
    out = B.rows,
    inn = A.cols;
  for (let c = 0; c < t; c++) {
    let best = 0,
      bestAbs = -1;
    for (let i = 0; i < out; i++) {
      const v = B.data[i * t + c]!;
      if (Math.abs(v) > bestAbs) {
        bestAbs = Math.abs(v);
        best = v;
      }
    }
    if (best < 0) {
      for (let i = 0; i < out; i++) B.data[i * t + c] = -B.data[i * t + c]!;
      for (let j = 0; j < inn; j++) A.data[c * inn + j] = -A.data[c * inn + j]!;
    }
  }
}

/**
 * Values as the output file will hold them: F32/F16/BF16 as a Float32Array whose every value is
 * exactly representable in the dtype (so the writer's encoding is exact), F64 as they are.
 */
export function roundForDtype(dtype: DType, x: Float64Array | Float32Array): Float32Array | Float64Array {
  if (dtype === "F64") return x instanceof Float64Array ? x : Float64Array.from(x);
  const f = x instanceof Float32Array ? x : Float32Array.from(x);
  if (dtype === "F32") return f;
  return decodeToFloat32(dtype, encodeFloats(dtype, f), { mayAlias: true });
}

export function toF64(x: Float32Array | Float64Array): Float64Array {
  return x instanceof Float64Array ? x : Float64Array.from(x);
}

/**
 * ‖sBA − s'B'A'‖_F / ‖sBA‖_F from the factors (B', A' as written), with ‖sBA‖_F. 0 when both
 * are zero. B' may have 0 columns (module removed: the error is 1).
 */
export async function relativeErrorFromFactors(
  be: LinalgBackend,
  B: M64,
  A: M64,
  s: number,
  grams: Grams,
  B2: M64,
  A2: M64,
  s2: number,
): Promise<{ relative_error: number; target_norm: number }> {
  const t = A2.rows;
  let own = 0,
    cross = 0;
  if (t > 0) {
    const HB = await be.gemm(B, B2, { transA: true }); // r×t
    const HA = await be.gemm(A, A2, { transB: true }); // r×t
    const KB = await be.gemm(B2, B2, { transA: true }); // t×t
    const KA = await be.gemm(A2, A2, { transB: true }); // t×t
    cross = s * s2 * frob(HB.data as Float64Array, HA.data as Float64Array);
    own = s2 * s2 * frob(KB.data as Float64Array, KA.data as Float64Array);
  }
  return errorReport(grams.norm2, Math.max(0, grams.norm2 - 2 * cross + own));
}

/**
 * ‖sBA − s'B''A''‖_F / ‖sBA‖_F for a truncation written with rounded factors B'' = B' + δB,
 * A'' = A' + δA, without touching the input factors again. With E = sBA − s'B'A' (the exact
 * truncation's error, ‖E‖² = `err2`) and R = s'(B''A'' − B'A') = s'(δB·A'' + B'·δA):
 * ‖E − R‖² = ‖E‖² + ‖R‖² − 2⟨E, R⟩, and ⟨E, R⟩ = ⟨E, s'δB·δA⟩ only — E is orthogonal to the
 * column space of B' and to the row space of A' (Eckart–Young) — a second-order term that is
 * left out: it moves the reported error by at most s'·‖δB‖‖δA‖/‖sBA‖ (≈ ε_dtype²). ‖R‖² comes
 * from two 2t×2t Grams of [B' | δB] and [A''; δA].
 */
export async function truncationError(
  be: LinalgBackend,
  B1: M64,
  A1: M64,
  B2: M64,
  A2: M64,
  s2: number,
  err2: number,
  norm2: number,
): Promise<{ relative_error: number; target_norm: number }> {
  return errorReport(norm2, Math.max(0, err2) + (await roundingResidual2(be, B1, A1, B2, A2, s2)));
}

/** ‖R‖² = ‖s'(B''A'' − B'A')‖², what rounding B', A' to B'', A'' adds to the squared error (truncationError). */
export async function roundingResidual2(be: LinalgBackend, B1: M64, A1: M64, B2: M64, A2: M64, s2: number): Promise<number> {
  const t = A1.rows,
    out = B1.rows,
    inn = A1.cols;
  let r2 = 0;
  if (t > 0 && (B2.data !== B1.data || A2.data !== A1.data)) {
    const Bs = new Float64Array(out * 2 * t),
      As = new Float64Array(2 * t * inn);
    for (let i = 0; i < out; i++)
      for (let c = 0; c < t; c++) {
        const b1 = B1.data[i * t + c]!;
        Bs[i * 2 * t + c] = b1;
        Bs[i * 2 * t + t + c] = B2.data[i * t + c]! - b1;
      }
    As.set(A2.data);
    for (let j = 0; j < t * inn; j++) As[t * inn + j] = A2.data[j]! - A1.data[j]!;
    const GBs = (await be.gemm({ rows: out, cols: 2 * t, data: Bs }, { rows: out, cols: 2 * t, data: Bs }, { transA: true })).data as Float64Array;
    const GAs = (await be.gemm({ rows: 2 * t, cols: inn, data: As }, { rows: 2 * t, cols: inn, data: As }, { transB: true })).data as Float64Array;
    const n = 2 * t;
    const blk = (G: Float64Array, bi: number, bj: number) => {
      const o = new Float64Array(t * t);
      for (let i = 0; i < t; i++) for (let j = 0; j < t; j++) o[i * t + j] = G[(bi * t + i) * n + bj * t + j]!;
      return o;
    };
    // ‖δB·A''‖² + 2⟨δB·A'', B'·δA⟩ + ‖B'·δA‖²
    r2 = s2 * s2 * Math.max(0, frob(blk(GBs, 1, 1), blk(GAs, 0, 0)) + 2 * frob(blk(GBs, 1, 0), blk(GAs, 0, 1)) + frob(blk(GBs, 0, 0), blk(GAs, 1, 1)));
  }
  return r2;
}

/** ‖ΔW − ΔW'‖_F / ‖ΔW‖_F from the two squares (0 when both are zero; ∞ for a non-zero error of a zero ΔW), with ‖ΔW‖_F. */
export function errorReport(norm2: number, err2: number): { relative_error: number; target_norm: number } {
  const target = Math.sqrt(norm2);
  if (target === 0) return { relative_error: err2 === 0 ? 0 : Infinity, target_norm: 0 };
  return { relative_error: Math.sqrt(err2) / target, target_norm: target };
}

/** Σ_{i<t} σᵢ² / Σ σᵢ² (1 for an all-zero spectrum). */
export function retainedEnergy(S: ArrayLike<number>, t: number): number {
  let kept = 0,
    total = 0;
  for (let i = 0; i < S.length; i++) {
    total += S[i]! ** 2;
    if (i < t) kept += S[i]! ** 2;
  }
  return total > 0 ? kept / total : 1;
}
