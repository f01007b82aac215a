// Adapts a raw addon (binding.ts) to LinalgBackend: shapes, lengths and finiteness are checked
// (checks.ts) before any call goes in (C++ trusts them), native failures come back as LoraErrors,
// and a non-finite output becomes a RuntimeFailure instead of a silent NaN (an InvalidInputError
// for the raw-factor operations, whose finite inputs can only overflow: checks.ts checkFusedOutput).
import { InvalidInputError } from "../../common/errors.js";
import type {
  BackendName,
  EigResult,
  FactorDType,
  FactorStats,
  FactorSpectrumInput,
  FactorSpectrumResult,
  FloatArray,
  GramSide,
  KmeansLloydOptions,
  KmeansResult,
  LinalgBackend,
  Mat,
  QrResult,
  SvdResult,
  TruncateFactorsInput,
  TruncateFactorsResult,
  MergeWeightInput,
  MergeWeightResult,
  ModelDType,
  SketchInput,
  SketchResult,
  WeightDeltaResult,
} from "../types.js";
import { decodeToFloat32 } from "../../common/dtype.js";
import { FACTOR_DTYPES, type ComputeBinding, type RawSpectrumResult, type RawTruncateResult } from "./binding.js";
import { checkFinite, checkFusedOutput, checkMat, checkOutput, checkRawPair, checkShape, dtypeCode, fail, MAX_ELEMENTS, MODEL_CODES } from "./checks.js";

function zeros<T extends FloatArray>(proto: T, n: number): T {
  return (proto instanceof Float32Array ? new Float32Array(n) : new Float64Array(n)) as T;
}

function asType<T extends FloatArray>(proto: T, x: FloatArray): T {
  if (proto instanceof Float32Array) return (x instanceof Float32Array ? x : Float32Array.from(x)) as T;
  return (x instanceof Float64Array ? x : Float64Array.from(x)) as T;
}

// ---------------------------------------------------------------------------------------------
// Adapter

/** Wraps a raw binding as a LinalgBackend (exported for tests with fake bindings). */
export function adaptBinding(name: BackendName, binding: ComputeBinding, detail: string): LinalgBackend {
  const fs = binding.factorStats.bind(binding);
  const factorStats = async (raw: Uint8Array, dtype: FactorDType, rows: number, cols: number, side: GramSide): Promise<FactorStats> => {
    const d = FACTOR_DTYPES[dtype];
    if (!d) throw new InvalidInputError(`factorStats: dtype ${String(dtype)} is not one of F32, F16, BF16, F64`);
    if (!(raw instanceof Uint8Array)) throw new InvalidInputError("factorStats: raw must be a Uint8Array");
    if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0)
      throw new InvalidInputError(`factorStats: invalid shape ${String(rows)}×${String(cols)}`);
    if (raw.byteLength !== rows * cols * d.size)
      throw new InvalidInputError(`factorStats: ${rows}×${cols} ${dtype} needs ${rows * cols * d.size} bytes, got ${raw.byteLength}`);
    if (rows * cols > MAX_ELEMENTS) throw new InvalidInputError(`factorStats: ${rows}×${cols} exceeds ${MAX_ELEMENTS} elements, the native backends' limit`);
    if (side !== "gram-rows" && side !== "gram-cols") throw new InvalidInputError(`factorStats: side must be gram-rows or gram-cols`);
    let r: FactorStats;
    try {
      r = await fs(raw, d.code, rows, cols, side === "gram-rows");
    } catch (e) {
      fail(name, "factorStats", e);
    }
    if (r.firstNonFinite < 0) checkFusedOutput("factorStats", [r.gram]);
    return { data: r.data, gram: r.gram, firstNonFinite: r.firstNonFinite };
  };
  const tf = binding.truncateFactors.bind(binding);
  const truncateFactors = async (x: TruncateFactorsInput): Promise<TruncateFactorsResult> => {
    const { args, r } = checkRawPair("truncateFactors", x);
    const o = dtypeCode("truncateFactors", x.outDtype),
      t = x.rank;
    if (!(Number.isInteger(t) && t >= 1 && t <= r)) throw new InvalidInputError(`truncateFactors: rank ${String(t)} must be an integer in 1..${r}`);
    if (!Number.isFinite(x.scaleOut) || x.scaleOut === 0) throw new InvalidInputError("truncateFactors: scales must be finite (scaleOut ≠ 0)");
    if (x.grams !== undefined && !(x.grams instanceof Float64Array && x.grams.length === 2 * r * r && x.grams.every(Number.isFinite))) {
      throw new InvalidInputError(`truncateFactors: grams must be a finite Float64Array of 2·${r}² values`);
    }
    let res: RawTruncateResult;
    try {
      res = await tf(...args, t, x.scale, x.scaleOut, x.split === "balanced", o.code, !!x.productsInDouble, x.grams);
    } catch (e) {
      fail(name, "truncateFactors", e);
    }
    if (res.kind === 1) return { kind: "fallback" };
    if (res.kind === 2) return { kind: "non-finite", factor: res.badFactor === 0 ? "A" : "B", index: res.badIndex, value: res.badValue };
    checkFusedOutput("truncateFactors", [res.S, [res.norm2, res.err2, res.resid2]]);
    return { kind: "done", B: res.B, A: res.A, S: res.S, norm2: res.norm2, err2: res.err2, resid2: res.resid2, productBits: res.productBits === 32 ? 32 : 64 };
  };
  const fsp = binding.factorSpectrum.bind(binding);
  const spectrumOf = (x: FactorSpectrumInput, res: RawSpectrumResult, op: string): FactorSpectrumResult => {
    if (res.kind === 1) return { kind: "fallback" };
    if (res.kind === 2) return { kind: "non-finite", factor: res.badFactor === 0 ? "A" : "B", index: res.badIndex, value: res.badValue };
    checkFusedOutput(op, [res.S, [res.norm2]]);
    return { kind: "done", S: res.S, norm2: res.norm2, ...(x.keepGrams && res.grams ? { grams: res.grams } : {}) };
  };
  const factorSpectrum = async (x: FactorSpectrumInput): Promise<FactorSpectrumResult> => {
    const { args } = checkRawPair("factorSpectrum", x);
    let res: RawSpectrumResult;
    try {
      res = await fsp(...args, x.scale, !!x.keepGrams);
    } catch (e) {
      fail(name, "factorSpectrum", e);
    }
    return spectrumOf(x, res, "factorSpectrum");
  };
  const fsps = binding.factorSpectra.bind(binding);
  const factorSpectra = async (xs: FactorSpectrumInput[]): Promise<FactorSpectrumResult[]> => {
    if (xs.length === 0) return [];
    const args = xs.map((x) => [...checkRawPair("factorSpectra", x).args, x.scale, !!x.keepGrams] as Parameters<typeof fsps>[0][number]);
    let res: RawSpectrumResult[];
    try {
      res = await fsps(args);
    } catch (e) {
      fail(name, "factorSpectra", e);
    }
    return res.map((r, i) => spectrumOf(xs[i]!, r, "factorSpectra"));
  };
  const backend: LinalgBackend = {
    name,
    detail,
    factorStats,
    truncateFactors,
    factorSpectrum,
    factorSpectra,
    // One lane until the caller (linalg/native.ts) sets the backend's own.
    withLanes: async <T>(fn: (lanes: number) => Promise<T>): Promise<T> => fn(1),

    async randomizedSvd<T extends FloatArray>(a: Mat<T>, omega: Mat<T>, powerIters: number, rank: number): Promise<SvdResult<T>> {
      checkMat("randomizedSvd", "A", a);
      checkMat("randomizedSvd", "the test matrix", omega);
      const l = omega.cols,
        t = rank;
      if (omega.rows !== a.cols) throw new InvalidInputError(`randomizedSvd: the test matrix has ${omega.rows} rows, A has ${a.cols} columns`);
      if (!(Number.isInteger(t) && t >= 1 && t <= l && l <= Math.min(a.rows, a.cols))) {
        throw new InvalidInputError(`randomizedSvd: need 1 ≤ rank (${String(t)}) ≤ ${l} ≤ min(${a.rows}, ${a.cols})`);
      }
      if (!Number.isInteger(powerIters) || powerIters < 0)
        throw new InvalidInputError(`randomizedSvd: power iterations must be an integer ≥ 0 (got ${String(powerIters)})`);
      const om = asType(a.data, omega.data);
      let r: { u: FloatArray; s: FloatArray; vt: FloatArray };
      try {
        r = await binding.randomizedSvd(a.data, a.rows, a.cols, om, l, powerIters, t);
      } catch (e) {
        fail(name, "randomizedSvd", e);
      }
      checkOutput(name, "randomizedSvd", [r.u, r.s, r.vt]);
      return { U: { rows: a.rows, cols: t, data: r.u as T }, S: r.s as T, Vt: { rows: t, cols: a.cols, data: r.vt as T } };
    },

    async mergeWeight(x: MergeWeightInput): Promise<MergeWeightResult> {
      const d = MODEL_CODES[x.dtype];
      if (d === undefined) throw new InvalidInputError(`mergeWeight: dtype ${String(x.dtype)} is not one of F32, F16, BF16`);
      if (!(Number.isInteger(x.out) && Number.isInteger(x.in) && x.out >= 1 && x.in >= 1) || x.out * x.in > MAX_ELEMENTS)
        throw new InvalidInputError(`mergeWeight: invalid shape ${String(x.out)}×${String(x.in)}`);
      if (!(x.data instanceof Uint8Array) || x.data.byteLength !== x.out * x.in * (d === 0 ? 4 : 2))
        throw new InvalidInputError(`mergeWeight: ${x.out}×${x.in} ${x.dtype} needs ${x.out * x.in * (d === 0 ? 4 : 2)} bytes`);
      for (const t of x.terms) {
        checkMat("mergeWeight", "B", { rows: x.out, cols: t.r, data: t.B });
        checkMat("mergeWeight", "A", { rows: t.r, cols: x.in, data: t.A });
        if (!(t.B instanceof Float32Array && t.A instanceof Float32Array)) throw new InvalidInputError("mergeWeight: factors must be Float32Array");
        if (!Number.isFinite(t.coef)) throw new InvalidInputError("mergeWeight: coefficients must be finite");
      }
      let r: { kind: number; index: number; value: number };
      try {
        r = await binding.mergeWeight(x.data, d, x.out, x.in, x.transposed, x.terms);
      } catch (e) {
        fail(name, "mergeWeight", e);
      }
      if (r.kind === 1) return { kind: "base-non-finite", index: r.index, value: r.value };
      if (r.kind === 2) return { kind: "overflow", index: r.index };
      return { kind: "done" };
    },

    async weightDelta(tuned: Uint8Array, base: Uint8Array, dtype: ModelDType, delta: Float32Array, norm2In: number): Promise<WeightDeltaResult> {
      const d = MODEL_CODES[dtype];
      if (d === undefined) throw new InvalidInputError(`weightDelta: dtype ${String(dtype)} is not one of F32, F16, BF16`);
      const need = delta.length * (d === 0 ? 4 : 2);
      if (!(tuned instanceof Uint8Array && base instanceof Uint8Array) || tuned.byteLength !== need || base.byteLength !== need)
        throw new InvalidInputError(`weightDelta: ${delta.length} ${dtype} values need ${need} bytes each`);
      let r: { norm2: number; firstNonFinite: number; which: number };
      try {
        r = await binding.weightDelta(tuned, base, d, delta, norm2In);
      } catch (e) {
        fail(name, "weightDelta", e);
      }
      if (r.firstNonFinite < 0) return { norm2: r.norm2, firstNonFinite: -1, which: null, value: 0 };
      const i = r.firstNonFinite;
      const which = r.which === 0 ? "tuned" : r.which === 1 ? "base" : "difference";
      const one = (raw: Uint8Array) => decodeToFloat32(dtype, raw.subarray(i * (d === 0 ? 4 : 2), (i + 1) * (d === 0 ? 4 : 2)))[0]!;
      const value = which === "tuned" ? one(tuned) : which === "base" ? one(base) : delta[i]!;
      return { norm2: r.norm2, firstNonFinite: i, which, value };
    },

    async sketch(x: SketchInput): Promise<SketchResult> {
      const { m, omega } = x;
      checkShape("sketch", "M", m);
      checkShape("sketch", "the test matrix", omega);
      const l = omega.cols;
      if (omega.rows !== m.cols) throw new InvalidInputError(`sketch: the test matrix has ${omega.rows} rows, M has ${m.cols} columns`);
      if (!(Number.isInteger(x.t) && x.t >= 1 && x.t <= l && l <= Math.min(m.rows, m.cols)))
        throw new InvalidInputError(`sketch: need 1 ≤ t (${String(x.t)}) ≤ ${l} ≤ min(${m.rows}, ${m.cols})`);
      if (!(m.data instanceof Float32Array)) return (await import("../streamed.js")).sketchOn(backend, x); // float64 M: the composed route (loaded only then)
      checkFinite("sketch", "the test matrix", omega.data, omega.cols);
      let r: Awaited<ReturnType<ComputeBinding["sketch"]>>;
      try {
        r = await binding.sketch(m.data, m.rows, m.cols, asType(m.data, omega.data), l, x.t, x.allowed, x.floor, x.norm2, x.maxIters);
      } catch (e) {
        fail(name, "sketch", e);
      }
      if (r.firstNonFinite >= 0) checkFinite("sketch", "M", m.data, m.cols); // names the value and where
      checkOutput(name, "sketch", [r.Q, r.Uz, r.VzT, r.sigma]);
      return {
        Q: { rows: m.rows, cols: l, data: r.Q },
        Uz: { rows: m.cols, cols: l, data: r.Uz },
        VzT: { rows: l, cols: l, data: r.VzT },
        sigma: r.sigma,
        iters: r.iters,
        excess2: r.excess2,
        floorLimited: r.floorLimited,
      };
    },

    async gemm<T extends FloatArray>(
      a: Mat<T>,
      b: Mat<T>,
      opts: { transA?: boolean; transB?: boolean; alpha?: number; finite?: boolean; into?: T } = {},
    ): Promise<Mat<T>> {
      // A Gram (b is a itself): one finiteness pass is enough; none where the caller vouches for both.
      checkShape("gemm", "A", a);
      if (!opts.finite) checkFinite("gemm", "A", a.data, a.cols);
      checkShape("gemm", "B", b);
      if (!opts.finite && b.data !== a.data) checkFinite("gemm", "B", b.data, b.cols);
      const transA = !!opts.transA,
        transB = !!opts.transB;
      const alpha = opts.alpha ?? 1;
      if (!Number.isFinite(alpha)) throw new InvalidInputError("gemm: alpha is not finite");
      const m = transA ? a.cols : a.rows,
        k = transA ? a.rows : a.cols;
      const kb = transB ? b.cols : b.rows,
        n = transB ? b.rows : b.cols;
      if (k !== kb) {
        throw new InvalidInputError(`gemm: inner dimensions differ (op(A) is ${m}×${k}, op(B) is ${kb}×${n})`);
      }
      if (m * n > MAX_ELEMENTS) throw new InvalidInputError(`gemm: the ${m}×${n} result exceeds the native backends' limit`);
      if (m === 0 || n === 0 || k === 0) return { rows: m, cols: n, data: zeros(a.data, m * n) };
      const bData = asType(a.data, b.data);
      let c: FloatArray;
      try {
        const into = opts.into && opts.into.constructor === a.data.constructor && opts.into.length >= m * n ? opts.into.subarray(0, m * n) : undefined;
        c = await binding.gemm(a.data, a.rows, a.cols, bData, b.rows, b.cols, transA, transB, alpha, ...(into ? [into] : []));
      } catch (e) {
        fail(name, "gemm", e);
      }
      checkOutput(name, "gemm", [c]);
      return { rows: m, cols: n, data: c as T };
    },

    async qr<T extends FloatArray>(a: Mat<T>): Promise<QrResult<T>> {
      checkMat("qr", "A", a);
      const k = Math.min(a.rows, a.cols);
      if (k === 0) {
        return { Q: { rows: a.rows, cols: 0, data: zeros(a.data, 0) }, R: { rows: 0, cols: a.cols, data: zeros(a.data, 0) } };
      }
      let r: { q: FloatArray; r: FloatArray };
      try {
        r = await binding.qr(a.data, a.rows, a.cols);
      } catch (e) {
        fail(name, "qr", e);
      }
      checkOutput(name, "qr", [r.q, r.r]);
      return { Q: { rows: a.rows, cols: k, data: r.q as T }, R: { rows: k, cols: a.cols, data: r.r as T } };
    },

    async svd<T extends FloatArray>(a: Mat<T>): Promise<SvdResult<T>> {
      checkMat("svd", "A", a);
      const k = Math.min(a.rows, a.cols);
      if (k === 0) {
        return {
          U: { rows: a.rows, cols: 0, data: zeros(a.data, 0) },
          S: zeros(a.data, 0),
          Vt: { rows: 0, cols: a.cols, data: zeros(a.data, 0) },
        };
      }
      let r: { u: FloatArray; s: FloatArray; vt: FloatArray };
      try {
        r = await binding.svd(a.data, a.rows, a.cols);
      } catch (e) {
        fail(name, "svd", e);
      }
      checkOutput(name, "svd", [r.u, r.s, r.vt]);
      return { U: { rows: a.rows, cols: k, data: r.u as T }, S: r.s as T, Vt: { rows: k, cols: a.cols, data: r.vt as T } };
    },

    async eigSym<T extends FloatArray>(a: Mat<T>): Promise<EigResult<T>> {
      checkShape("eigSym", "A", a);
      if (a.rows !== a.cols) throw new InvalidInputError(`eigSym: matrix is not square (${a.rows}×${a.cols})`);
      const n = a.rows;
      if (n === 0) return { values: zeros(a.data, 0), vectors: { rows: 0, cols: 0, data: zeros(a.data, 0) } };
      // Only the lower triangle is read, so only it must be finite; the addon gets it alone.
      const lower = lowerOnly(a.data, n);
      checkFinite("eigSym", "A (lower triangle)", lower, n);
      let r: { values: FloatArray; vectors: FloatArray };
      try {
        r = await binding.eigSym(lower, n);
      } catch (e) {
        fail(name, "eigSym", e);
      }
      checkOutput(name, "eigSym", [r.values, r.vectors]);
      return { values: r.values as T, vectors: { rows: n, cols: n, data: r.vectors as T } };
    },

    async kmeansLloyd(points: Mat<Float64Array>, init: Mat<Float64Array>, opts: KmeansLloydOptions): Promise<KmeansResult> {
      checkMat("kmeans", "points", points);
      checkMat("kmeans", "initial centroids", init);
      if (!(points.data instanceof Float64Array) || !(init.data instanceof Float64Array)) {
        throw new InvalidInputError("kmeans: points and centroids must be Float64Array");
      }
      const n = points.rows,
        d = points.cols,
        k = init.rows;
      if (init.cols !== d) throw new InvalidInputError(`kmeans: centroids have ${init.cols} dimensions, points have ${d}`);
      if (n === 0 || k === 0 || d === 0) throw new InvalidInputError(`kmeans: empty input (${n} points, ${k} centroids, ${d} dimensions)`);
      if (n * k > MAX_ELEMENTS) throw new InvalidInputError(`kmeans: ${n} points × ${k} centroids exceeds the native backends' limit`);
      const maxIter = opts.maxIter;
      if (!Number.isInteger(maxIter) || maxIter < 0) throw new InvalidInputError(`kmeans: maxIter must be an integer ≥ 0 (got ${String(maxIter)})`);
      if (typeof opts.tol !== "number" || Number.isNaN(opts.tol)) throw new InvalidInputError("kmeans: tol must be a number");
      let w: Float64Array | null = null;
      if (opts.weights !== undefined) {
        w = opts.weights;
        if (!(w instanceof Float64Array) || w.length !== n) {
          throw new InvalidInputError(`kmeans: weights must be a Float64Array of ${n} values`);
        }
        for (let i = 0; i < n; i++) {
          if (!(w[i]! >= 0) || w[i] === Infinity) throw new InvalidInputError(`kmeans: weight ${i} is ${w[i]} (must be finite and ≥ 0)`);
        }
      }
      let r: { centroids: Float64Array; labels: Int32Array; inertia: number; iterations: number };
      try {
        r = await binding.kmeansLloyd(points.data, n, d, init.data, k, w, maxIter, opts.tol);
      } catch (e) {
        fail(name, "kmeans", e);
      }
      checkOutput(name, "kmeans", [r.centroids, [r.inertia]]);
      return { centroids: { rows: k, cols: d, data: r.centroids }, labels: r.labels, inertia: r.inertia, iterations: r.iterations };
    },
  };
  return backend;
}

/** A copy with the strict upper triangle zeroed (the addons read only the lower one anyway). */
function lowerOnly<T extends FloatArray>(data: T, n: number): T {
  const out = zeros(data, n * n);
  for (let i = 0; i < n; i++) out.set(data.subarray(i * n, i * n + i + 1), i * n);
  return out;
}
