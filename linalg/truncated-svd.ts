// The best rank-t approximation of a dense matrix to a stated accuracy (lora extract): exact by a
// full SVD, or by randomized subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1)
// with as many power iterations as the accuracy needs. The iterations are the backend's sketch
// operation; the final factors and the error measure are composed here from gemm and svd.
//
// Accuracy (README "extract"): with Q the orthonormal basis of the
// sketch and B = QᵀM = Ũ Σ̃ Vᵀ, the approximation Q Ũ_t Σ̃_t V_tᵀ is the orthogonal projection of M
// onto span(QŨ_t), so its squared error is exactly ‖M‖² − Σ_{i≤t} σ̃ᵢ² (no extra pass). The
// Eckart–Young optimum is ‖M‖² − Σ_{i≤t} σᵢ²; the captured energy e_q = Σ_{i≤t} σ̃ᵢ² rises
// towards Σ_{i≤t} σᵢ² geometrically with the iterations q, so its last increments give an
// a-posteriori estimate of the excess: δ_q·ρ/(1−ρ), ρ = δ_q/δ_{q−1} (ρ taken ≥ ½). Iterations stop
// when that estimate is below half the allowed excess, (1+tol)² − 1 times the squared error.
// Each half-step's Z = MᵀQ is Bᵀ itself, so the check costs one SVD of a k×ℓ matrix, no extra pass.
// The iterations run in the backend's sketch operation (linalg/streamed.ts on js, one native call
// on cpu/cuda: common/streamed.h), the same steps on every backend; for a matrix read in row panels
// they take one pass an iteration (streamed.ts sketchPaired: Z = G·R⁻¹, docs/algorithms.md §13).
import { toF64 } from "./lowrank.js";
import { Rng } from "./random.js";
import { densePanels, isRowPanelSource, panelProducts, type RowPanelSource } from "./row-panels.js";
import { flipSigns } from "./signs.js";
import { sketchPaired } from "./streamed.js";
import type { LinalgBackend, Mat, SketchResult } from "./types.js";

export interface TruncatedSvdOptions {
  /** Target rank t (capped at min(rows, cols)). One of rank or energy. */
  rank?: number;
  /** Fewest components holding this fraction of ‖M‖²_F (0 < F ≤ 1). */
  energy?: number;
  /** Full SVD (float64) instead of the randomized route. */
  exact?: boolean;
  /** Allowed relative excess of the Frobenius error over the optimum. Default 1e-3 (0.1%). */
  tolerance?: number;
  /** Oversampling p: ℓ = t + p. Default max(10, ⌈t/4⌉). */
  oversample?: number;
  /** Cap on power iterations. Default 12. */
  maxPowerIters?: number;
  seed?: number;
  /** ‖M‖²_F when the caller has it (float64 accumulation); else computed here. */
  norm2?: number;
}

export interface TruncatedSvd {
  /** rows×t, orthonormal columns, signs as linalg/signs.ts. */
  U: Mat<Float64Array>;
  /** t values, descending. */
  S: Float64Array;
  /** t×cols, orthonormal rows. */
  Vt: Mat<Float64Array>;
  /** ‖M‖²_F */
  norm2: number;
  /** ‖M − U S Vt‖²_F (exact up to rounding, see the header; formed directly when below 1e-4·‖M‖²). */
  err2: number;
  /**
   * A-posteriori estimate of err2 − (the optimum's squared error); 0 for the exact route; null
   * when err2 is below what the float32 products resolve (≈1e-6·‖M‖²): the approximation is then
   * within rounding of M, and its excess over the optimum cannot be told from rounding.
   */
  excess2: number | null;
  /** Every σ computed: all of them (exact) or the ℓ of the sketch (lower bounds of the true ones). */
  sigma: Float64Array;
  /** Power iterations run (0 for the exact route). */
  powerIters: number;
  exact: boolean;
}

function frob2(m: Mat): number {
  let s = 0;
  const d = m.data;
  for (let i = 0; i < d.length; i++) s += d[i]! * d[i]!;
  return s;
}

/** Fewest t with Σ_{i<t} σᵢ² ≥ F·total (null if the σ given do not reach it). */
function rankForEnergy(S: ArrayLike<number>, fraction: number, total: number): number | null {
  if (total === 0) return 1;
  let acc = 0;
  for (let i = 0; i < S.length; i++) {
    acc += S[i]! ** 2;
    if (acc >= fraction * total * (1 - 1e-12)) return i + 1;
  }
  return null;
}

function tailSum2(S: ArrayLike<number>, from: number): number {
  let s = 0;
  for (let i = from; i < S.length; i++) s += S[i]! ** 2;
  return s;
}

/** Columns [0, t) of a row-major matrix. */
function leadingCols(m: Mat<Float64Array>, t: number): Mat<Float64Array> {
  const out = new Float64Array(m.rows * t);
  for (let i = 0; i < m.rows; i++) out.set(m.data.subarray(i * m.cols, i * m.cols + t), i * t);
  return { rows: m.rows, cols: t, data: out };
}

function finish(U: Mat<Float64Array>, S: Float64Array, Vt: Mat<Float64Array>): { U: Mat<Float64Array>; S: Float64Array; Vt: Mat<Float64Array> } {
  flipSigns(U, Vt);
  return { U, S, Vt };
}

async function exactRoute(be: LinalgBackend, m: Mat, o: TruncatedSvdOptions, norm2: number): Promise<TruncatedSvd> {
  const s = await be.svd(toF64(m));
  const sigma = Float64Array.from(s.S, (x) => Math.max(x, 0));
  const t = Math.max(1, Math.min(o.rank ?? rankForEnergy(sigma, o.energy!, norm2) ?? sigma.length, sigma.length));
  const Vt = { rows: t, cols: s.Vt.cols, data: Float64Array.from(s.Vt.data.subarray(0, t * s.Vt.cols)) };
  const f = finish(leadingCols(s.U, t), sigma.slice(0, t), Vt);
  return { ...f, norm2, err2: tailSum2(sigma, t), excess2: 0, sigma, powerIters: 0, exact: true };
}

/**
 * Best rank-t approximation of the rows×cols matrix m (float32 or float64; the products run in
 * its precision, the small SVDs in float64). With `energy`, t is the fewest components holding
 * that fraction of ‖m‖² (the sketch grows until its σ̃ reach it). m may be a float32 matrix read a
 * block of rows at a time (linalg/row-panels.ts): each iteration is then one pass over its rows
 * (the first also gives ‖m‖² when o.norm2 is not given), and only the exact route, or a sketch as
 * wide as the matrix, holds it whole.
 */
export async function truncatedSvd(be: LinalgBackend, m: Mat | RowPanelSource, o: TruncatedSvdOptions): Promise<TruncatedSvd> {
  if ((o.rank === undefined) === (o.energy === undefined)) throw new Error("truncatedSvd: give exactly one of rank and energy");
  if (o.rank !== undefined && !(Number.isInteger(o.rank) && o.rank >= 1)) throw new Error(`truncatedSvd: rank must be a positive integer (got ${o.rank})`);
  const d = m.rows,
    k = m.cols,
    minDim = Math.min(d, k);
  const panels = isRowPanelSource(m) ? m : null;
  // A streamed matrix's ‖M‖² comes with its first pass: the sketch's, or the exact route's read.
  let norm2: number | null = o.norm2 ?? (panels ? null : frob2(m as Mat));
  const exact = async (): Promise<TruncatedSvd> => {
    if (!panels) return exactRoute(be, m as Mat, o, norm2!);
    const whole = await densePanels(panels);
    return exactRoute(be, whole.m, o, norm2 ?? whole.norm2);
  };
  if (o.exact) return exact();
  const tol = o.tolerance ?? 1e-3;
  const allowed = (1 + tol) ** 2 - 1;
  // Rounding floor of the captured energy, relative to ‖M‖²: products in the matrix's precision.
  const floorRel = panels || (m as Mat).data instanceof Float32Array ? 1e-6 : 1e-13;
  let t = o.rank !== undefined ? Math.min(o.rank, minDim) : Math.min(minDim, 16);
  const draws = new TestMatrices(o.seed ?? 0);
  for (;;) {
    const p = o.oversample ?? Math.max(10, Math.ceil(t / 4));
    const l = Math.min(t + p, minDim);
    if (l >= minDim) return exact();
    const r = await sketch(be, m, t, l, draws, { allowed, floorRel, norm2, maxIters: o.maxPowerIters ?? 12 });
    norm2 = r.norm2;
    if (o.energy !== undefined) {
      const te = rankForEnergy(r.sigma.subarray(0, l - p), o.energy, norm2);
      if (te === null) {
        t = Math.min(minDim, 2 * t);
        continue;
      }
      if (te < t) return cut(be, m, r, te, norm2);
    }
    return cut(be, m, r, t, norm2);
  }
}

/** Q (d×ℓ), the SVD of Z = MᵀQ = Bᵀ (k×ℓ): Z = Uz Σ Vzᵀ, so B = Vz Σ Uzᵀ; iterations and the excess estimate. */
type Sketch = SketchResult;

/** Every block of rows of m, in order (a dense matrix ROWS rows at a time). */
async function eachBlock(m: Mat | RowPanelSource, fn: (r0: number, block: Mat) => Promise<void>): Promise<void> {
  if (isRowPanelSource(m)) {
    await m.each(fn);
    return;
  }
  const ROWS = 256;
  for (let i0 = 0; i0 < m.rows; i0 += ROWS) {
    const n = Math.min(ROWS, m.rows - i0);
    await fn(i0, { rows: n, cols: m.cols, data: m.data.subarray(i0 * m.cols, (i0 + n) * m.cols) });
  }
}

/**
 * ‖m − U·diag(S)·Vt‖²_F formed a block of rows at a time in float64: for small errors, where
 * ‖m‖² − Σσ̃² would lose every digit to cancellation (products in float32 leave ~1e-7‖m‖²).
 */
async function residual2(be: LinalgBackend, m: Mat | RowPanelSource, U: Mat<Float64Array>, S: Float64Array, Vt: Mat<Float64Array>): Promise<number> {
  const t = S.length;
  let sum = 0;
  await eachBlock(m, async (i0, block) => {
    const n = block.rows;
    const US = new Float64Array(n * t);
    for (let i = 0; i < n; i++) for (let c = 0; c < t; c++) US[i * t + c] = U.data[(i0 + i) * t + c]! * S[c]!;
    const R = (await be.gemm({ rows: n, cols: t, data: US }, Vt)).data;
    for (let j = 0; j < n * block.cols; j++) {
      const x = block.data[j]! - R[j]!;
      sum += x * x;
    }
  });
  return sum;
}

/** Relative squared error below which err2 is measured directly (residual2) rather than by difference. */
const DIRECT_BELOW = 1e-4;

/** Keep t components: U = Q·Vz[:, :t], Vt = Uz[:, :t]ᵀ. */
async function cut(be: LinalgBackend, m: Mat | RowPanelSource, r: Sketch, t: number, norm2: number): Promise<TruncatedSvd> {
  const l = r.sigma.length,
    k = r.Uz.rows;
  // Q·Vz[:, :t] directly (the first t rows of Vzᵀ), not the rows×l product and then a copy of its columns.
  const U = (await be.gemm(r.Q, { rows: t, cols: r.VzT.cols, data: r.VzT.data.subarray(0, t * r.VzT.cols) }, { transB: true })) as Mat<Float64Array>;
  const Vt = new Float64Array(t * k);
  // Row by row of Vt (written in order, Uz read with a stride of ℓ): the other order writes with a stride of k.
  for (let c = 0; c < t; c++) for (let j = 0; j < k; j++) Vt[c * k + j] = r.Uz.data[j * l + c]!;
  const f = finish(U, r.sigma.slice(0, t), { rows: t, cols: k, data: Vt });
  let err2 = Math.max(norm2 - (tailSum2(r.sigma, 0) - tailSum2(r.sigma, t)), 0);
  let excess2: number | null = r.excess2;
  if (err2 < DIRECT_BELOW * norm2) {
    err2 = await residual2(be, m, f.U, f.S, f.Vt);
    if (r.floorLimited) excess2 = null;
  }
  return { ...f, norm2, err2, excess2, sigma: r.sigma, powerIters: r.iters, exact: false };
}

/**
 * The range finder of the header: by the backend's sketch operation for a matrix in memory (one
 * native call on cpu/cuda for float32 M), or over row panels (linalg/streamed.ts sketchPaired, one pass an iteration).
 */
async function sketch(
  be: LinalgBackend,
  m: Mat | RowPanelSource,
  t: number,
  l: number,
  draws: TestMatrices,
  c: { allowed: number; floorRel: number; norm2: number | null; maxIters: number },
): Promise<Sketch & { norm2: number }> {
  const k = m.cols;
  if (isRowPanelSource(m)) {
    const M = panelProducts(be, m);
    const omega: Mat<Float32Array> = { rows: k, cols: l, data: draws.next(k * l, true) as Float32Array };
    return sketchPaired(be, M, omega, { t, allowed: c.allowed, floorRel: c.floorRel, maxIters: c.maxIters, ...(c.norm2 !== null ? { norm2: c.norm2 } : {}) });
  }
  const norm2 = c.norm2!;
  const omega: Mat = { rows: k, cols: l, data: draws.next(k * l, m.data instanceof Float32Array) };
  const r = await be.sketch({ m, omega, t, allowed: c.allowed, floor: c.floorRel * norm2, norm2, maxIters: c.maxIters });
  return { ...r, norm2 };
}

/** First draws kept: (seed, size, precision) → the normals, read-only (the sketches only read Ω). */
const firstDraws: { seed: number; n: number; f32: boolean; data: Float32Array | Float64Array }[] = [];

/**
 * The Gaussian test matrices of one truncatedSvd call: draw i is the next n normals of Rng(seed),
 * so a seed gives the same Ω on every run. The first draw of the last two (seed, size, precision)
 * is kept: every weight of one shape starts from the same Ω, and drawing it costs ~20 ms for an
 * 8192×74 one (lora extract draws one per weight).
 */
class TestMatrices {
  private rng: Rng | null = null;
  private drawn: number[] = [];

  constructor(private readonly seed: number) {}

  next(n: number, f32: boolean): Float32Array | Float64Array {
    if (this.drawn.length === 0) {
      const hit = firstDraws.find((d) => d.seed === this.seed && d.n === n && d.f32 === f32);
      if (hit) {
        this.drawn.push(n);
        return hit.data;
      }
    }
    if (this.rng === null) {
      // A first draw served from the cache: replay it to reach this draw's place in the sequence.
      this.rng = new Rng(this.seed);
      for (const d of this.drawn) this.rng.normals(d);
    }
    const x = this.rng.normals(n);
    const data = f32 ? Float32Array.from(x) : x;
    if (this.drawn.length === 0) {
      firstDraws.unshift({ seed: this.seed, n, f32, data });
      firstDraws.length = Math.min(firstDraws.length, 2);
    }
    this.drawn.push(n);
    return data;
  }
}
