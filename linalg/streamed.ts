// The streamed full-model operations of LinalgBackend (mergeWeight, weightDelta, sketch) in
// TypeScript over any backend's dense operations: the js backend's implementation, and the
// reference the native kernels (native/src/common/streamed.h) follow step for step, so that a
// backend's outputs do not depend on which of the two ran.
import { decodeToFloat32 } from "../common/dtype.js";
import { f32BitsToBf16Bits, f32BitsToF16Bits } from "../common/half.js";
import { toF64 } from "./lowrank.js";
import type { FloatArray, LinalgBackend, Mat, MergeWeightInput, MergeWeightResult, ModelDType, SketchInput, SketchResult, WeightDeltaResult } from "./types.js";

/** Rows of B multiplied at a time: bounds the dense block to ROWS×in floats. */
const ROWS = 1024;

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

/** delta = tuned − base (float32), norm2In + Σ delta² in float64, element by element. */
export function weightDeltaTs(tuned: Uint8Array, base: Uint8Array, dtype: ModelDType, delta: Float32Array, norm2In: number): WeightDeltaResult {
  const t = decodeModel(dtype, tuned),
    b = decodeModel(dtype, base);
  let norm2 = norm2In;
  for (let i = 0; i < delta.length; i++) {
    const d = t[i]! - b[i]!;
    delta[i] = d;
    if (d - d !== 0) {
      const which = t[i]! - t[i]! !== 0 ? "tuned" : b[i]! - b[i]! !== 0 ? "base" : "difference";
      return { norm2, firstNonFinite: i, which, value: which === "tuned" ? t[i]! : which === "base" ? b[i]! : delta[i]! };
    }
    norm2 += delta[i]! * delta[i]!;
  }
  return { norm2, firstNonFinite: -1, which: null, value: 0 };
}

/**
 * The products by M that the range finder needs, whatever holds M: a dense matrix in memory
 * (denseProducts), or rows read a block at a time (linalg/row-panels.ts, lora extract's ΔW).
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

/** The range finder from its first product Y = MΩ (sketchOn; row-panels.ts, whose first pass also yields ‖M‖²). */
export async function sketchFrom(be: LinalgBackend, M: MatrixProducts, Y: Mat, x: Omit<SketchInput, "m" | "omega">): Promise<SketchResult> {
  const { t, allowed, floor, norm2, maxIters } = x;
  let Q = (await be.qr(Y)).Q;
  let prev: number | null = null,
    prevDelta: number | null = null;
  for (let q = 0; ; q++) {
    const Z = await M.timesT(Q); // k×ℓ = Bᵀ
    // The captured energy of the leading t from the eigenvalues of ZᵀZ (ℓ×ℓ, float64); the SVD of
    // Z itself (k×ℓ) only once the iterations stop.
    const Zd = toF64(Z);
    const lambda = (await be.eigSym(await be.gemm(Zd, Zd, { transA: true }))).values;
    let e = 0;
    for (let i = 0; i < t; i++) e += Math.max(lambda[i]!, 0);
    const err2 = Math.max(norm2 - e, 0);
    let excess = Infinity;
    if (prev !== null) {
      const delta = Math.max(e - prev, 0);
      const rho = prevDelta !== null && prevDelta > 0 ? Math.min(Math.max(delta / prevDelta, 0.5), 0.99) : 0.5;
      excess = (delta * rho) / (1 - rho);
      prevDelta = delta;
    }
    prev = e;
    if (excess <= 0.5 * allowed * err2 + floor || q >= maxIters) {
      const s = await be.svd(Zd);
      const sigma = Float64Array.from(s.S, (v) => Math.max(v, 0));
      return {
        Q: toF64(Q),
        Uz: s.U as Mat<Float64Array>,
        VzT: s.Vt as Mat<Float64Array>,
        sigma,
        iters: q,
        excess2: Number.isFinite(excess) ? excess : err2,
        floorLimited: excess > 0.5 * allowed * err2,
      };
    }
    Q = (await be.qr(await M.times((await be.qr(Z)).Q))).Q;
  }
}
