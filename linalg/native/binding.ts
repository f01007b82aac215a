// The raw addons as JavaScript sees them (mirrors of native/src/common/napi_ops.h, napi_fused.h and
// the two addon.cc files), and the loader: the only code that requires .node files.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FactorDType, FactorStats, FloatArray } from "../types.js";

/** Bumped with any change of the raw signatures below; the addons export the same number. */
export const NATIVE_ABI_VERSION = 4;

/** The arguments truncateFactors and factorSpectrum start with: a module's raw factors B (out×r) and A (r×inn), dtypes as factorStats. */
export type RawPairArgs = [rawB: Uint8Array, dtypeB: number, rawA: Uint8Array, dtypeA: number, out: number, r: number, inn: number];

/** The compute calls both addons export. Row-major flat arrays plus dimensions only. */
export interface ComputeBinding {
  readonly abiVersion: number;
  gemm(
    a: FloatArray,
    aRows: number,
    aCols: number,
    b: FloatArray,
    bRows: number,
    bCols: number,
    transA: boolean,
    transB: boolean,
    alpha: number,
    /** Where to write the result (m×n, a's element type; an addon built before this argument ignores it). */
    c?: FloatArray,
  ): Promise<FloatArray>;
  qr(a: FloatArray, rows: number, cols: number): Promise<{ q: FloatArray; r: FloatArray }>;
  svd(a: FloatArray, rows: number, cols: number): Promise<{ u: FloatArray; s: FloatArray; vt: FloatArray }>;
  eigSym(a: FloatArray, n: number): Promise<{ values: FloatArray; vectors: FloatArray }>;
  kmeansLloyd(
    x: Float64Array,
    n: number,
    d: number,
    init: Float64Array,
    k: number,
    weights: Float64Array | null,
    maxIter: number,
    tol: number,
  ): Promise<{ centroids: Float64Array; labels: Int32Array; inertia: number; iterations: number }>;
  /** dtype 0 F32, 1 F16, 2 BF16, 3 F64. */
  factorStats(raw: Uint8Array, dtype: number, rows: number, cols: number, gramRows: boolean): Promise<FactorStats>;
  /** Codes as factorStats; kind 0 done, 1 fallback, 2 non-finite. */
  truncateFactors(
    ...args: [...RawPairArgs, t: number, scale: number, scaleOut: number, balanced: boolean, outDtype: number, productsInDouble: boolean, grams?: Float64Array]
  ): Promise<RawTruncateResult>;
  /** σ of one module, codes as truncateFactors. */
  factorSpectrum(...args: [...RawPairArgs, scale: number, keepGrams: boolean]): Promise<RawSpectrumResult>;
  /** factorSpectrum of several modules in one call, results in order. */
  factorSpectra(modules: [...RawPairArgs, scale: number, keepGrams: boolean][]): Promise<RawSpectrumResult[]>;
  /** Randomized SVD with the test matrix omega (cols×l, a's element type) and q power iterations: the leading t triplets. */
  randomizedSvd(
    a: FloatArray,
    rows: number,
    cols: number,
    omega: FloatArray,
    l: number,
    q: number,
    t: number,
  ): Promise<{ u: FloatArray; s: FloatArray; vt: FloatArray }>;
  /** apply's kernel (dtype 0 F32, 1 F16, 2 BF16): data rewritten in place; kind 0 done, 1 base non-finite, 2 overflow. */
  mergeWeight(
    data: Uint8Array,
    dtype: number,
    out: number,
    inn: number,
    transposed: boolean,
    terms: { B: Float32Array; A: Float32Array; r: number; coef: number }[],
  ): Promise<{ kind: number; index: number; value: number }>;
  /** delta = tuned − base; which 0 tuned, 1 base, 2 the difference (when firstNonFinite ≥ 0). */
  weightDelta(
    tuned: Uint8Array,
    base: Uint8Array,
    dtype: number,
    delta: Float32Array,
    norm2In: number,
  ): Promise<{ norm2: number; firstNonFinite: number; which: number }>;
  /** The adaptive range finder on a float32 M (firstNonFinite ≥ 0: M holds NaN/±Inf there, nothing computed). */
  sketch(
    m: Float32Array,
    rows: number,
    cols: number,
    omega: Float32Array,
    l: number,
    t: number,
    allowed: number,
    floor: number,
    norm2: number,
    maxIters: number,
  ): Promise<{
    Q: Float64Array;
    Uz: Float64Array;
    VzT: Float64Array;
    sigma: Float64Array;
    iters: number;
    excess2: number;
    floorLimited: boolean;
    firstNonFinite: number;
  }>;
}

/** What truncateFactors and factorSpectrum both return: kind 0 done, 1 fallback, 2 non-finite (badFactor 0 = A). */
interface RawOutcome {
  kind: number;
  norm2: number;
  badFactor: number;
  badIndex: number;
  badValue: number;
}

export interface RawSpectrumResult extends RawOutcome {
  S: Float64Array;
  grams?: Float64Array;
}

export interface RawTruncateResult extends RawOutcome {
  B: Uint8Array;
  A: Uint8Array;
  S: Float64Array;
  err2: number;
  resid2: number;
  productBits: number;
}

export const FACTOR_DTYPES: Record<FactorDType, { code: number; size: number }> = {
  F32: { code: 0, size: 4 },
  F16: { code: 1, size: 2 },
  BF16: { code: 2, size: 2 },
  F64: { code: 3, size: 8 },
};

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
  /** "cuBLAS <version> (<library>)", or why the own GEMM kernel is used. */
  blas?: string;
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
      result =
        b.abiVersion === NATIVE_ABI_VERSION
          ? b
          : new Error(`${file} has ABI version ${String(b.abiVersion)}, this lora needs ${NATIVE_ABI_VERSION} (run npm rebuild)`);
    } catch (e) {
      result = e instanceof Error ? e : new Error(String(e));
    }
  }
  if (override === undefined) cache.set(kind, result);
  return result;
}
