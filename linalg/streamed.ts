// The streamed full-model operations of LinalgBackend (mergeWeight, weightDelta, sketch) in
// TypeScript over any backend's dense operations: the js backend's implementation, and the
// reference the native kernels (native/src/common/streamed.h) follow step for step, so that a
// backend's outputs do not depend on which of the two ran.
import { decodeToFloat32 } from "../common/dtype.js";
import { f32BitsToBf16Bits, f32BitsToF16Bits } from "../common/half.js";
import { toF64 } from "./lowrank.js";
import type { FloatArray, LinalgBackend, Mat, MergeWeightInput, MergeWeightResult, ModelDType, SketchInput, SketchResult, WeightDeltaResult } from "./types.js";

/** Rows of B multiplied at a time: bounds the dense block to ROWS×in floats (the native kernel's kMergeRows). */
const ROWS = 64;

function decodeModel(dtype: ModelDType, bytes: Uint8Array): Float32Array {
  if (dtype === "BF16") {
    const n = bytes.byteLength / 2;
    const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
    const out = new Float32Array(n),
      bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = h[i]! << 16;
    return out;
  }
  return Float32Array.from(decodeToFloat32(dtype, bytes, { mayAlias: true }));
}

function firstBad(v: Float32Array): number {
  for (let i = 0; i < v.length; i++) if (v[i]! - v[i]! !== 0) return i;
  return -1;
}

/** Float32 values → bytes of `dtype` written into `dst` (ties to even). */
function encodeInto(dtype: ModelDType, v: Float32Array, dst: Uint8Array): void {
  if (dtype === "F32") {
    dst.set(new Uint8Array(v.buffer, v.byteOffset, v.length * 4));
    return;
  }
  const bits = new Uint32Array(v.buffer, v.byteOffset, v.length);
  const out = new Uint16Array(dst.buffer, dst.byteOffset, v.length);
  if (dtype === "BF16") for (let i = 0; i < v.length; i++) out[i] = f32BitsToBf16Bits(bits[i]!);
  else for (let i = 0; i < v.length; i++) out[i] = f32BitsToF16Bits(bits[i]!);
}

/** W' = encode(decode(W) + Σ coef·B·A), the product a block of rows of B at a time. */
export async function mergeWeightOn(be: LinalgBackend, x: MergeWeightInput): Promise<MergeWeightResult> {
  const W = decodeModel(x.dtype, x.data);
  const bad = firstBad(W);
  if (bad >= 0) return { kind: "base-non-finite", index: bad, value: W[bad]! };
  const out = x.out,
    inn = x.in;
  for (const term of x.terms) {
    const r = term.r;
    const A: Mat<Float32Array> = { rows: r, cols: inn, data: term.A };
    for (let i0 = 0; i0 < out; i0 += ROWS) {
      const n = Math.min(ROWS, out - i0);
      const Bb: Mat<Float32Array> = { rows: n, cols: r, data: term.B.subarray(i0 * r, (i0 + n) * r) };
      const D = (await be.gemm(Bb, A, { alpha: term.coef })).data; // n×in
      if (!x.transposed) {
        const off = i0 * inn;
        for (let k = 0; k < n * inn; k++) W[off + k] = W[off + k]! + D[k]!;
      } else {
        for (let i = 0; i < n; i++) for (let j = 0; j < inn; j++) W[j * out + i0 + i] = W[j * out + i0 + i]! + D[i * inn + j]!;
      }
    }
  }
  const over = firstBad(W);
  if (over >= 0) return { kind: "overflow", index: over };
  encodeInto(x.dtype, W, x.data);
  return { kind: "done" };
}

/**
 * delta = tuned − base (float32), norm2In + Σ delta² in float64: element i of the call into running
 * sum i mod 8, the eight added in a fixed order at the end (the native kernel's order: one running
 * sum would be a chain of dependent additions).
 */
export function weightDeltaTs(tuned: Uint8Array, base: Uint8Array, dtype: ModelDType, delta: Float32Array, norm2In: number): WeightDeltaResult {
  const t = decodeModel(dtype, tuned),
    b = decodeModel(dtype, base);
  const lane = new Float64Array(8);
  for (let i = 0; i < delta.length; i++) {
    const d = t[i]! - b[i]!;
    delta[i] = d;
    if (d - d !== 0) {
      const which = t[i]! - t[i]! !== 0 ? "tuned" : b[i]! - b[i]! !== 0 ? "base" : "difference";
      return { norm2: norm2In, firstNonFinite: i, which, value: which === "tuned" ? t[i]! : which === "base" ? b[i]! : delta[i]! };
    }
    lane[i & 7] += delta[i]! * delta[i]!;
  }
  const norm2 = norm2In + (lane[0]! + lane[1]! + (lane[2]! + lane[3]!) + (lane[4]! + lane[5]! + (lane[6]! + lane[7]!)));
  return { norm2, firstNonFinite: -1, which: null, value: 0 };
}

/**
 * The products by M that sketchFrom's steps take, one pass over M each (denseProducts: a matrix in
 * memory; a matrix read in row panels takes sketchPaired's PairedProducts instead).
 */
export interface MatrixProducts {
  readonly rows: number;
  readonly cols: number;
  /** M·X (rows×ℓ) for X cols×ℓ, in M's precision. */
  times(X: Mat): Promise<Mat>;
  /** Mᵀ·Q (cols×ℓ) for Q rows×ℓ, in M's precision. */
  timesT(Q: Mat): Promise<Mat>;
}

export function denseProducts(be: LinalgBackend, m: Mat): MatrixProducts {
  return { rows: m.rows, cols: m.cols, times: (X) => be.gemm(m, X), timesT: (Q) => be.gemm(m, Q, { transA: true }) };
}

/**
 * The adaptive range finder (linalg/truncated-svd.ts explains the stopping rule): Q = qr(MΩ);
 * then, until the estimated excess is below half the allowed one (or maxIters), Z = MᵀQ, its SVD
 * in float64, Q = qr(M·qr(Z).Q). Products in M's precision.
 */
export async function sketchOn(be: LinalgBackend, x: SketchInput): Promise<SketchResult> {
  const omega: Mat = { rows: x.omega.rows, cols: x.omega.cols, data: x.omega.data as FloatArray };
  const M = denseProducts(be, x.m);
  return sketchFrom(be, M, await M.times(omega), x);
}

/** The stopping rule of the range finder: the captured energy e_q of each check in, the excess estimate out. */
class Convergence {
  private prev: number | null = null;
  private prevDelta: number | null = null;

  constructor(private readonly x: Omit<SketchInput, "m" | "omega">) {}

  /** After check q with the eigenvalues λ of ZᵀZ: whether to stop, with err2 and the excess estimate. */
  check(lambda: ArrayLike<number>, q: number): { stop: boolean; excess: number; err2: number } {
    const { t, allowed, floor, norm2, maxIters } = this.x;
    let e = 0;
    for (let i = 0; i < t; i++) e += Math.max(lambda[i]!, 0);
    const err2 = Math.max(norm2 - e, 0);
    let excess = Infinity;
    if (this.prev !== null) {
      const delta = Math.max(e - this.prev, 0);
      const rho = this.prevDelta !== null && this.prevDelta > 0 ? Math.min(Math.max(delta / this.prevDelta, 0.5), 0.99) : 0.5;
      excess = (delta * rho) / (1 - rho);
      this.prevDelta = delta;
    }
    this.prev = e;
    return { stop: excess <= 0.5 * allowed * err2 + floor || q >= maxIters, excess, err2 };
  }
}

/** A check of the stopping rule: the captured energy from the eigenvalues of ZᵀZ (ℓ×ℓ, float64). */
async function checkZ(be: LinalgBackend, rule: Convergence, Zd: Mat<Float64Array>, q: number): Promise<{ stop: boolean; excess: number; err2: number }> {
  return rule.check((await be.eigSym(await be.gemm(Zd, Zd, { transA: true }))).values, q);
}

/** The sketch's result from its last Q and Z = MᵀQ (float64): the SVD of Z, once. */
async function finishSketch(
  be: LinalgBackend,
  Q: Mat,
  Zd: Mat<Float64Array>,
  q: number,
  c: { excess: number; err2: number },
  allowed: number,
): Promise<SketchResult> {
  const s = await be.svd(Zd);
  const sigma = Float64Array.from(s.S, (v) => Math.max(v, 0));
  return {
    Q: toF64(Q),
    Uz: s.U as Mat<Float64Array>,
    VzT: s.Vt as Mat<Float64Array>,
    sigma,
    iters: q,
    excess2: Number.isFinite(c.excess) ? c.excess : c.err2,
    floorLimited: c.excess > 0.5 * allowed * c.err2,
  };
}

/** The range finder from its first product Y = MΩ (sketchOn). */
export async function sketchFrom(be: LinalgBackend, M: MatrixProducts, Y: Mat, x: Omit<SketchInput, "m" | "omega">): Promise<SketchResult> {
  let Q = (await be.qr(Y)).Q;
  const rule = new Convergence(x);
  for (let q = 0; ; q++) {
    const Z = await M.timesT(Q); // k×ℓ = Bᵀ
    // The captured energy of the leading t from the eigenvalues of ZᵀZ (ℓ×ℓ, float64); the SVD of
    // Z itself (k×ℓ) only once the iterations stop.
    const Zd = toF64(Z);
    const c = await checkZ(be, rule, Zd, q);
    if (c.stop) return finishSketch(be, Q, Zd, q, c, x.allowed);
    Q = (await be.qr(await M.times((await be.qr(Z)).Q))).Q;
  }
}

/** Products by M that come two to a pass: Y = M·X and G = Mᵀ·Y from one read of M (row-panels.ts). */
export interface PairedProducts {
  readonly rows: number;
  readonly cols: number;
  /** Y = M·X (rows×ℓ) and G = Mᵀ·Y (cols×ℓ), in M's precision, both valid until the next call; ‖M‖² (float64) of the pass. */
  timesAndGram(X: Mat): Promise<{ Y: Mat; G: Mat; norm2: number }>;
  /** Mᵀ·Q (cols×ℓ) for Q rows×ℓ, in M's precision (a pass of its own). */
  timesT(Q: Mat): Promise<Mat>;
}

/**
 * Above this condition number of R (Y = QR) a check's Z = G·R⁻¹ is not trusted: the float32 error
 * of G, ~1e-7·‖M‖·‖Y‖, is magnified by ‖R⁻¹‖ = 1/σ_min(Y), so Z is formed by its own pass, MᵀQ.
 */
const MAX_COND_R = 1e3;

/**
 * The same iterates as sketchFrom, one pass over M per iteration instead of two (docs/algorithms.md
 * §13), for a matrix re-read for every product: with X = Ω, then X = qr(Z).Q, one pass gives
 * Y = M·X and G = Mᵀ·Y; Y = Q·R, and Z = MᵀQ = Mᵀ·Y·R⁻¹ = G·R⁻¹ (R⁻¹ in float64, the product in
 * M's precision). When R is too ill-conditioned for that (MAX_COND_R: M of lower rank than ℓ, say),
 * Z is a pass of its own. ‖M‖² is x.norm2, or the first pass's; it is returned with the sketch.
 */
export async function sketchPaired(
  be: LinalgBackend,
  M: PairedProducts,
  omega: Mat,
  x: Omit<SketchInput, "m" | "omega" | "norm2" | "floor"> & { norm2?: number; floorRel: number },
): Promise<SketchResult & { norm2: number }> {
  let rule: Convergence | null = null,
    norm2 = x.norm2 ?? 0;
  let X = omega;
  for (let q = 0; ; q++) {
    const { Y, G, norm2: passNorm2 } = await M.timesAndGram(X);
    if (rule === null) {
      // ‖M‖² from the first pass when the caller did not have it.
      norm2 = x.norm2 ?? passNorm2;
      rule = new Convergence({ ...x, norm2, floor: x.floorRel * norm2 });
    }
    const { Q, R } = await be.qr(Y);
    const l = R.cols;
    if (norm2 === 0) {
      // M = 0: nothing to iterate on (Z = MᵀQ = 0).
      const Zd: Mat<Float64Array> = { rows: M.cols, cols: l, data: new Float64Array(M.cols * l) };
      return { ...(await finishSketch(be, Q, Zd, q, { excess: 0, err2: 0 }, x.allowed)), norm2 };
    }
    const Rd = toF64(R);
    const sv = (await be.svd(Rd)).S;
    let Z: Mat;
    if (sv[l - 1]! > 0 && sv[0]! <= MAX_COND_R * sv[l - 1]!) Z = await solveUpperRight(be, G, Rd);
    else Z = await M.timesT(Q);
    // From here the steps of sketchFrom: the check on ZᵀZ, the SVD of Z at the end, X = qr(Z).Q.
    const Zd = toF64(Z);
    const c = await checkZ(be, rule, Zd, q);
    if (c.stop) return { ...(await finishSketch(be, Q, Zd, q, c, x.allowed)), norm2 };
    X = (await be.qr(Z)).Q;
  }
}

/**
 * Z with Z·R = G (k×ℓ), R upper triangular with a non-zero diagonal: R⁻¹ by back substitution
 * (ℓ×ℓ, float64), then one product G·R⁻¹ by the backend in G's precision.
 */
async function solveUpperRight(be: LinalgBackend, G: Mat, R: Mat<Float64Array>): Promise<Mat> {
  const l = R.cols,
    r = R.data;
  const inv = new Float64Array(l * l);
  for (let j = l - 1; j >= 0; j--) {
    inv[j * l + j] = 1 / r[j * l + j]!;
    for (let c = j + 1; c < l; c++) {
      // (R⁻¹)[j][c] = −(Σ_{p=j+1..c} R[j][p]·(R⁻¹)[p][c]) / R[j][j]
      let v = 0;
      for (let p = j + 1; p <= c; p++) v += r[j * l + p]! * inv[p * l + c]!;
      inv[j * l + c] = -v / r[j * l + j]!;
    }
  }
  return be.gemm(G, { rows: l, cols: l, data: G.data instanceof Float32Array ? Float32Array.from(inv) : inv });
}
