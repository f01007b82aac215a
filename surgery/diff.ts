// How different two adapters of one base are, module by module, from the factors alone
// (docs/algorithms.md §11):
//   ΔW_a = U_a Σ_a V_aᵀ and ΔW_b = U_b Σ_b V_bᵀ, each the exact thin SVD from its factors (QR of B
//   and Aᵀ, SVD of the r×r core), so with P = U_aᵀU_b and Q = V_aᵀV_b (k_a×k_b)
//   ⟨ΔW_a, ΔW_b⟩_F = Σ_ij σa_i P_ij σb_j Q_ij          (a trace identity on small matrices)
//   ‖ΔW_a − ΔW_b‖_F  = the norm of the core of the stacked sum [ΔW_a, −ΔW_b] (no cancellation)
//   principal angles between range(ΔW_a) and range(ΔW_b): cosines = σ(P), sines = σ(U_b − U_a P)
//   (Björck & Golub 1973; sines for the small angles, where arccos loses half the digits);
//   the same with V for the row spaces.
// Only --signs forms the dense ΔW, one module at a time.
import { isDora, readFactors, type Adapter, type LoraModule } from "../formats/adapter/index.js";
import { InvalidInputError } from "../common/errors.js";
import { lowRankNorm, lowRankSvd, transpose, type LowRankTerm } from "../linalg/lowrank.js";
import { mapInLanes } from "../common/map-in-lanes.js";
import type { LinalgBackend, Mat } from "../linalg/types.js";

/** Singular values at or below this fraction of σ₁ do not span the column/row space (numerical rank). */
export const SUBSPACE_RTOL = 1e-10;

export interface ModuleDiff {
  name: string;
  shape: [number, number];
  rank_a: number;
  rank_b: number;
  norm_a: number;
  norm_b: number;
  /** ⟨ΔW_a, ΔW_b⟩ / (‖ΔW_a‖‖ΔW_b‖); null when either ΔW is zero. */
  cosine: number | null;
  /** ‖ΔW_a − ΔW_b‖ / ‖ΔW_a‖; null when ΔW_a is zero. */
  relative_difference: number | null;
  /** Radians, ascending: min(k_a, k_b) angles between the column spaces (k = numerical rank). */
  principal_angles_out: number[];
  /** Radians, ascending: the same between the row spaces. */
  principal_angles_in: number[];
  /** --signs: among entries non-zero in both ΔW, the fraction whose signs differ (TIES). */
  sign_conflict?: number;
}

export interface DiffReport {
  a: string;
  b: string;
  format_a: string;
  format_b: string;
  modules: ModuleDiff[];
  only_in_a: string[];
  only_in_b: string[];
  summary: { compared: number; mean_cosine: number | null; median_relative_difference: number | null; mean_sign_conflict?: number };
}

export interface DiffOptions {
  signs: boolean;
  onModule?: (i: number, n: number) => void;
}

function termOf(m: LoraModule, f: { A: Mat; B: Mat }): LowRankTerm {
  return { B: f.B, A: f.A, scale: m.scale };
}

/** The columns of U (out×k) and rows of Vt (k×in) whose σ exceed SUBSPACE_RTOL·σ₁. */
function numericalRank(S: Float64Array): number {
  const s1 = S.length ? S[0]! : 0;
  if (!(s1 > 0)) return 0;
  let k = 0;
  while (k < S.length && S[k]! > SUBSPACE_RTOL * s1) k++;
  return k;
}

/** The first k columns of a rows×cols row-major matrix. */
function leadingCols(m: Mat<Float64Array>, k: number): Mat<Float64Array> {
  const d = new Float64Array(m.rows * k);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < k; j++) d[i * k + j] = m.data[i * m.cols + j]!;
  return { rows: m.rows, cols: k, data: d };
}

/** The leading k1×k2 block of a row-major matrix. */
function leadingBlock(m: Mat<Float64Array>, k1: number, k2: number): Mat<Float64Array> {
  const d = new Float64Array(k1 * k2);
  for (let i = 0; i < k1; i++) d.set(m.data.subarray(i * m.cols, i * m.cols + k2), i * k2);
  return { rows: k1, cols: k2, data: d };
}

/** The first k rows, transposed: Vt (k'×in) → V_k (in×k). */
function leadingRowsT(m: Mat<Float64Array>, k: number): Mat<Float64Array> {
  const d = new Float64Array(m.cols * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < m.cols; j++) d[j * k + i] = m.data[i * m.cols + j]!;
  return { rows: m.cols, cols: k, data: d };
}

/**
 * Principal angles (radians, ascending) between range(X) and range(Y), X and Y with orthonormal
 * columns, given C = XᵀY. cos θ_i = σ_i(C) (descending); sin θ_i from the singular values of the
 * residual of the wider basis projected on the other (ascending). Each angle is taken from its
 * sine where cos² ≥ 1/2 (small angles) and from its cosine otherwise.
 */
export async function principalAngles(be: LinalgBackend, X: Mat<Float64Array>, Y: Mat<Float64Array>, C: Mat<Float64Array>): Promise<number[]> {
  const n = Math.min(X.cols, Y.cols);
  if (n === 0) return [];
  const cos = (await be.svd(C)).S;
  // Residual of the narrower basis after projecting on the wider one: its n singular values are the sines.
  const [wide, narrow, proj] = X.cols >= Y.cols ? [X, Y, C] : [Y, X, transpose(C)];
  const back = await be.gemm(wide, proj); // rows × narrow.cols
  const res = new Float64Array(narrow.data.length);
  for (let i = 0; i < res.length; i++) res[i] = narrow.data[i]! - back.data[i]!;
  // σ(res) = σ(R) for res = QR (Householder, backward stable like a dense SVD): the small SVD
  // replaces one of the tall residual, whose singular vectors are not needed
  const { R } = await be.qr({ rows: narrow.rows, cols: narrow.cols, data: res });
  const sinDesc = (await be.svd(R)).S;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const c = Math.min(1, Math.max(0, cos[i]!));
    const s = Math.min(1, Math.max(0, sinDesc[n - 1 - i] ?? 0));
    out.push(c * c >= 0.5 ? Math.asin(s) : Math.acos(c));
  }
  return out;
}

/** TIES sign conflict of two dense ΔW (entries non-zero in both whose signs differ / entries non-zero in both). */
async function signConflict(be: LinalgBackend, ta: LowRankTerm, tb: LowRankTerm): Promise<number> {
  const da = await be.gemm(ta.B as Mat<Float64Array>, ta.A as Mat<Float64Array>, { alpha: ta.scale });
  const db = await be.gemm(tb.B as Mat<Float64Array>, tb.A as Mat<Float64Array>, { alpha: tb.scale });
  let both = 0,
    differ = 0;
  for (let i = 0; i < da.data.length; i++) {
    const x = da.data[i]!,
      y = db.data[i]!;
    if (x !== 0 && y !== 0) {
      both++;
      if (x > 0 !== y > 0) differ++;
    }
  }
  return both === 0 ? 0 : differ / both;
}

export async function diffModule(
  be: LinalgBackend,
  name: string,
  ma: LoraModule,
  fa: { A: Mat; B: Mat },
  mb: LoraModule,
  fb: { A: Mat; B: Mat },
  signs: boolean,
): Promise<ModuleDiff> {
  const ta = termOf(ma, fa),
    tb = termOf(mb, fb);
  const [sa, sb] = [await lowRankSvd(be, ta), await lowRankSvd(be, tb)];
  const ka = numericalRank(sa.S),
    kb = numericalRank(sb.S);
  const Ua = leadingCols(sa.U, ka),
    Ub = leadingCols(sb.U, kb);
  const Va = leadingRowsT(sa.Vt, ka),
    Vb = leadingRowsT(sb.Vt, kb);
  const na = Math.hypot(...sa.S),
    nb = Math.hypot(...sb.S);
  let cosine: number | null = null;
  let anglesOut: number[] = [],
    anglesIn: number[] = [];
  // ⟨ΔW_a, ΔW_b⟩ over every singular pair (U_aᵀU_b and V_aᵀV_b in full, ra×rb, so no σ is left out)
  // for the difference's norm; the cosine and the angles take the leading ka×kb block of the same products.
  let dot = 0;
  if (na > 0 && nb > 0) {
    const ra = sa.S.length,
      rb = sb.S.length;
    const Pf = await be.gemm(sa.U, sb.U, { transA: true, finite: true }),
      Qf = await be.gemm(sa.Vt, sb.Vt, { transB: true, finite: true });
    let inner = 0;
    for (let i = 0; i < ra; i++)
      for (let j = 0; j < rb; j++) {
        const v = sa.S[i]! * Pf.data[i * rb + j]! * sb.S[j]! * Qf.data[i * rb + j]!;
        dot += v;
        if (i < ka && j < kb) inner += v;
      }
    cosine = Math.max(-1, Math.min(1, inner / (na * nb)));
    anglesOut = await principalAngles(be, Ua, Ub, leadingBlock(Pf, ka, kb));
    anglesIn = await principalAngles(be, Va, Vb, leadingBlock(Qf, ka, kb));
  }
  // ‖ΔW_a − ΔW_b‖² = ‖ΔW_a‖² + ‖ΔW_b‖² − 2⟨ΔW_a, ΔW_b⟩ keeps ~10 digits while the difference is above
  // 1e-4 of ‖ΔW_a‖² + ‖ΔW_b‖²; below that (nearly equal adapters) it is taken from the core of the
  // stacked [ΔW_a, −ΔW_b], which does not cancel (docs/algorithms.md §11).
  let rel: number | null = null;
  if (na > 0) {
    const size2 = na * na + nb * nb;
    const d2 = size2 - 2 * dot;
    const dn = d2 > 1e-4 * size2 ? Math.sqrt(d2) : await lowRankNorm(be, [ta, { ...tb, scale: -tb.scale }]);
    rel = dn / na;
  }
  return {
    name,
    shape: [ma.out, ma.in],
    rank_a: ma.rank,
    rank_b: mb.rank,
    norm_a: na,
    norm_b: nb,
    cosine,
    relative_difference: rel,
    principal_angles_out: anglesOut,
    principal_angles_in: anglesIn,
    ...(signs ? { sign_conflict: await signConflict(be, ta, tb) } : {}),
  };
}

function refuseDora(a: Adapter): void {
  if (isDora(a))
    throw new InvalidInputError(`${a.source}: a DoRA adapter: its ΔW depends on the base weight (magnitude vector), so it cannot be compared from the factors`);
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((x, y) => x - y);
  const h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

/** Pairs the modules of two adapters by their format-independent key and compares each pair. */
export async function diffAdapters(a: Adapter, b: Adapter, be: LinalgBackend, o: DiffOptions): Promise<DiffReport> {
  refuseDora(a);
  refuseDora(b);
  const byKey = new Map(b.modules.map((m) => [m.matchKey, m]));
  const aKeys = new Set(a.modules.map((m) => m.matchKey));
  const pairs = a.modules.filter((m) => byKey.has(m.matchKey)).map((m) => [m, byKey.get(m.matchKey)!] as const);
  // Nothing to compare is not an answer of 0 differences: the two were not made for one base (or one
  // names fused layers the other splits), and a report of "0 modules compared" would pass silently.
  if (pairs.length === 0 && a.modules.length > 0 && b.modules.length > 0)
    throw new InvalidInputError(
      `${a.source} and ${b.source} have no module in common (${a.modules.length} and ${b.modules.length} modules, e.g. ${a.modules[0]!.name} and ${b.modules[0]!.name}): not adapters of one base`,
      { hint: "lora inspect each to see its module names" },
    );
  for (const [ma, mb] of pairs) {
    if (ma.out !== mb.out || ma.in !== mb.in) {
      throw new InvalidInputError(`module ${ma.name}: ${a.source} has ΔW ${ma.out}×${ma.in}, ${b.source} has ${mb.out}×${mb.in}: not adapters of one base`);
    }
  }
  // Modules side by side, each on one BLAS thread (its QRs and SVDs are too small for two).
  let done = 0;
  const modules = await be.withLanes((lanes) =>
    mapInLanes(pairs, lanes, async ([ma, mb]) => {
      const [fa, fb] = [await readFactors(a, ma, "f64"), await readFactors(b, mb, "f64")];
      const d = await diffModule(be, ma.name, ma, fa, mb, fb, o.signs);
      o.onModule?.(++done, pairs.length);
      return d;
    }),
  );
  const cos = modules.map((m) => m.cosine).filter((c): c is number => c !== null);
  const rel = modules.map((m) => m.relative_difference).filter((c): c is number => c !== null);
  const sc = modules.map((m) => m.sign_conflict).filter((c): c is number => c !== undefined);
  return {
    a: a.source,
    b: b.source,
    format_a: a.format,
    format_b: b.format,
    modules,
    only_in_a: a.modules.filter((m) => !byKey.has(m.matchKey)).map((m) => m.name),
    only_in_b: b.modules.filter((m) => !aKeys.has(m.matchKey)).map((m) => m.name),
    summary: {
      compared: modules.length,
      mean_cosine: cos.length ? cos.reduce((x, y) => x + y, 0) / cos.length : null,
      median_relative_difference: median(rel),
      ...(o.signs ? { mean_sign_conflict: sc.length ? sc.reduce((x, y) => x + y, 0) / sc.length : 0 } : {}),
    },
  };
}
