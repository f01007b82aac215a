// The only file that loads .node files. It declares the raw addons once (mirrors of
// native/src/cpu/addon.cc and native/src/cuda/addon.cc), loads them on demand, and adapts them
// to LinalgBackend: shapes, lengths and finiteness are checked here before any call goes in
// (C++ trusts them), native failures come back as LoraErrors, and a non-finite output becomes a
// RuntimeFailure instead of a silent NaN.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { BackendUnavailableError, InvalidInputError, LoraError, RuntimeFailure } from "../common/errors.js";
import { withFusedOps } from "./fused.js";
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
  RawFactor,
  SvdResult,
  TruncateFactorsInput,
  TruncateFactorsResult,
} from "./types.js";

/** Bumped with any change of the raw signatures below; the addons export the same number. */
export const NATIVE_ABI_VERSION = 1;

/** The compute calls both addons export. Row-major flat arrays plus dimensions only. */
export interface ComputeBinding {
  readonly abiVersion: number;
  gemm(a: FloatArray, aRows: number, aCols: number, b: FloatArray, bRows: number, bCols: number,
    transA: boolean, transB: boolean, alpha: number): Promise<FloatArray>;
  qr(a: FloatArray, rows: number, cols: number): Promise<{ q: FloatArray; r: FloatArray }>;
  svd(a: FloatArray, rows: number, cols: number): Promise<{ u: FloatArray; s: FloatArray; vt: FloatArray }>;
  eigSym(a: FloatArray, n: number): Promise<{ values: FloatArray; vectors: FloatArray }>;
  kmeansLloyd(x: Float64Array, n: number, d: number, init: Float64Array, k: number, weights: Float64Array | null,
    maxIter: number, tol: number): Promise<{ centroids: Float64Array; labels: Int32Array; inertia: number; iterations: number }>;
  /** cpu addon only (an optional export: the ABI version is unchanged). dtype 0 F32, 1 F16, 2 BF16, 3 F64. */
  factorStats?(raw: Uint8Array, dtype: number, rows: number, cols: number, gramRows: boolean): Promise<FactorStats>;
  /** cpu addon only (optional export). Codes as factorStats; kind 0 done, 1 fallback, 2 non-finite. */
  truncateFactors?(rawB: Uint8Array, dtypeB: number, rawA: Uint8Array, dtypeA: number, out: number, r: number, inn: number, t: number,
    scale: number, scaleOut: number, balanced: boolean, outDtype: number, productsInDouble: boolean, grams?: Float64Array): Promise<RawTruncateResult>;
  /** cpu addon only (optional export): σ of one module, codes as truncateFactors. */
  factorSpectrum?(rawB: Uint8Array, dtypeB: number, rawA: Uint8Array, dtypeA: number, out: number, r: number, inn: number,
    scale: number, keepGrams: boolean): Promise<{ kind: number; S: Float64Array; grams?: Float64Array; norm2: number; badFactor: number; badIndex: number; badValue: number }>;
}

interface RawTruncateResult {
  kind: number;
  B: Uint8Array;
  A: Uint8Array;
  S: Float64Array;
  norm2: number;
  err2: number;
  resid2: number;
  productBits: number;
  badFactor: number;
  badIndex: number;
  badValue: number;
}

const FACTOR_DTYPES: Record<FactorDType, { code: number; size: number }> = { F32: { code: 0, size: 4 }, F16: { code: 1, size: 2 }, BF16: { code: 2, size: 2 }, F64: { code: 3, size: 8 } };

export interface CpuInfo {
  abiVersion: number;
  /** BLAS/LAPACK opened and every routine found. */
  loaded: boolean;
  /** Why not, when !loaded. */
  error?: string;
  /** "libopenblas.so.0" or "libblas.so.3 + liblapack.so.3". */
  library: string;
  /** openblas_get_config() or "reference BLAS/LAPACK (…)". */
  vendor: string;
  /** openblas_get_corename(): the kernel set in use ("" when not OpenBLAS). */
  corename: string;
  /** OPENBLAS_CORETYPE at load time, and who set it ("user", "lora", or "" when unset). */
  coretype: string;
  coretypeSource: "user" | "lora" | "";
  threads: number;
  /** openblas_set_num_threads is available. */
  threadControl: boolean;
}

export interface CpuBinding extends ComputeBinding {
  info(): CpuInfo;
  /** Sets BLAS and addon threads; returns the count now in force. */
  setThreads(n: number): number;
}

export interface CudaProbe {
  /** libcuda.so.1 could be opened. */
  libcuda: boolean;
  dlerror?: string;
  deviceCount: number;
  driverVersion: number;
  runtimeVersion: number;
  /** cudaError_t of the probe (0 = success). */
  error: number;
  errorString: string;
  device?: string;
  computeCapability?: string;
  memoryBytes?: number;
}

export interface CudaBinding extends ComputeBinding {
  probe(): CudaProbe;
}

/** native/build/status.json, written by native/build.js at npm install. */
export interface BuildStatus {
  cpu: { built: boolean; reason: string };
  cuda: { built: boolean; reason: string };
}

export type NativeKind = "cpu" | "cuda";

function findRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(d, "package.json")) && existsSync(join(d, "native"))) return d;
    const up = dirname(d);
    if (up === d) return dirname(fileURLToPath(import.meta.url));
    d = up;
  }
}

/** Where the .node files are: LORA_NATIVE_DIR, else <repo>/native/build/Release. */
export function nativeDir(): string {
  return process.env.LORA_NATIVE_DIR || join(findRoot(), "native", "build", "Release");
}

/** native/build/status.json (beside the Release folder of nativeDir()), when build.js wrote one. */
export function buildStatus(): BuildStatus | undefined {
  const p = join(dirname(nativeDir()), "status.json");
  try {
    return JSON.parse(readFileSync(p, "utf8")) as BuildStatus;
  } catch {
    return undefined;
  }
}

const cache = new Map<NativeKind, CpuBinding | CudaBinding | Error>();

/**
 * Loads lora_cpu.node or lora_cuda.node (cached). `override` is a path to a .node file or a
 * ready binding object (tests inject fakes). Returns the Error instead of throwing.
 */
export function loadNative(kind: "cpu", override?: string | CpuBinding): CpuBinding | Error;
export function loadNative(kind: "cuda", override?: string | CudaBinding): CudaBinding | Error;
export function loadNative(kind: NativeKind, override?: string | CpuBinding | CudaBinding): CpuBinding | CudaBinding | Error {
  if (override !== undefined && typeof override !== "string") return override;
  if (override === undefined && cache.has(kind)) return cache.get(kind)!;
  const file = override ?? join(nativeDir(), `lora_${kind}.node`);
  let result: CpuBinding | CudaBinding | Error;
  if (!existsSync(file)) {
    result = new Error(`${file} does not exist`);
  } else {
    try {
      const req = createRequire(import.meta.url);
      const b = req(file) as CpuBinding | CudaBinding;
      result = b.abiVersion === NATIVE_ABI_VERSION
        ? b
        : new Error(`${file} has ABI version ${String(b.abiVersion)}, this lora needs ${NATIVE_ABI_VERSION} (run npm rebuild)`);
    } catch (e) {
      result = e instanceof Error ? e : new Error(String(e));
    }
  }
  if (override === undefined) cache.set(kind, result);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Validation

const MAX_ELEMENTS = 2 ** 31 - 1; // LAPACK's LP64 int

function isFloatArray(x: unknown): x is FloatArray {
  return x instanceof Float32Array || x instanceof Float64Array;
}

function checkShape(op: string, what: string, m: Mat): void {
  if (m === null || typeof m !== "object") throw new InvalidInputError(`${op}: ${what} is not a matrix`);
  const { rows, cols, data } = m;
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new InvalidInputError(`${op}: ${what} has an invalid shape ${String(rows)}×${String(cols)}`);
  }
  if (!isFloatArray(data)) throw new InvalidInputError(`${op}: ${what} must hold a Float32Array or Float64Array`);
  if (data.length !== rows * cols) {
    throw new InvalidInputError(`${op}: ${what} is ${rows}×${cols} but holds ${data.length} values (expected ${rows * cols})`);
  }
  if (rows * cols > MAX_ELEMENTS) {
    throw new InvalidInputError(`${op}: ${what} (${rows}×${cols}) exceeds ${MAX_ELEMENTS} elements, the native backends' limit`);
  }
}

function checkMat(op: string, what: string, m: Mat): void {
  checkShape(op, what, m);
  checkFinite(op, what, m.data, m.cols);
}

function checkFinite(op: string, what: string, data: ArrayLike<number>, cols: number): void {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) {
      const where = cols > 0 ? ` (row ${Math.floor(i / cols)}, column ${i % cols})` : ` (index ${i})`;
      throw new InvalidInputError(`${op}: ${what} contains ${Number.isNaN(v) ? "NaN" : "Inf"}${where}`);
    }
  }
}

function checkOutput(backend: BackendName, op: string, arrays: ArrayLike<number>[]): void {
  for (const a of arrays) {
    for (let i = 0; i < a.length; i++) {
      const v = a[i]!;
      if (v - v !== 0) {
        throw new RuntimeFailure(
          `${op} on the ${backend} backend produced a non-finite value (overflow or a numerical failure); ` +
            `try --backend js, or float64 input`,
        );
      }
    }
  }
}

function fail(backend: BackendName, op: string, e: unknown): never {
  if (e instanceof LoraError) throw e;
  const err = e as { message?: string; code?: string };
  const msg = err?.message ?? String(e);
  throw new RuntimeFailure(`${op} failed on the ${backend} backend: ${msg}`, { cause: e });
}

function zeros<T extends FloatArray>(proto: T, n: number): T {
  return (proto instanceof Float32Array ? new Float32Array(n) : new Float64Array(n)) as T;
}

function asType<T extends FloatArray>(proto: T, x: FloatArray): T {
  if (proto instanceof Float32Array) return (x instanceof Float32Array ? x : Float32Array.from(x)) as T;
  return (x instanceof Float64Array ? x : Float64Array.from(x)) as T;
}

// ---------------------------------------------------------------------------------------------
// Adapter

function dtypeCode(op: string, d: FactorDType): { code: number; size: number } {
  const c = FACTOR_DTYPES[d];
  if (!c) throw new InvalidInputError(`${op}: dtype ${String(d)} is not one of F32, F16, BF16, F64`);
  return c;
}

/** Shapes, byte lengths and scale of a module's raw factors, checked before a native call. */
function checkRawPair(op: string, x: { B: RawFactor; A: RawFactor; scale: number }) {
  const b = dtypeCode(op, x.B.dtype), a = dtypeCode(op, x.A.dtype);
  const out = x.B.rows, r = x.B.cols, inn = x.A.cols;
  if (x.A.rows !== r) throw new InvalidInputError(`${op}: B is ${out}×${r} but A is ${x.A.rows}×${inn}`);
  if (!(r >= 1 && out >= 1 && inn >= 1)) throw new InvalidInputError(`${op}: empty factors (${out}×${r}, ${x.A.rows}×${inn})`);
  if (x.B.raw.byteLength !== out * r * b.size || x.A.raw.byteLength !== r * inn * a.size) throw new InvalidInputError(`${op}: raw byte lengths do not match the shapes`);
  if (Math.max(out, inn) * r > MAX_ELEMENTS) throw new InvalidInputError(`${op}: factors exceed ${MAX_ELEMENTS} elements, the native backends' limit`);
  if (!Number.isFinite(x.scale)) throw new InvalidInputError(`${op}: scales must be finite (scaleOut ≠ 0)`);
  return { b, a, out, r, inn };
}

/** Wraps a raw binding as a LinalgBackend (exported for tests with fake bindings). */
export function adaptBinding(name: BackendName, binding: ComputeBinding, detail: string): LinalgBackend {
  const fs = binding.factorStats?.bind(binding);
  const factorStats = fs && (async (raw: Uint8Array, dtype: FactorDType, rows: number, cols: number, side: GramSide): Promise<FactorStats> => {
    const d = FACTOR_DTYPES[dtype];
    if (!d) throw new InvalidInputError(`factorStats: dtype ${String(dtype)} is not one of F32, F16, BF16, F64`);
    if (!(raw instanceof Uint8Array)) throw new InvalidInputError("factorStats: raw must be a Uint8Array");
    if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) throw new InvalidInputError(`factorStats: invalid shape ${String(rows)}×${String(cols)}`);
    if (raw.byteLength !== rows * cols * d.size) throw new InvalidInputError(`factorStats: ${rows}×${cols} ${dtype} needs ${rows * cols * d.size} bytes, got ${raw.byteLength}`);
    if (rows * cols > MAX_ELEMENTS) throw new InvalidInputError(`factorStats: ${rows}×${cols} exceeds ${MAX_ELEMENTS} elements, the native backends' limit`);
    if (side !== "gram-rows" && side !== "gram-cols") throw new InvalidInputError(`factorStats: side must be gram-rows or gram-cols`);
    let r: FactorStats;
    try {
      r = await fs(raw, d.code, rows, cols, side === "gram-rows");
    } catch (e) {
      fail(name, "factorStats", e);
    }
    if (r.firstNonFinite < 0) checkOutput(name, "factorStats", [r.gram]);
    return { data: r.data, gram: r.gram, firstNonFinite: r.firstNonFinite };
  });
  const tf = binding.truncateFactors?.bind(binding);
  const truncateFactors = tf && (async (x: TruncateFactorsInput): Promise<TruncateFactorsResult> => {
    const { b, a, out, r, inn } = checkRawPair("truncateFactors", x);
    const o = dtypeCode("truncateFactors", x.outDtype), t = x.rank;
    if (!(Number.isInteger(t) && t >= 1 && t <= r)) throw new InvalidInputError(`truncateFactors: rank ${String(t)} must be an integer in 1..${r}`);
    if (!Number.isFinite(x.scaleOut) || x.scaleOut === 0) throw new InvalidInputError("truncateFactors: scales must be finite (scaleOut ≠ 0)");
    if (x.grams !== undefined && !(x.grams instanceof Float64Array && x.grams.length === 2 * r * r && x.grams.every(Number.isFinite))) {
      throw new InvalidInputError(`truncateFactors: grams must be a finite Float64Array of 2·${r}² values`);
    }
    let res: RawTruncateResult;
    try {
      res = await tf(x.B.raw, b.code, x.A.raw, a.code, out, r, inn, t, x.scale, x.scaleOut, x.split === "balanced", o.code, !!x.productsInDouble, x.grams);
    } catch (e) {
      fail(name, "truncateFactors", e);
    }
    if (res.kind === 1) return { kind: "fallback" };
    if (res.kind === 2) return { kind: "non-finite", factor: res.badFactor === 0 ? "A" : "B", index: res.badIndex, value: res.badValue };
    checkOutput(name, "truncateFactors", [res.S]);
    if (![res.norm2, res.err2, res.resid2].every(Number.isFinite)) throw new RuntimeFailure(`${name} backend: truncateFactors returned a non-finite error measure`);
    return { kind: "done", B: res.B, A: res.A, S: res.S, norm2: res.norm2, err2: res.err2, resid2: res.resid2, productBits: res.productBits === 32 ? 32 : 64 };
  });
  const fsp = binding.factorSpectrum?.bind(binding);
  const factorSpectrum = fsp && (async (x: FactorSpectrumInput): Promise<FactorSpectrumResult> => {
    const { b, a, out, r, inn } = checkRawPair("factorSpectrum", x);
    let res: Awaited<ReturnType<NonNullable<ComputeBinding["factorSpectrum"]>>>;
    try {
      res = await fsp(x.B.raw, b.code, x.A.raw, a.code, out, r, inn, x.scale, !!x.keepGrams);
    } catch (e) {
      fail(name, "factorSpectrum", e);
    }
    if (res.kind === 1) return { kind: "fallback" };
    if (res.kind === 2) return { kind: "non-finite", factor: res.badFactor === 0 ? "A" : "B", index: res.badIndex, value: res.badValue };
    checkOutput(name, "factorSpectrum", [res.S]);
    if (!Number.isFinite(res.norm2)) throw new RuntimeFailure(`${name} backend: factorSpectrum returned a non-finite norm`);
    return { kind: "done", S: res.S, norm2: res.norm2, ...(x.keepGrams && res.grams ? { grams: res.grams } : {}) };
  });
  // Operations the addon lacks (the cuda addon's fused ones) run as linalg/fused.ts over this
  // backend's dense operations, so that every backend has every operation (issue 16; the cuda
  // branch replaces this with native kernels).
  return withFusedOps({
    name,
    detail,
    ...(factorStats ? { factorStats } : {}),
    ...(truncateFactors ? { truncateFactors } : {}),
    ...(factorSpectrum ? { factorSpectrum } : {}),

    async gemm<T extends FloatArray>(a: Mat<T>, b: Mat<T>, opts: { transA?: boolean; transB?: boolean; alpha?: number } = {}): Promise<Mat<T>> {
      checkMat("gemm", "A", a);
      // A Gram (b is a itself): one finiteness pass is enough.
      if (b.data === a.data) checkShape("gemm", "B", b);
      else checkMat("gemm", "B", b);
      const transA = !!opts.transA, transB = !!opts.transB;
      const alpha = opts.alpha ?? 1;
      if (!Number.isFinite(alpha)) throw new InvalidInputError("gemm: alpha is not finite");
      const m = transA ? a.cols : a.rows, k = transA ? a.rows : a.cols;
      const kb = transB ? b.cols : b.rows, n = transB ? b.rows : b.cols;
      if (k !== kb) {
        throw new InvalidInputError(`gemm: inner dimensions differ (op(A) is ${m}×${k}, op(B) is ${kb}×${n})`);
      }
      if (m * n > MAX_ELEMENTS) throw new InvalidInputError(`gemm: the ${m}×${n} result exceeds the native backends' limit`);
      if (m === 0 || n === 0 || k === 0) return { rows: m, cols: n, data: zeros(a.data, m * n) };
      const bData = asType(a.data, b.data);
      let c: FloatArray;
      try {
        c = await binding.gemm(a.data, a.rows, a.cols, bData, b.rows, b.cols, transA, transB, alpha);
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
      const n = points.rows, d = points.cols, k = init.rows;
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
  });
}

/** A copy with the strict upper triangle zeroed (the addons read only the lower one anyway). */
function lowerOnly<T extends FloatArray>(data: T, n: number): T {
  const out = zeros(data, n * n);
  for (let i = 0; i < n; i++) out.set(data.subarray(i * n, i * n + i + 1), i * n);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The two native backends

export const CPU_FIX = "apt-get install g++ make python3 libopenblas0-pthread liblapack3, then npm rebuild";
export const CPU_BLAS_FIX = "apt-get install libopenblas0-pthread (or liblapack3 + libblas3); no rebuild is needed";

export type Probe = { ok: true; backend: LinalgBackend } | { ok: false; reason: string; fix: string; detail: string };

function threadsOf(t: number | undefined): number {
  if (t === undefined) return availableParallelism();
  if (!Number.isInteger(t) || t < 1) throw new InvalidInputError(`--threads must be a positive integer (got ${String(t)})`);
  return t;
}

function cpuDetail(info: CpuInfo): string {
  const what = info.vendor.startsWith("OpenBLAS") ? info.vendor.split(/\s+/).slice(0, 2).join(" ") : info.vendor;
  const core = info.corename
    ? `, ${info.corename} kernels${info.coretypeSource === "lora" ? " (OPENBLAS_CORETYPE chosen by lora from CPU features)" : info.coretypeSource === "user" ? " (OPENBLAS_CORETYPE set by the user)" : ""}`
    : "";
  return `${what} via ${info.library}${core}, ${info.threads} thread${info.threads === 1 ? "" : "s"}`;
}

function notBuiltReason(kind: NativeKind, err: Error): string {
  const st = buildStatus()?.[kind];
  if (st && !st.built) return `lora_${kind}.node was not built: ${st.reason}`;
  if (!st && / does not exist$/.test(err.message)) return `lora_${kind}.node was not built (npm install ran without its install script?)`;
  return `lora_${kind}.node could not be loaded: ${err.message.split("\n")[0]}`;
}

/** The cpu backend, or why not. Loads lora_cpu.node (and so BLAS) on first call. */
export function probeCpu(opts: { threads?: number; binding?: string | CpuBinding } = {}): Probe {
  const b = loadNative("cpu", opts.binding);
  if (b instanceof Error) {
    const st = buildStatus()?.cpu;
    const fix = st && /^build failed/.test(st.reason) && !/not found|No such file/.test(st.reason) ? `see native/build/build.log (node native/build.js --verbose); ${CPU_FIX}` : CPU_FIX;
    return { ok: false, reason: notBuiltReason("cpu", b), fix, detail: "BLAS/LAPACK addon (lora_cpu.node)" };
  }
  let info = b.info();
  if (!info.loaded) {
    return { ok: false, reason: info.error ?? "BLAS/LAPACK could not be opened", fix: CPU_BLAS_FIX, detail: "lora_cpu.node built, no BLAS/LAPACK" };
  }
  const t = threadsOf(opts.threads);
  if (info.threads !== t) {
    b.setThreads(t);
    info = b.info();
  }
  const backend = adaptBinding("cpu", b, cpuDetail(info));
  backend.withLanes = async <T>(fn: (lanes: number) => Promise<T>): Promise<T> => {
    const before = b.info().threads;
    b.setThreads(1);
    try {
      return await fn(Math.max(1, before));
    } finally {
      b.setThreads(before);
    }
  };
  return { ok: true, backend };
}

function hasNvidiaDriver(): boolean {
  return existsSync("/proc/driver/nvidia/version") || existsSync("/dev/nvidiactl") || existsSync("/dev/nvidia0");
}

const CUDA_BUILD_FIX = "install the CUDA toolkit (nvcc; or set CUDA_HOME), then npm rebuild";
const CUDA_GPU_FIX = "run on a machine with an NVIDIA GPU (sm_80 or newer) and a driver new enough for the CUDA runtime lora was built with (r580+ for CUDA 13)";

/** The cuda backend, or why not. lora_cuda.node is loaded only where an NVIDIA driver is present. */
export function probeCuda(opts: { binding?: string | CudaBinding } = {}): Probe {
  if (opts.binding === undefined) {
    const file = join(nativeDir(), "lora_cuda.node");
    if (!existsSync(file)) {
      const st = buildStatus()?.cuda;
      const reason = st && !st.built ? `lora_cuda.node was not built: ${st.reason}` : "lora_cuda.node was not built";
      const fix = st && /^build failed|does not load/.test(st.reason) ? "see native/build/build.log (node native/build.js --verbose), then npm rebuild" : CUDA_BUILD_FIX;
      return { ok: false, reason, fix, detail: "own CUDA kernels (lora_cuda.node)" };
    }
    if (!hasNvidiaDriver()) {
      return { ok: false, reason: "no NVIDIA GPU driver on this machine (no /proc/driver/nvidia/version)", fix: CUDA_GPU_FIX, detail: "lora_cuda.node built, no GPU" };
    }
  }
  const b = loadNative("cuda", opts.binding);
  if (b instanceof Error) return { ok: false, reason: notBuiltReason("cuda", b), fix: CUDA_BUILD_FIX, detail: "own CUDA kernels (lora_cuda.node)" };
  const p = b.probe();
  if (p.error !== 0 || p.deviceCount < 1) {
    const why = !p.libcuda ? `the CUDA driver library is missing (${p.dlerror ?? "libcuda.so.1"})` : `${p.errorString} (CUDA error ${p.error})`;
    return { ok: false, reason: why, fix: CUDA_GPU_FIX, detail: "lora_cuda.node built, no usable GPU" };
  }
  const mem = p.memoryBytes ? `, ${(p.memoryBytes / 2 ** 30).toFixed(0)} GiB` : "";
  const detail = `${p.device ?? "GPU"} (sm_${(p.computeCapability ?? "").replace(".", "")}${mem}), own kernels on CUDA runtime ${fmtCudaVersion(p.runtimeVersion)}, driver ${fmtCudaVersion(p.driverVersion)}`;
  return { ok: true, backend: adaptBinding("cuda", b, detail) };
}

function fmtCudaVersion(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

/** Throws BackendUnavailableError (exit 4) with the fix, for an explicit --backend. */
export function requireBackend(name: "cpu" | "cuda", p: Probe): LinalgBackend {
  if (p.ok) return p.backend;
  throw new BackendUnavailableError(`the ${name} backend is not available: ${p.reason}. Fix: ${p.fix}`, {
    hint: "--backend auto picks the best available backend (lora backends lists them)",
  });
}
