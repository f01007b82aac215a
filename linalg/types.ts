// The typed seam between the numerical core and its backends (js, cpu = BLAS/LAPACK addon,
// cuda). Everything is row-major; shapes travel with the data. Commands never know which
// backend ran: they receive a LinalgBackend from linalg/backend.ts.

export type FloatArray = Float32Array | Float64Array;

/** A dense row-major matrix: element (i, j) is data[i * cols + j]. */
export interface Mat<T extends FloatArray = FloatArray> {
  rows: number;
  cols: number;
  data: T;
}

export interface QrResult<T extends FloatArray = FloatArray> {
  /** rows × k with orthonormal columns, k = min(rows, cols). */
  Q: Mat<T>;
  /** k × cols, upper triangular (upper trapezoidal when cols > rows). */
  R: Mat<T>;
}

export interface SvdResult<T extends FloatArray = FloatArray> {
  /** rows × k, k = min(rows, cols). */
  U: Mat<T>;
  /** k singular values, descending, ≥ 0. */
  S: T;
  /** k × cols. */
  Vt: Mat<T>;
}

export interface EigResult<T extends FloatArray = FloatArray> {
  /** n eigenvalues, descending. */
  values: T;
  /** n × n, column j is the eigenvector of values[j]. */
  vectors: Mat<T>;
}

export interface KmeansLloydOptions {
  /** Per-point sample weights (length = points.rows); default all 1. */
  weights?: Float64Array;
  maxIter: number;
  /** sklearn semantics: stop when Σ‖c_new − c_old‖² ≤ tol · mean per-feature variance · dims. The caller passes the absolute value. */
  tol: number;
}

export interface KmeansResult {
  centroids: Mat<Float64Array>;
  labels: Int32Array;
  /** Σ_i w_i ‖x_i − c_{label_i}‖². */
  inertia: number;
  iterations: number;
}

export type BackendName = "js" | "cpu" | "cuda";

/** One module's factors as stored, for `truncateFactors`. */
export interface RawFactor {
  /** Little-endian values of `dtype`, row-major. */
  raw: Uint8Array;
  dtype: FactorDType;
  rows: number;
  cols: number;
}

export interface TruncateFactorsInput {
  /** out×r */
  B: RawFactor;
  /** r×in */
  A: RawFactor;
  /** s of ΔW = s·B·A */
  scale: number;
  /** 1 ≤ t ≤ r */
  rank: number;
  /** s' of the output: s'·B'·A' is the optimal rank-t approximation. */
  scaleOut: number;
  split: "balanced" | "all-in-up";
  /** dtype of the output factors (F64 not written by lora, but accepted). */
  outDtype: FactorDType;
  /** Products in float64 even for a 16-bit output (tests compare both). */
  productsInDouble?: boolean;
  /** G_B and G_A that factorSpectrum returned for these same bytes: the Gram pass is skipped. */
  grams?: ModuleGrams;
}

/** BᵀB then AAᵀ (r×r each, symmetric, float64) of one module, as the native route forms them. */
export type ModuleGrams = Float64Array;

export interface FactorSpectrumInput {
  B: RawFactor;
  A: RawFactor;
  scale: number;
  /** Also return the Grams, for a truncateFactors of the same bytes. */
  keepGrams?: boolean;
}

export type FactorSpectrumResult =
  | { kind: "done" /** r values, descending */; S: Float64Array /** ‖s·B·A‖²_F */; norm2: number; grams?: ModuleGrams }
  | { kind: "fallback" }
  | { kind: "non-finite"; factor: "A" | "B"; index: number; value: number };

export type TruncateFactorsResult =
  | {
      kind: "done";
      /** out×t values of outDtype, signs normalised (linalg/signs.ts). */
      B: Uint8Array;
      /** t×in */
      A: Uint8Array;
      /** Every singular value of s·B·A (r, descending). */
      S: Float64Array;
      /** ‖s·B·A‖²_F */
      norm2: number;
      /** Σ of the σ² not written: the exact truncation's squared error. */
      err2: number;
      /** What rounding the factors to outDtype adds to the squared error (first order, as truncate.ts truncationError). */
      resid2: number;
      /** 32 when the products B·P, Aᵀ·Qᵀ ran in float32 (16-bit outputs), else 64. */
      productBits: 32 | 64;
    }
  /** The Gram route's guards refused (cancelling or ill-conditioned factors): the caller's general route must run. */
  | { kind: "fallback" }
  | { kind: "non-finite"; factor: "A" | "B"; index: number; value: number };

/** Raw element types `factorStats` decodes (little-endian, as safetensors stores them). */
export type FactorDType = "F32" | "F16" | "BF16" | "F64";

/** Which Gram `factorStats` forms of a rows×cols factor X. */
export type GramSide = "gram-rows" | "gram-cols";

export interface FactorStats {
  /** The decoded values, float64, row-major rows×cols (F16/BF16/F32 are exact in float64). */
  data: Float64Array;
  /**
   * The float64 Gram: X·Xᵀ (rows×rows) for "gram-rows" (a LoRA A, r×in), Xᵀ·X (cols×cols) for
   * "gram-cols" (a LoRA B, out×r). Symmetric up to rounding (callers symmetrize). All zeros when
   * firstNonFinite ≥ 0 (then it is not computed).
   */
  gram: Float64Array;
  /** Index (row-major) of the first NaN/±Inf value, or -1 when every value is finite. */
  firstNonFinite: number;
}

/** Element types of full-model weights (lora apply and extract). */
export type ModelDType = "F32" | "F16" | "BF16";

/** One term coef·B·A of a merge: B out×r, A r×in, float32 row-major. */
export interface MergeTerm {
  B: Float32Array;
  A: Float32Array;
  r: number;
  coef: number;
}

export interface MergeWeightInput {
  /** The stored weight's bytes, rewritten in place with the merged weight. */
  data: Uint8Array;
  dtype: ModelDType;
  /** ΔW is out×in; the weight is stored out×in, or in×out when transposed (GPT-2 Conv1D). */
  out: number;
  in: number;
  transposed: boolean;
  terms: MergeTerm[];
}

/** base-non-finite: the stored weight holds `value` at `index`; overflow: the merged weight is not finite at `index` (the bytes are then partly rewritten). */
export type MergeWeightResult = { kind: "done" } | { kind: "base-non-finite"; index: number; value: number } | { kind: "overflow"; index: number };

export interface WeightDeltaResult {
  /** norm2In + Σ ΔW² (float64, element by element in order). */
  norm2: number;
  /** First index where tuned, base or their difference is NaN/±Inf, -1 if none. */
  firstNonFinite: number;
  which: "tuned" | "base" | "difference" | null;
  /** The offending value (decoded, or the difference). */
  value: number;
}

export interface SketchInput {
  /** rows×cols */
  m: Mat;
  /** cols×l Gaussian test matrix, m's element type. */
  omega: Mat;
  /** Target rank (t ≤ l ≤ min(rows, cols)). */
  t: number;
  /** Allowed relative excess of the squared error, (1 + tol)² − 1. */
  allowed: number;
  /** Rounding floor of the captured energy. */
  floor: number;
  norm2: number;
  maxIters: number;
}

export interface SketchResult {
  /** rows×l, orthonormal columns. */
  Q: Mat<Float64Array>;
  /** SVD of Z = MᵀQ (cols×l): Z = Uz Σ Vzᵀ. */
  Uz: Mat<Float64Array>;
  VzT: Mat<Float64Array>;
  /** l values, descending, ≥ 0. */
  sigma: Float64Array;
  iters: number;
  /** A-posteriori estimate of the error's excess over the optimum (squared). */
  excess2: number;
  /** Stopped because the captured energy's changes were below rounding, not below the tolerance. */
  floorLimited: boolean;
}

/**
 * Every backend implements these with the same semantics; parity tests in linalg/backends.test.ts
 * run one case table against each. The output precision follows the input precision
 * (Float32Array in → Float32Array out) unless stated otherwise.
 */
export interface LinalgBackend {
  readonly name: BackendName;
  /** Human-readable: BLAS name and core type, threads, device name… */
  readonly detail: string;
  /**
   * C = alpha · op(A) · op(B), op = transpose when the flag is set. `finite`: the caller knows both
   * operands hold no NaN/±Inf (products of its own checked data), so the input scan is skipped.
   * `into`: an array of at least m·n elements of A's type, not overlapping A or B, that the backend
   * may write C to (cpu, cuda do: no new array per call); use the returned data either way.
   */
  gemm<T extends FloatArray>(a: Mat<T>, b: Mat<T>, opts?: { transA?: boolean; transB?: boolean; alpha?: number; finite?: boolean; into?: T }): Promise<Mat<T>>;
  /** Thin Householder QR. */
  qr<T extends FloatArray>(a: Mat<T>): Promise<QrResult<T>>;
  /** Thin SVD (all min(rows, cols) triplets). Signs are not normalised here (see linalg/signs.ts). */
  svd<T extends FloatArray>(a: Mat<T>): Promise<SvdResult<T>>;
  /** Eigen-decomposition of a symmetric matrix (only the lower triangle need be valid). */
  eigSym<T extends FloatArray>(a: Mat<T>): Promise<EigResult<T>>;
  /**
   * Lloyd iterations from the given initial centroids (seeding is done in TS by linalg/kmeans.ts,
   * so that every backend agrees). Points and centroids in float64.
   */
  kmeansLloyd(points: Mat<Float64Array>, init: Mat<Float64Array>, opts: KmeansLloydOptions): Promise<KmeansResult>;
  /**
   * One factor's raw tensor bytes in one pass: decode `raw` (rows×cols values of `dtype`) to
   * float64, find the first non-finite value, and form the Gram of the side asked for, in float64.
   * A non-finite value is not an error here: the caller names the tensor (exit 3).
   */
  factorStats(raw: Uint8Array, dtype: FactorDType, rows: number, cols: number, side: GramSide): Promise<FactorStats>;
  /**
   * One module's optimal rank-t truncation from its raw factor bytes to the output's bytes, by the
   * Gram route of linalg/truncate.ts (cpu: one native call on one thread, so that `lanes` modules
   * run side by side under withLanes; js and cuda: linalg/fused.ts over the dense operations).
   * "fallback" when the route's guards refuse: the caller then runs truncate.ts's general route.
   */
  truncateFactors(input: TruncateFactorsInput): Promise<TruncateFactorsResult>;
  /**
   * The singular values of s·B·A from the raw factor bytes (cpu: one native call on one thread, by
   * the float64 Gram route of docs/algorithms.md §2.2, σ below
   * 2e-8·s‖B‖_F‖A‖_F are 0; js and cuda: Householder QR of the factors, linalg/lowrank.ts).
   */
  factorSpectrum(input: FactorSpectrumInput): Promise<FactorSpectrumResult>;
  /**
   * factorSpectrum of several modules, results in order and the same as one call each (cpu, cuda:
   * one native call for them all, so that an adapter of many small modules costs one thread-pool
   * round trip, not one per module; catalog mode).
   */
  factorSpectra(inputs: FactorSpectrumInput[]): Promise<FactorSpectrumResult[]>;
  /**
   * Optional (cpu, cuda; linalg/randomized-svd.ts runs the same steps on any backend without it):
   * randomized SVD (docs/algorithms.md §2.4; Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1) of A
   * (m×n) with the Gaussian test matrix Ω (n×l, drawn by the caller so that every backend gets the
   * same one) and q power iterations, each half-step re-orthonormalised by QR:
   * Q = qr(AΩ); q × {Z = qr(AᵀQ), Q = qr(AZ)}; SVD of QᵀA. The leading `rank` triplets (rank ≤ l ≤
   * min(m, n)), signs not normalised.
   */
  randomizedSvd?<T extends FloatArray>(a: Mat<T>, omega: Mat<T>, powerIters: number, rank: number): Promise<SvdResult<T>>;
  /**
   * `lora apply`'s fused kernel (docs/algorithms.md "apply"): the stored weight decoded to float32,
   * coef·B·A of each term added in order (the product by this backend's float32 gemm with alpha =
   * coef, then one float32 add), encoded back in place, ties to even. cpu and cuda: one native call
   * (common/streamed.h) a block of rows at a time; js: linalg/streamed.ts, the same steps.
   */
  mergeWeight(input: MergeWeightInput): Promise<MergeWeightResult>;
  /**
   * `lora extract`'s fold: delta = tuned − base (float32) for raw values of one dtype, and
   * norm2In + ‖delta‖² (float64); called chunk by chunk, so the norm accumulates across calls.
   */
  weightDelta(tuned: Uint8Array, base: Uint8Array, dtype: ModelDType, delta: Float32Array, norm2In: number): Promise<WeightDeltaResult>;
  /**
   * Randomized range finder with adaptive power iterations (linalg/truncated-svd.ts, Halko et al.
   * Alg. 4.4 with the a-posteriori stopping rule described there): cpu and cuda run it as one
   * native call for a float32 M (no per-step validation of M); js and float64 M: linalg/streamed.ts
   * over the dense operations, the same steps.
   */
  sketch(input: SketchInput): Promise<SketchResult>;
  /**
   * Runs fn with the backend set up for `lanes` single-threaded calls side by side (cpu: every
   * BLAS call on one thread, lanes = its thread count, restored after; elsewhere lanes = 1). Only
   * while no call is in flight.
   */
  withLanes<T>(fn: (lanes: number) => Promise<T>): Promise<T>;
}
