// The parity table: one table of cases run on every backend available on this machine (js
// always; cpu when lora_cpu.node is built and BLAS/LAPACK loads; cuda only where a GPU is
// present), covering every operation of LinalgBackend (gemm, qr, svd, eigSym, kmeansLloyd,
// factorStats, truncateFactors, factorSpectrum, withLanes, and the streamed mergeWeight,
// weightDelta, sketch), each checked against references that
// share no code with the backends.
//
// Data are fresh per run: every case draws from its own stream of a seeded generator; the seed
// is printed (set LORA_TEST_SEED=<n> to replay a run).
//
// Tolerances (relative, stated once): float32 1e-5, float64 1e-12, on
//   gemm     ‖C − C_ref‖_F / (‖op(A)‖_F ‖op(B)‖_F)                       against a float64 triple loop
//   qr       max |QᵀQ − I|, ‖QR − A‖_F / ‖A‖_F, R upper (exact zeros) with R_ii ≥ 0
//   svd      ‖U diag(S) Vt − A‖_F / ‖A‖_F, max |UᵀU − I|, max |Vt Vtᵀ − I|, S descending ≥ 0 (these
//            properties alone pin σ down: Weyl); max |σ − σ_ref| / σ_max against the spectrum the
//            case was built with, where it was, and against numpy (LAPACK) when python3 has it
//   eigSym   ‖A V − V Λ‖_F / ‖A‖_F, max |VᵀV − I|, λ descending; max |λ − λ_ref| / max|λ| against
//            the built spectrum and numpy's eigvalsh, as for svd
//   kmeans   labels and iteration count identical; inertia and centroids within 1e-9 (float64 only),
//            against a straightforward float64 Lloyd with exact distances (same init and stopping rule)
//   fused    factor bytes decoded exactly as common/dtype.ts; Grams within the f64 gemm tolerance;
//            truncateFactors and factorSpectrum on factors built with a known SVD (s·B·A = U Σ Vᵀ):
//            σ within 1e-9·σ_max, s'·B'·A' within 2e-6 of U_t Σ_t V_tᵀ (F32 output), err2 and norm2
//            within 1e-9 of Σ_{i≥t} σ_i² and Σ σ_i² (relative to Σ σ_i²)
// LORA_PARITY_MARGINS=1 prints every measured/tolerance ratio above 1/20.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BackendUnavailableError, InvalidInputError, RuntimeFailure } from "../common/errors.js";
import { decodeToFloat64, encodeFloats } from "../common/dtype.js";
import { listBackends, resolveBackend } from "./backend.js";
import { adaptBinding, probeCpu, probeCuda, type ComputeBinding } from "./native.js";
import type { FactorSpectrumInput, FloatArray, KmeansLloydOptions, LinalgBackend, Mat, RawFactor } from "./types.js";
import { Rng } from "./random.js";
import { mergeWeightOn, sketchOn } from "./streamed.js";
import { hasNumpy, numpy } from "../test/reference.js";

// ---------------------------------------------------------------------------------------------
// Seeded generator

const SEED = process.env.LORA_TEST_SEED !== undefined ? Number(process.env.LORA_TEST_SEED) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
console.log(`backends parity: seed ${SEED} (LORA_TEST_SEED=${SEED} replays this run)`);

function caseSeed(i: number): number {
  let h = (SEED ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// float64 helpers and references

type M64 = Mat<Float64Array>;
type DType = "f32" | "f64";
const TOL: Record<DType, number> = { f32: 1e-5, f64: 1e-12 };

function gaussian(rng: Rng, rows: number, cols: number): M64 {
  const d = new Float64Array(rows * cols);
  for (let i = 0; i < d.length; i++) d[i] = rng.normal();
  return { rows, cols, data: d };
}

function mul(a: M64, b: M64, transA = false, transB = false): M64 {
  const m = transA ? a.cols : a.rows,
    k = transA ? a.rows : a.cols,
    n = transB ? b.rows : b.cols;
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) {
        const x = transA ? a.data[p * a.cols + i]! : a.data[i * a.cols + p]!;
        const y = transB ? b.data[j * b.cols + p]! : b.data[p * b.cols + j]!;
        s += x * y;
      }
      c[i * n + j] = s;
    }
  return { rows: m, cols: n, data: c };
}

function fro(d: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i]! * d[i]!;
  return Math.sqrt(s);
}

function diffFro(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(s);
}

/** max |XᵀX − I| for the columns of X (rows×cols). */
function orthoErr(x: M64): number {
  const g = mul(x, x, true, false);
  let e = 0;
  for (let i = 0; i < g.rows; i++) for (let j = 0; j < g.cols; j++) e = Math.max(e, Math.abs(g.data[i * g.cols + j]! - (i === j ? 1 : 0)));
  return e;
}

function to64(m: Mat): M64 {
  return { rows: m.rows, cols: m.cols, data: Float64Array.from(m.data) };
}

function transpose(m: M64): M64 {
  const d = new Float64Array(m.rows * m.cols);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) d[j * m.rows + i] = m.data[i * m.cols + j]!;
  return { rows: m.cols, cols: m.rows, data: d };
}

/** Orthonormal columns (rows×cols, rows ≥ cols) by Gram–Schmidt, twice. */
function orthonormal(rng: Rng, rows: number, cols: number): M64 {
  const q = transpose(gaussian(rng, rows, cols)); // cols×rows: row j = column j
  for (let j = 0; j < cols; j++) {
    const qj = q.data.subarray(j * rows, (j + 1) * rows);
    for (let pass = 0; pass < 2; pass++)
      for (let p = 0; p < j; p++) {
        const qp = q.data.subarray(p * rows, (p + 1) * rows);
        let d = 0;
        for (let i = 0; i < rows; i++) d += qp[i]! * qj[i]!;
        for (let i = 0; i < rows; i++) qj[i] -= d * qp[i]!;
      }
    const nrm = fro(qj);
    for (let i = 0; i < rows; i++) qj[i] /= nrm;
  }
  return transpose(q);
}

/** The spectrum a case matrix was built with (σ for svd, λ for eigSym), descending, full length. */
const KNOWN = new WeakMap<M64, number[]>();

/** U diag(σ) Vᵀ with random orthonormal U (m×k), V (n×k). */
function withSpectrum(rng: Rng, m: number, n: number, sigma: number[]): M64 {
  const k = sigma.length;
  const u = orthonormal(rng, m, k),
    v = orthonormal(rng, n, k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) u.data[i * k + j] *= sigma[j]!;
  const a = mul(u, v, false, true);
  const full = [...sigma, ...Array<number>(Math.max(0, Math.min(m, n) - k)).fill(0)].sort((x, y) => y - x);
  KNOWN.set(a, full);
  return a;
}

/** Q diag(λ) Qᵀ with a random orthogonal Q (n×n). */
function withEigen(rng: Rng, lambda: number[]): M64 {
  const n = lambda.length;
  const q = orthonormal(rng, n, n);
  const ql = { rows: n, cols: n, data: q.data.map((x, i) => x * lambda[i % n]!) };
  const a = mul(ql, q, false, true);
  KNOWN.set(
    a,
    [...lambda].sort((x, y) => y - x),
  );
  return a;
}

function geometric(k: number, cond: number): number[] {
  return Array.from({ length: k }, (_, i) => (k === 1 ? 1 : cond ** (-i / (k - 1))));
}

/** Straightforward weighted Lloyd in float64 with exact distances (semantics of types.ts / linalg/js). */
function refLloyd(points: M64, init: M64, opts: KmeansLloydOptions): { centroids: Float64Array; labels: Int32Array; inertia: number; iterations: number } {
  const n = points.rows,
    d = points.cols,
    k = init.rows,
    x = points.data;
  const w = opts.weights ?? new Float64Array(n).fill(1);
  let c = Float64Array.from(init.data);
  const labels = new Int32Array(n);
  const assign = (): number => {
    let inertia = 0;
    for (let i = 0; i < n; i++) {
      let best = 0,
        bestD = Infinity;
      for (let q = 0; q < k; q++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += (x[i * d + j]! - c[q * d + j]!) ** 2;
        if (s < bestD) {
          bestD = s;
          best = q;
        }
      }
      labels[i] = best;
      inertia += w[i]! * bestD;
    }
    return inertia;
  };
  let iterations = 0;
  for (let it = 0; it < opts.maxIter; it++) {
    assign();
    iterations = it + 1;
    const next = new Float64Array(k * d),
      ws = new Float64Array(k);
    for (let i = 0; i < n; i++) {
      const q = labels[i]!;
      ws[q] += w[i]!;
      for (let j = 0; j < d; j++) next[q * d + j] += w[i]! * x[i * d + j]!;
    }
    let shift = 0;
    for (let q = 0; q < k; q++)
      for (let j = 0; j < d; j++) {
        next[q * d + j] = ws[q]! > 0 ? next[q * d + j]! / ws[q]! : c[q * d + j]!;
        shift += (next[q * d + j]! - c[q * d + j]!) ** 2;
      }
    c = next;
    if (shift <= opts.tol) break;
  }
  const inertia = assign();
  return { centroids: c, labels, inertia, iterations };
}

// ---------------------------------------------------------------------------------------------
// The case table

function cast(m: M64, dt: DType): Mat {
  return dt === "f64" ? { rows: m.rows, cols: m.cols, data: Float64Array.from(m.data) } : { rows: m.rows, cols: m.cols, data: Float32Array.from(m.data) };
}

type Case =
  | { op: "gemm"; name: string; dt: DType; make: (r: Rng) => { a: M64; b: M64; transA: boolean; transB: boolean; alpha: number } }
  | { op: "qr"; name: string; dt: DType; make: (r: Rng) => M64 }
  | { op: "svd"; name: string; dt: DType; make: (r: Rng) => M64 }
  | { op: "eigSym"; name: string; dt: DType; make: (r: Rng) => M64 }
  | { op: "kmeans"; name: string; dt: "f64"; make: (r: Rng) => { points: M64; init: M64; opts: KmeansLloydOptions } };

function lowRank(r: Rng, m: number, n: number, rank: number): M64 {
  return mul(gaussian(r, m, rank), gaussian(r, rank, n));
}

function symmetric(r: Rng, n: number, garbageUpper: boolean): M64 {
  const g = gaussian(r, n, n);
  const s = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) s[i * n + j] = (g.data[i * n + j]! + g.data[j * n + i]!) / 2;
  if (garbageUpper) for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) s[i * n + j] = 1e3 * r.normal();
  return { rows: n, cols: n, data: s };
}

function blobs(r: Rng, n: number, d: number, centres: number, spread: number): M64 {
  const mu = gaussian(r, centres, d);
  const x = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    const c = r.int(centres);
    for (let j = 0; j < d; j++) x[i * d + j] = 4 * mu.data[c * d + j]! + spread * r.normal();
  }
  return { rows: n, cols: d, data: x };
}

function pickRows(r: Rng, m: M64, k: number): M64 {
  const idx = new Set<number>();
  while (idx.size < k) idx.add(r.int(m.rows));
  const out = new Float64Array(k * m.cols);
  [...idx].forEach((row, q) => out.set(m.data.subarray(row * m.cols, (row + 1) * m.cols), q * m.cols));
  return { rows: k, cols: m.cols, data: out };
}

const DTS: DType[] = ["f32", "f64"];
const cases: Case[] = [];
for (const dt of DTS) {
  const g =
    (m: number, k: number, n: number, transA: boolean, transB: boolean, alpha = 1) =>
    (r: Rng) => ({
      a: transA ? gaussian(r, k, m) : gaussian(r, m, k),
      b: transB ? gaussian(r, n, k) : gaussian(r, k, n),
      transA,
      transB,
      alpha,
    });
  cases.push(
    { op: "gemm", name: `1×1·1×1`, dt, make: g(1, 1, 1, false, false) },
    { op: "gemm", name: `tall 300×16 · 16×40`, dt, make: g(300, 16, 40, false, false) },
    { op: "gemm", name: `Aᵀ: (64×37)ᵀ · 64×300, alpha 0.5`, dt, make: g(37, 64, 300, true, false, 0.5) },
    { op: "gemm", name: `Bᵀ: 5×64 · (37×64)ᵀ`, dt, make: g(5, 64, 37, false, true) },
    { op: "gemm", name: `AᵀBᵀ: wide (16×300)ᵀ · (300×16)ᵀ, alpha −2`, dt, make: g(300, 16, 300, true, true, -2) },
    {
      op: "gemm",
      name: `square 128 rank-1 factors`,
      dt,
      make: (r) => ({ a: lowRank(r, 128, 128, 1), b: gaussian(r, 128, 128), transA: false, transB: false, alpha: 1 }),
    },

    { op: "qr", name: `tall 300×16`, dt, make: (r) => gaussian(r, 300, 16) },
    { op: "qr", name: `tall 1024×64`, dt, make: (r) => gaussian(r, 1024, 64) },
    { op: "qr", name: `square 64×64`, dt, make: (r) => gaussian(r, 64, 64) },
    { op: "qr", name: `wide 16×100`, dt, make: (r) => gaussian(r, 16, 100) },
    { op: "qr", name: `rank-deficient 200×32 rank 5`, dt, make: (r) => lowRank(r, 200, 32, 5) },
    { op: "qr", name: `rank 1, 500×8`, dt, make: (r) => lowRank(r, 500, 8, 1) },
    {
      op: "qr",
      name: `ill-conditioned 128×32 cond 1e${dt === "f32" ? 5 : 12}`,
      dt,
      make: (r) => withSpectrum(r, 128, 32, geometric(32, dt === "f32" ? 1e5 : 1e12)),
    },
    {
      op: "qr",
      name: `zero column, 50×6`,
      dt,
      make: (r) => {
        const m = gaussian(r, 50, 6);
        for (let i = 0; i < 50; i++) m.data[i * 6 + 2] = 0;
        return m;
      },
    },
    { op: "qr", name: `1×1`, dt, make: (r) => gaussian(r, 1, 1) },

    { op: "svd", name: `tall 120×40`, dt, make: (r) => gaussian(r, 120, 40) },
    { op: "svd", name: `wide 30×100`, dt, make: (r) => gaussian(r, 30, 100) },
    { op: "svd", name: `square 64×64`, dt, make: (r) => gaussian(r, 64, 64) },
    { op: "svd", name: `square 96×96 rank 64`, dt, make: (r) => lowRank(r, 96, 96, 64) },
    { op: "svd", name: `rank-deficient 80×60 rank 7`, dt, make: (r) => lowRank(r, 80, 60, 7) },
    { op: "svd", name: `rank 1, 50×50`, dt, make: (r) => lowRank(r, 50, 50, 1) },
    {
      op: "svd",
      name: `ill-conditioned 64×48 cond 1e${dt === "f32" ? 6 : 12}`,
      dt,
      make: (r) => withSpectrum(r, 64, 48, geometric(48, dt === "f32" ? 1e6 : 1e12)),
    },
    { op: "svd", name: `repeated σ, 40×20`, dt, make: (r) => withSpectrum(r, 40, 20, [3, 3, 3, 2, 2, 1, ...Array(14).fill(0.5)]) },
    { op: "svd", name: `1×7`, dt, make: (r) => gaussian(r, 1, 7) },

    { op: "eigSym", name: `1×1`, dt, make: (r) => gaussian(r, 1, 1) },
    { op: "eigSym", name: `random 5×5`, dt, make: (r) => symmetric(r, 5, false) },
    { op: "eigSym", name: `random 64×64`, dt, make: (r) => symmetric(r, 64, false) },
    { op: "eigSym", name: `lower triangle only (upper garbage) 32×32`, dt, make: (r) => symmetric(r, 32, true) },
    {
      op: "eigSym",
      name: `PSD rank 3 of 40 (repeated zeros)`,
      dt,
      make: (r) => {
        const b = gaussian(r, 40, 3);
        return mul(b, b, false, true);
      },
    },
    {
      op: "eigSym",
      name: `Gram of ill-conditioned 100×16`,
      dt,
      make: (r) => {
        const sigma = geometric(16, dt === "f32" ? 1e2 : 1e5);
        const b = withSpectrum(r, 100, 16, sigma);
        const gram = mul(b, b, true, false);
        KNOWN.set(
          gram,
          sigma.map((x) => x * x),
        );
        return gram;
      },
    },
    {
      op: "eigSym",
      name: `known spectrum 24×24: negatives, a repeated value, a zero`,
      dt,
      make: (r) => withEigen(r, [5, 3, 3, 3, 1.5, 0, -0.25, -1, -2, -2, -7, ...Array.from({ length: 13 }, (_, i) => 0.1 * (i + 1))]),
    },
  );
}
cases.push(
  {
    op: "kmeans",
    name: `blobs 500×16 k=8, converges`,
    dt: "f64",
    make: (r) => {
      const p = blobs(r, 500, 16, 8, 1);
      return { points: p, init: pickRows(r, p, 8), opts: { maxIter: 100, tol: 0 } };
    },
  },
  {
    op: "kmeans",
    name: `overlapping 400×6 k=5, maxIter 3`,
    dt: "f64",
    make: (r) => {
      const p = blobs(r, 400, 6, 3, 3);
      return { points: p, init: pickRows(r, p, 5), opts: { maxIter: 3, tol: 0 } };
    },
  },
  {
    op: "kmeans",
    name: `weighted 300×10 k=6, tol 1e-4`,
    dt: "f64",
    make: (r) => {
      const p = blobs(r, 300, 10, 6, 1.5);
      const w = new Float64Array(300).map(() => 0.1 + r.uniform());
      return { points: p, init: pickRows(r, p, 6), opts: { maxIter: 50, tol: 1e-4, weights: w } };
    },
  },
  {
    op: "kmeans",
    name: `empty cluster keeps its centroid, 200×4 k=4`,
    dt: "f64",
    make: (r) => {
      const p = blobs(r, 200, 4, 3, 0.5);
      const init = pickRows(r, p, 4);
      init.data.fill(1e3, 12, 16); // far from every point: never assigned
      return { points: p, init, opts: { maxIter: 30, tol: 0 } };
    },
  },
  {
    op: "kmeans",
    name: `k=1, 64×3`,
    dt: "f64",
    make: (r) => {
      const p = gaussian(r, 64, 3);
      return { points: p, init: pickRows(r, p, 1), opts: { maxIter: 10, tol: 0 } };
    },
  },
  {
    op: "kmeans",
    name: `maxIter 0 (assignment only), 100×5 k=3`,
    dt: "f64",
    make: (r) => {
      const p = gaussian(r, 100, 5);
      return { points: p, init: pickRows(r, p, 3), opts: { maxIter: 0, tol: 0 } };
    },
  },
  {
    op: "kmeans",
    name: `larger 1500×200 k=16`,
    dt: "f64",
    make: (r) => {
      const p = blobs(r, 1500, 200, 16, 3);
      return { points: p, init: pickRows(r, p, 16), opts: { maxIter: 20, tol: 1e-6 } };
    },
  },
);

// ---------------------------------------------------------------------------------------------
// Checks

// σ and λ references, independent of every backend: the spectrum a case was built with (exact,
// up to the float32 cast), and numpy's LAPACK (svd, eigvalsh) on the very matrix a backend gets,
// computed once for the whole table when python3 has numpy.
const NUMPY: Map<number, number[]> | null = (() => {
  if (!hasNumpy()) return null;
  const mats: { i: number; op: string; rows: number; cols: number; data: number[] }[] = [];
  cases.forEach((c, i) => {
    if (c.op !== "svd" && c.op !== "eigSym") return;
    const a = to64(cast(c.make(new Rng(caseSeed(i))), c.dt));
    mats.push({ i, op: c.op, rows: a.rows, cols: a.cols, data: Array.from(a.data) });
  });
  const got = numpy<[number, number[]][]>(
    `out = []
for m in inp:
    a = np.array(m["data"], dtype=np.float64).reshape(m["rows"], m["cols"])
    v = np.linalg.svd(a, compute_uv=False) if m["op"] == "svd" else np.linalg.eigvalsh(a, UPLO="L")[::-1]
    out.append([m["i"], [float(x) for x in v]])
print(json.dumps(out))`,
    mats,
  );
  return new Map(got);
})();
console.log(`backends parity: σ/λ references: built spectra${NUMPY ? " and numpy" : " (numpy not found: python3 -c 'import numpy' failed)"}`);

function references(_c: Case, built: M64, index: number): [string, number[]][] {
  const out: [string, number[]][] = [];
  const known = KNOWN.get(built);
  if (known) out.push(["built", known]);
  const np = NUMPY?.get(index);
  if (np) out.push(["numpy", np]);
  return out;
}

function maxAbsDiff(x: ArrayLike<number>, ref: number[]): number {
  assert.equal(x.length, ref.length, "number of values");
  let e = 0;
  for (let i = 0; i < ref.length; i++) e = Math.max(e, Math.abs(x[i]! - ref[i]!));
  return e;
}

function rel(x: number, scale: number): number {
  return scale === 0 ? x : x / scale;
}

function leq(what: string, got: number, tol: number): void {
  if (process.env.LORA_PARITY_MARGINS && got > tol / 20) console.log(`margin ${(got / tol).toFixed(3)} ${what}`);
  assert.ok(got <= tol, `${what}: ${got.toExponential(3)} > tolerance ${tol.toExponential(1)}`);
}

function checkType(dt: DType, arr: FloatArray, what: string): void {
  assert.ok(dt === "f32" ? arr instanceof Float32Array : arr instanceof Float64Array, `${what} should be ${dt === "f32" ? "Float32Array" : "Float64Array"}`);
}

async function runCase(be: LinalgBackend, c: Case, seed: number, index: number): Promise<void> {
  const rng = new Rng(seed);
  if (c.op === "gemm") {
    const { a, b, transA, transB, alpha } = c.make(rng);
    const A = cast(a, c.dt),
      B = cast(b, c.dt);
    const got = await be.gemm(A, B, { transA, transB, alpha });
    checkType(c.dt, got.data, "C");
    const ref = mul(to64(A), to64(B), transA, transB);
    for (let i = 0; i < ref.data.length; i++) ref.data[i] *= alpha;
    assert.deepEqual([got.rows, got.cols], [ref.rows, ref.cols]);
    leq("‖C − C_ref‖/(‖A‖‖B‖)", rel(diffFro(got.data, ref.data), Math.abs(alpha) * fro(A.data) * fro(B.data)), TOL[c.dt]);
    // `into` (an array longer than C, NaN-filled): the same values; cpu and cuda write them there
    const into = c.dt === "f64" ? new Float64Array(got.data.length + 3).fill(Number.NaN) : new Float32Array(got.data.length + 3).fill(Number.NaN);
    const again = await be.gemm(A, B, { transA, transB, alpha, finite: true, into });
    assert.deepEqual(Array.from(again.data), Array.from(got.data));
    if (be.name !== "js" && got.data.length > 0) {
      assert.equal(again.data.buffer, into.buffer, "C written into the array given");
      assert.ok(Number.isNaN(into[got.data.length]!), "nothing written past m·n");
    }
    return;
  }
  if (c.op === "qr") {
    const A = cast(c.make(rng), c.dt),
      a64 = to64(A);
    const k = Math.min(A.rows, A.cols);
    const { Q, R } = await be.qr(A);
    checkType(c.dt, Q.data, "Q");
    checkType(c.dt, R.data, "R");
    assert.deepEqual([Q.rows, Q.cols, R.rows, R.cols], [A.rows, k, k, A.cols]);
    const q = to64(Q),
      r = to64(R);
    leq("max|QᵀQ − I|", orthoErr(q), TOL[c.dt]);
    leq("‖QR − A‖/‖A‖", rel(diffFro(mul(q, r).data, a64.data), fro(a64.data)), TOL[c.dt]);
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < Math.min(i, A.cols); j++) assert.equal(r.data[i * A.cols + j], 0, `R[${i},${j}] below the diagonal is not 0`);
      assert.ok(r.data[i * A.cols + i]! >= 0, `R[${i},${i}] < 0 (convention: R's diagonal ≥ 0)`);
    }
    return;
  }
  if (c.op === "svd") {
    const built = c.make(rng);
    const A = cast(built, c.dt),
      a64 = to64(A);
    const k = Math.min(A.rows, A.cols);
    const { U, S, Vt } = await be.svd(A);
    checkType(c.dt, U.data, "U");
    checkType(c.dt, S, "S");
    checkType(c.dt, Vt.data, "Vt");
    assert.deepEqual([U.rows, U.cols, S.length, Vt.rows, Vt.cols], [A.rows, k, k, k, A.cols]);
    for (let i = 0; i < k; i++) {
      if (i > 0) assert.ok(S[i]! <= S[i - 1]!, "S not descending");
      assert.ok(S[i]! >= 0, "S has a negative value");
    }
    for (const [from, ref] of references(c, built, index)) leq(`max|σ − σ_${from}|/σ_max`, rel(maxAbsDiff(S, ref), Math.max(...ref.map(Math.abs))), TOL[c.dt]);
    const u = to64(U),
      vt = to64(Vt);
    const us = { rows: u.rows, cols: k, data: u.data.map((x, i) => x * S[i % k]!) };
    leq("‖U S Vt − A‖/‖A‖", rel(diffFro(mul(us, vt).data, a64.data), fro(a64.data)), TOL[c.dt]);
    leq("max|UᵀU − I|", orthoErr(u), TOL[c.dt]);
    leq("max|Vt Vtᵀ − I|", orthoErr(transpose(vt)), TOL[c.dt]);
    return;
  }
  if (c.op === "eigSym") {
    const built = c.make(rng);
    const A = cast(built, c.dt),
      a64 = to64(A);
    const n = A.rows;
    const { values, vectors } = await be.eigSym(A);
    checkType(c.dt, values, "values");
    checkType(c.dt, vectors.data, "vectors");
    for (let i = 1; i < n; i++) assert.ok(values[i]! <= values[i - 1]!, "eigenvalues not descending");
    for (const [from, ref] of references(c, built, index))
      leq(`max|λ − λ_${from}|/max|λ|`, rel(maxAbsDiff(values, ref), Math.max(...ref.map(Math.abs))), TOL[c.dt]);
    const v = to64(vectors);
    const sym = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) sym[i * n + j] = sym[j * n + i] = a64.data[i * n + j]!;
    const av = mul({ rows: n, cols: n, data: sym }, v);
    const vl = v.data.map((x, i) => x * values[i % n]!);
    leq("‖AV − VΛ‖/‖A‖", rel(diffFro(av.data, vl), fro(sym)), TOL[c.dt]);
    leq("max|VᵀV − I|", orthoErr(v), TOL[c.dt]);
    return;
  }
  const { points, init, opts } = c.make(rng);
  const got = await be.kmeansLloyd(points, init, opts);
  const ref = refLloyd(points, init, opts);
  assert.equal(got.iterations, ref.iterations, "iterations");
  let diff = 0;
  for (let i = 0; i < ref.labels.length; i++) if (got.labels[i] !== ref.labels[i]) diff++;
  assert.equal(diff, 0, `${diff} labels differ from the reference`);
  leq("|inertia − ref|/ref", Math.abs(got.inertia - ref.inertia) / Math.max(ref.inertia, 1e-300), 1e-9);
  leq("‖C − C_ref‖/‖C_ref‖", rel(diffFro(got.centroids.data, ref.centroids), fro(ref.centroids)), 1e-9);
}

// ---------------------------------------------------------------------------------------------
// Backends on this machine

const backends: LinalgBackend[] = [(await resolveBackend("js")).backend];
const skippedHere: string[] = [];
const cpu = probeCpu();
if (cpu.ok) backends.push(cpu.backend);
else skippedHere.push(`cpu: ${cpu.reason}`);
const cuda = probeCuda();
// LORA_TEST_CUDA_ADDON=<path to a lora_cuda.node> runs the table on that addon instead, e.g. the
// CPU-emulated build of native/cuda-harness/build-emu-addon.sh on a machine without a GPU.
const cudaForParity = process.env.LORA_TEST_CUDA_ADDON ? probeCuda({ binding: process.env.LORA_TEST_CUDA_ADDON }) : cuda;
if (cudaForParity.ok) backends.push(cudaForParity.backend);
else skippedHere.push(`cuda: ${cudaForParity.reason}`);
for (const s of skippedHere) console.log(`backends parity: skipping ${s}`);

for (const be of backends) {
  describe(`parity on ${be.name} (${be.detail})`, () => {
    cases.forEach((c, index) => {
      const seed = caseSeed(index);
      test(`${c.op} ${c.dt} ${c.name}`, async () => {
        try {
          await runCase(be, c, seed, index);
        } catch (e) {
          if (e instanceof Error) e.message += ` [seed ${SEED}, case ${index}]`;
          throw e;
        }
      });
    });
  });
}

// factorStats: every backend decodes exactly as common/dtype.ts does, names the first non-finite
// element, and forms the float64 Gram within the f64 gemm tolerance.
for (const be of backends) {
  describe(`factorStats on ${be.name}`, () => {
    const dts = ["F16", "BF16", "F32", "F64"] as const;
    dts.forEach((dt, di) => {
      for (const side of ["gram-rows", "gram-cols"] as const) {
        test(`${dt} ${side}`, async () => {
          const rng = new Rng(caseSeed(1000 + di * 2 + (side === "gram-rows" ? 0 : 1)));
          const [rows, cols] = side === "gram-rows" ? [7, 301] : [257, 9];
          const x = new Float64Array(rows * cols);
          for (let i = 0; i < x.length; i++) x[i] = rng.normal() * (i % 13 === 0 ? 1e-6 : 1); // F16 subnormals too
          x[3] = -0;
          const raw = encodeFloats(dt, dt === "F64" ? x : Float32Array.from(x));
          const want = decodeToFloat64(dt, raw);
          const got = await be.factorStats(raw, dt, rows, cols, side);
          assert.equal(got.firstNonFinite, -1);
          assert.equal(got.data.length, want.length);
          for (let i = 0; i < want.length; i++) assert.ok(Object.is(got.data[i], want[i]), `data[${i}] ${got.data[i]} ≠ ${want[i]}`);
          const X = { rows, cols, data: want };
          const ref = (side === "gram-rows" ? mul(X, X, false, true) : mul(X, X, true, false)).data;
          leq("‖G − G_ref‖/‖X‖²", rel(diffFro(got.gram, ref), fro(want) ** 2), TOL.f64);
          // The first non-finite element is named; the Gram is then all zeros.
          for (const [bad, at] of [
            [NaN, 41],
            [Infinity, 5],
            [-Infinity, rows * cols - 1],
          ] as const) {
            const y = Float64Array.from(x);
            y[at] = bad;
            y[rows * cols - 2] = NaN; // a later one is not the first
            const rb = encodeFloats(dt, dt === "F64" ? y : Float32Array.from(y));
            const r = await be.factorStats(rb, dt, rows, cols, side);
            const first = Math.min(at, rows * cols - 2);
            assert.equal(r.firstNonFinite, first, `${bad} at ${at}`);
            assert.ok(!Number.isFinite(r.data[first]!), "the value there is decoded");
            assert.ok(r.gram.every((v) => v === 0));
          }
        });
      }
    });
  });
}

// truncateFactors, factorSpectrum, withLanes: factors built with a known SVD, s·B·A = U Σ Vᵀ with
// B = U diag(σ/s) Q D and A = D⁻¹ Qᵀ Vᵀ (Q a random rotation, D a random positive diagonal, so
// neither factor is orthogonal), stored as F64 so the stored ΔW is the built one to rounding.

interface KnownFactors {
  B: RawFactor;
  A: RawFactor;
  scale: number;
  sigma: number[];
  U: M64;
  V: M64;
  out: number;
  inn: number;
  r: number;
}

function knownFactors(rng: Rng, out: number, inn: number, sigma: number[], scale: number): KnownFactors {
  const r = sigma.length;
  const U = orthonormal(rng, out, r),
    V = orthonormal(rng, inn, r),
    Q = orthonormal(rng, r, r);
  const d = Array.from({ length: r }, () => Math.exp(0.5 * rng.normal()));
  const left = { rows: out, cols: r, data: U.data.map((x, i) => (x * sigma[i % r]!) / scale) };
  const B = mul(left, { rows: r, cols: r, data: Q.data.map((x, i) => x * d[i % r]!) });
  const A = mul({ rows: r, cols: r, data: Q.data.map((x, i) => x / d[i % r]!) }, V, true, true); // (Q D⁻¹)ᵀ Vᵀ
  const raw = (m: M64): RawFactor => ({ raw: encodeFloats("F64", m.data), dtype: "F64", rows: m.rows, cols: m.cols });
  return { B: raw(B), A: raw(A), scale, sigma, U, V, out, inn, r };
}

/** U_t Σ_t V_tᵀ, the optimal rank-t ΔW of known factors. */
function optimalDelta(k: KnownFactors, t: number): M64 {
  const ut = { rows: k.out, cols: t, data: new Float64Array(k.out * t) },
    vt = { rows: k.inn, cols: t, data: new Float64Array(k.inn * t) };
  for (let i = 0; i < k.out; i++) for (let c = 0; c < t; c++) ut.data[i * t + c] = k.U.data[i * k.r + c]! * k.sigma[c]!;
  for (let j = 0; j < k.inn; j++) for (let c = 0; c < t; c++) vt.data[j * t + c] = k.V.data[j * k.r + c]!;
  return mul(ut, vt, false, true);
}

const sumSq = (xs: number[]) => xs.reduce((a, x) => a + x * x, 0);

for (const be of backends) {
  describe(`fused operations on ${be.name}`, () => {
    const sigma = [9, 4, 2.5, 1, 0.5, 0.2, 0.05, 0.01];
    for (const [split, outDtype, tol] of [
      ["balanced", "F32", 2e-6],
      ["all-in-up", "F32", 2e-6],
      ["balanced", "F64", 1e-9],
      ["all-in-up", "F64", 1e-9],
    ] as const) {
      test(`truncateFactors ${split} → ${outDtype}: the optimal rank-t ΔW, its spectrum and error`, async () => {
        const k = knownFactors(new Rng(caseSeed(2000 + (split === "balanced" ? 0 : 1) + (outDtype === "F32" ? 0 : 2))), 97, 61, sigma, 0.75);
        for (const t of [1, 3, 8]) {
          const scaleOut = 0.5;
          const res = await be.truncateFactors({ B: k.B, A: k.A, scale: k.scale, rank: t, scaleOut, split, outDtype });
          assert.equal(res.kind, "done", `rank ${t}`);
          if (res.kind !== "done") return;
          const total = sumSq(k.sigma),
            tail = sumSq(k.sigma.slice(t));
          leq(`rank ${t}: max|σ − σ_built|/σ_max`, maxAbsDiff(res.S, k.sigma) / k.sigma[0]!, 1e-9);
          leq(`rank ${t}: |norm2 − Σσ²|/Σσ²`, Math.abs(res.norm2 - total) / total, 1e-9);
          leq(`rank ${t}: |err2 − Σ_{i≥t}σ²|/Σσ²`, Math.abs(res.err2 - tail) / total, 1e-9);
          assert.ok(res.resid2 >= 0 && res.resid2 <= 1e-10 * total, `resid2 ${res.resid2}`);
          const B = { rows: k.out, cols: t, data: decodeToFloat64(outDtype, res.B) },
            A = { rows: t, cols: k.inn, data: decodeToFloat64(outDtype, res.A) };
          const got = mul(B, A).data.map((x) => x * scaleOut),
            want = optimalDelta(k, t);
          leq(`rank ${t}: ‖s'B'A' − U_tΣ_tV_tᵀ‖/‖ΔW‖`, diffFro(got, want.data) / Math.sqrt(total), tol);
          for (let c = 0; c < t; c++) {
            let best = 0,
              nb = 0,
              na = 0;
            for (let i = 0; i < k.out; i++) {
              const v = B.data[i * t + c]!;
              nb += v * v;
              if (Math.abs(v) > Math.abs(best)) best = v;
            }
            for (let j = 0; j < k.inn; j++) na += A.data[c * k.inn + j]! ** 2;
            assert.ok(best > 0, `column ${c} of B': its largest entry is not positive`);
            // balanced: ‖B'_c‖ = ‖A'_c‖ = √(σ_c/s'); all-in-up: A' has orthonormal rows
            if (split === "balanced") leq(`column ${c}: |‖B'_c‖² − σ_c/s'|·s'/σ_c`, (Math.abs(nb - k.sigma[c]! / scaleOut) * scaleOut) / k.sigma[c]!, 10 * tol);
            if (split === "balanced") leq(`row ${c}: |‖A'_c‖² − σ_c/s'|·s'/σ_c`, (Math.abs(na - k.sigma[c]! / scaleOut) * scaleOut) / k.sigma[c]!, 10 * tol);
            else leq(`row ${c}: |‖A'_c‖ − 1|`, Math.abs(Math.sqrt(na) - 1), 10 * tol);
          }
        }
      });
    }
    test("truncateFactors and factorSpectrum name the first non-finite value (A before B)", async () => {
      const k = knownFactors(new Rng(caseSeed(2010)), 20, 30, [3, 2, 1], 1);
      const poisoned = (f: RawFactor, at: number, v: number): RawFactor => {
        const x = decodeToFloat64("F64", f.raw);
        x[at] = v;
        return { ...f, raw: encodeFloats("F64", x) };
      };
      const badA = poisoned(k.A, 17, NaN),
        badB = poisoned(k.B, 5, -Infinity);
      for (const [B, A, factor, index] of [
        [k.B, badA, "A", 17],
        [badB, k.A, "B", 5],
        [badB, badA, "A", 17],
      ] as const) {
        const t = await be.truncateFactors({ B, A, scale: 1, rank: 2, scaleOut: 1, split: "balanced", outDtype: "F32" });
        const s = await be.factorSpectrum({ B, A, scale: 1 });
        for (const r of [t, s]) {
          assert.equal(r.kind, "non-finite");
          if (r.kind === "non-finite") assert.deepEqual([r.factor, r.index], [factor, index]);
        }
      }
      // F16 factors (the native spectrum scans for them only when its Grams' diagonal is not finite).
      const f16 = (f: RawFactor, at?: number, v?: number): RawFactor => {
        const x = decodeToFloat64("F64", f.raw);
        if (at !== undefined) x[at] = v!;
        return { ...f, dtype: "F16", raw: encodeFloats("F16", x) };
      };
      for (const [B, A, factor, index] of [
        [f16(k.B), f16(k.A, 29, Infinity), "A", 29],
        [f16(k.B, 0, NaN), f16(k.A), "B", 0],
        [f16(k.B, 59, -Infinity), f16(k.A, 0, NaN), "A", 0],
      ] as const) {
        const r = await be.factorSpectrum({ B, A, scale: 1 });
        assert.equal(r.kind, "non-finite");
        if (r.kind === "non-finite") assert.deepEqual([r.factor, r.index], [factor, index]);
      }
    });
    test("truncateFactors refuses cancelling factors (the Gram route's guard): fallback", async () => {
      const rng = new Rng(caseSeed(2011));
      const out = 40,
        inn = 50,
        x = gaussian(rng, out, 1),
        y = gaussian(rng, 1, inn),
        z = gaussian(rng, 1, inn);
      const B = new Float64Array(out * 2),
        A = new Float64Array(2 * inn);
      for (let i = 0; i < out; i++) {
        B[i * 2] = 1e4 * x.data[i]!;
        B[i * 2 + 1] = 1e4 * x.data[i]!;
      }
      for (let j = 0; j < inn; j++) {
        A[j] = y.data[j]!;
        A[inn + j] = -y.data[j]! + 1e-9 * z.data[j]!;
      }
      const r = await be.truncateFactors({
        B: { raw: encodeFloats("F64", B), dtype: "F64", rows: out, cols: 2 },
        A: { raw: encodeFloats("F64", A), dtype: "F64", rows: 2, cols: inn },
        scale: 1,
        rank: 1,
        scaleOut: 1,
        split: "balanced",
        outDtype: "F32",
      });
      assert.equal(r.kind, "fallback");
    });
    test("factorSpectrum: σ, ‖ΔW‖² and the Grams of known factors", async () => {
      const k = knownFactors(new Rng(caseSeed(2012)), 83, 129, sigma, 2);
      const total = sumSq(k.sigma);
      for (const keepGrams of [false, true]) {
        const r = await be.factorSpectrum({ B: k.B, A: k.A, scale: k.scale, ...(keepGrams ? { keepGrams } : {}) });
        assert.equal(r.kind, "done");
        if (r.kind !== "done") return;
        leq("max|σ − σ_built|/σ_max", maxAbsDiff(r.S, k.sigma) / k.sigma[0]!, 1e-9);
        leq("|norm2 − Σσ²|/Σσ²", Math.abs(r.norm2 - total) / total, 1e-9);
        if (!keepGrams) continue;
        assert.ok(r.grams instanceof Float64Array && r.grams.length === 2 * k.r * k.r, "grams: BᵀB then AAᵀ");
        const B = { rows: k.out, cols: k.r, data: decodeToFloat64("F64", k.B.raw) },
          A = { rows: k.r, cols: k.inn, data: decodeToFloat64("F64", k.A.raw) };
        leq("‖G_B − BᵀB‖/‖B‖²", diffFro(r.grams.subarray(0, k.r * k.r), mul(B, B, true).data) / fro(B.data) ** 2, TOL.f64);
        leq("‖G_A − AAᵀ‖/‖A‖²", diffFro(r.grams.subarray(k.r * k.r), mul(A, A, false, true).data) / fro(A.data) ** 2, TOL.f64);
      }
    });
    test("factorSpectra: every module's result is factorSpectrum's, bit for bit (done with and without Grams, non-finite), in order", async () => {
      const rng = new Rng(caseSeed(2014));
      const a = knownFactors(rng, 83, 129, sigma, 2),
        b = knownFactors(rng, 40, 25, [5, 4, 3], 1);
      const bad = decodeToFloat64("F64", b.A.raw);
      bad[7] = NaN;
      const poisoned = { ...b.A, raw: encodeFloats("F64", bad) };
      const inputs: FactorSpectrumInput[] = [
        { B: a.B, A: a.A, scale: a.scale },
        { B: b.B, A: b.A, scale: b.scale, keepGrams: true },
        { B: b.B, A: poisoned, scale: 1 },
        { B: a.B, A: a.A, scale: -0.5, keepGrams: true },
      ];
      const batch = await be.factorSpectra(inputs);
      assert.equal(batch.length, inputs.length);
      for (const [i, x] of inputs.entries()) {
        const one = await be.factorSpectrum(x);
        const got = batch[i]!;
        assert.equal(got.kind, one.kind, `module ${i}`);
        if (got.kind === "done" && one.kind === "done") {
          assert.ok(
            Buffer.from(got.S.buffer, got.S.byteOffset, got.S.byteLength).equals(Buffer.from(one.S.buffer, one.S.byteOffset, one.S.byteLength)),
            `module ${i}: σ`,
          );
          assert.equal(got.norm2, one.norm2);
          assert.deepEqual(got.grams ? Array.from(got.grams) : null, one.grams ? Array.from(one.grams) : null, `module ${i}: Grams`);
        } else assert.deepEqual(got, one, `module ${i}`);
      }
      assert.deepEqual(await be.factorSpectra([]), []);
    });
    test("withLanes: fn gets a whole number of lanes ≥ 1, its value comes back, and the dense ops work inside and after", async () => {
      const rng = new Rng(caseSeed(2013));
      const a = gaussian(rng, 33, 17),
        b = gaussian(rng, 17, 29);
      const check = async () => leq("gemm ‖C − C_ref‖/(‖A‖‖B‖)", diffFro((await be.gemm(a, b)).data, mul(a, b).data) / (fro(a.data) * fro(b.data)), TOL.f64);
      const got = await be.withLanes(async (lanes) => {
        assert.ok(Number.isInteger(lanes) && lanes >= 1, `lanes ${lanes}`);
        await check();
        return "value";
      });
      assert.equal(got, "value");
      await check();
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Streamed full-model operations (lora apply / extract): mergeWeight against W + Σ coef·B·A in
// float64 (within one rounding of the dtype plus float32 accumulation: u_dtype·|ref| +
// 4·2⁻²⁴·(|W| + Σ|coef|·(|B||A|)) per element); weightDelta exactly equal to the float64
// difference rounded once to float32, ‖·‖² within 1e-12; sketch's σ within 1e-4·σ₁ of a built
// spectrum and Q orthonormal to float32 precision. On native backends the one-call kernels must
// give the very bytes of linalg/streamed.ts composed over the same backend's dense operations.

const MODEL_DTYPES = ["F32", "F16", "BF16"] as const;
const UNIT: Record<(typeof MODEL_DTYPES)[number], number> = { F32: 2 ** -24, F16: 2 ** -11, BF16: 2 ** -8 };

function randomWeight(rng: Rng, n: number, dtype: (typeof MODEL_DTYPES)[number]): Uint8Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.normal() * 0.05;
  return encodeFloats(dtype, v);
}

for (const be of backends) {
  describe(`streamed operations on ${be.name}`, () => {
    for (const dtype of MODEL_DTYPES)
      for (const transposed of [false, true])
        test(`mergeWeight ${dtype}${transposed ? " (stored in×out)" : ""}: W + Σ coef·B·A within one rounding; native = the TS steps byte for byte`, async () => {
          const rng = new Rng(caseSeed(3000 + MODEL_DTYPES.indexOf(dtype) * 2 + (transposed ? 1 : 0)));
          const out = be.name === "js" ? 70 : 1100, // > 1024 rows: more than one block on native backends
            inn = 37;
          const terms = [3, 5].map((r, k) => ({
            B: Float32Array.from(gaussian(rng, out, r).data),
            A: Float32Array.from(gaussian(rng, r, inn).data, (x) => x * 0.01),
            r,
            coef: k === 0 ? 0.7 : -1.3,
          }));
          const raw = randomWeight(rng, out * inn, dtype);
          const W = decodeToFloat64(dtype, raw);
          const data = Uint8Array.from(raw);
          const res = await be.mergeWeight({ data, dtype, out, in: inn, transposed, terms });
          assert.equal(res.kind, "done");
          const got = decodeToFloat64(dtype, data);
          let worst = 0;
          for (let i = 0; i < out; i++)
            for (let j = 0; j < inn; j++) {
              const at = transposed ? j * out + i : i * inn + j;
              let ref = W[at]!,
                mag = Math.abs(W[at]!);
              for (const t of terms) {
                let s = 0,
                  a = 0;
                for (let c = 0; c < t.r; c++) {
                  s += t.B[i * t.r + c]! * t.A[c * inn + j]!;
                  a += Math.abs(t.B[i * t.r + c]! * t.A[c * inn + j]!);
                }
                ref += t.coef * s;
                mag += Math.abs(t.coef) * a;
              }
              worst = Math.max(worst, Math.abs(got[at]! - ref) / (UNIT[dtype] * Math.abs(ref) + 4 * 2 ** -24 * mag + 6e-8 * (dtype === "F16" ? 1 : 0)));
            }
          leq("max |W' − ref| / (one rounding + float32 accumulation)", worst, 1);
          if (be.name !== "js") {
            const again = Uint8Array.from(raw);
            await mergeWeightOn(be, { data: again, dtype, out, in: inn, transposed, terms });
            assert.ok(Buffer.from(again).equals(Buffer.from(data)), "the native kernel's bytes differ from linalg/streamed.ts over the same backend");
          }
        });
    test("mergeWeight: a NaN in the base and an overflowing sum are reported, not written as values", async () => {
      const rng = new Rng(caseSeed(3010));
      const out = 20,
        inn = 9;
      const term = { B: Float32Array.from(gaussian(rng, out, 2).data), A: Float32Array.from(gaussian(rng, 2, inn).data), r: 2, coef: 1 };
      const v = new Float32Array(out * inn).fill(0.5);
      v[47] = Number.NaN;
      const nan = await be.mergeWeight({ data: encodeFloats("F32", v), dtype: "F32", out, in: inn, transposed: false, terms: [term] });
      assert.equal(nan.kind, "base-non-finite");
      if (nan.kind === "base-non-finite") assert.equal(nan.index, 47);
      const big = await be.mergeWeight({
        data: encodeFloats("F32", new Float32Array(out * inn).fill(3e38)),
        dtype: "F32",
        out,
        in: inn,
        transposed: false,
        terms: [{ ...term, coef: 1e38 }],
      });
      assert.equal(big.kind, "overflow");
    });
    for (const dtype of MODEL_DTYPES)
      test(`weightDelta ${dtype}: tuned − base exactly, ‖·‖² accumulated across chunks; the first non-finite value named`, async () => {
        const rng = new Rng(caseSeed(3020 + MODEL_DTYPES.indexOf(dtype)));
        const n = 5000;
        const t = randomWeight(rng, n, dtype),
          b = randomWeight(rng, n, dtype);
        const tv = decodeToFloat64(dtype, t),
          bv = decodeToFloat64(dtype, b);
        const delta = new Float32Array(n);
        const es = dtype === "F32" ? 4 : 2;
        const first = await be.weightDelta(t.subarray(0, 3000 * es), b.subarray(0, 3000 * es), dtype, delta.subarray(0, 3000), 0);
        const r = await be.weightDelta(t.subarray(3000 * es), b.subarray(3000 * es), dtype, delta.subarray(3000), first.norm2);
        assert.equal(r.firstNonFinite, -1);
        let norm2 = 0,
          wrong = 0;
        for (let i = 0; i < n; i++) {
          const d = Math.fround(tv[i]! - bv[i]!);
          if (delta[i] !== d) wrong++;
          norm2 += d * d;
        }
        assert.equal(wrong, 0, "values of tuned − base differ from the float64 difference rounded once");
        leq("|norm2 − Σd²|/Σd²", Math.abs(r.norm2 - norm2) / norm2, 1e-12);
        const bad = new Float32Array(10).fill(1);
        bad[6] = Number.POSITIVE_INFINITY;
        const r2 = await be.weightDelta(encodeFloats("F32", new Float32Array(10)), encodeFloats("F32", bad), "F32", new Float32Array(10), 0);
        assert.deepEqual([r2.firstNonFinite, r2.which, r2.value], [6, "base", Number.POSITIVE_INFINITY]);
      });
    test("sketch: σ of a built spectrum within 1e-4·σ₁, Q orthonormal, iterations adapt; native = the TS steps", async () => {
      const rng = new Rng(caseSeed(3030));
      const sigma = Array.from({ length: 40 }, (_, i) => 0.8 ** i);
      const m64 = withSpectrum(rng, 300, 120, sigma);
      const m: Mat<Float32Array> = { rows: 300, cols: 120, data: Float32Array.from(m64.data) };
      const t = 8,
        l = 18;
      const omega: Mat<Float32Array> = { rows: 120, cols: l, data: Float32Array.from(gaussian(rng, 120, l).data) };
      let norm2 = 0;
      for (const x of m.data) norm2 += x * x;
      const x = { m, omega, t, allowed: (1 + 1e-3) ** 2 - 1, floor: 1e-6 * norm2, norm2, maxIters: 12 };
      const r = await be.sketch(x);
      leq("max|σ̃ − σ|/σ₁ (leading t)", maxAbsDiff(r.sigma.subarray(0, t), sigma.slice(0, t)), 1e-4);
      const QtQ = mul(r.Q, r.Q, true);
      let off = 0;
      for (let i = 0; i < l; i++) for (let j = 0; j < l; j++) off = Math.max(off, Math.abs(QtQ.data[i * l + j]! - (i === j ? 1 : 0)));
      leq("max|QᵀQ − I|", off, 1e-5);
      assert.ok(r.iters >= 1 && r.iters <= 12, `iterations ${r.iters}`);
      if (be.name !== "js") {
        const ts = await sketchOn(be, x);
        assert.equal(ts.iters, r.iters, "iterations");
        assert.ok(
          Buffer.from(ts.Q.data.buffer).equals(Buffer.from(r.Q.data.buffer)) && Buffer.from(ts.sigma.buffer).equals(Buffer.from(r.sigma.buffer)),
          "native sketch differs from linalg/streamed.ts",
        );
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Adapter behaviour (with a fake binding, so it runs everywhere) and resolution

function fake(over: Partial<ComputeBinding>): ComputeBinding {
  const no = () => Promise.reject(new Error("not faked"));
  return {
    abiVersion: 1,
    gemm: no,
    qr: no,
    svd: no,
    eigSym: no,
    kmeansLloyd: no,
    factorStats: no,
    truncateFactors: no,
    factorSpectrum: no,
    factorSpectra: no,
    randomizedSvd: no,
    mergeWeight: no,
    weightDelta: no,
    sketch: no,
    ...over,
  };
}

describe("native adapter", () => {
  test("NaN/Inf in an input is an InvalidInputError naming where, before any native call", async () => {
    let called = false;
    const be = adaptBinding(
      "cpu",
      fake({
        svd: async () => {
          called = true;
          throw new Error("x");
        },
      }),
      "fake",
    );
    const a = { rows: 2, cols: 2, data: new Float32Array([1, 2, NaN, 4]) };
    await assert.rejects(be.svd(a), (e: unknown) => e instanceof InvalidInputError && /NaN \(row 1, column 0\)/.test(e.message));
    await assert.rejects(
      be.gemm({ rows: 1, cols: 1, data: new Float64Array([Infinity]) }, { rows: 1, cols: 1, data: new Float64Array([1]) }),
      InvalidInputError,
    );
    assert.equal(called, false);
  });
  test("shape errors are InvalidInputErrors", async () => {
    const be = adaptBinding("cpu", fake({}), "fake");
    await assert.rejects(be.qr({ rows: 2, cols: 3, data: new Float64Array(5) }), InvalidInputError);
    await assert.rejects(be.gemm({ rows: 2, cols: 3, data: new Float64Array(6) }, { rows: 2, cols: 3, data: new Float64Array(6) }), InvalidInputError);
    await assert.rejects(be.eigSym({ rows: 2, cols: 3, data: new Float64Array(6) }), InvalidInputError);
    await assert.rejects(
      be.kmeansLloyd({ rows: 3, cols: 2, data: new Float64Array(6) }, { rows: 1, cols: 3, data: new Float64Array(3) }, { maxIter: 1, tol: 0 }),
      InvalidInputError,
    );
  });
  test("a LAPACK failure becomes a RuntimeFailure with the routine and info", async () => {
    const err = Object.assign(new Error("dgesdd failed (info=3): the divide-and-conquer SVD did not converge"), { code: "LAPACK_INFO", info: 3 });
    const be = adaptBinding("cpu", fake({ svd: () => Promise.reject(err) }), "fake");
    await assert.rejects(
      be.svd({ rows: 2, cols: 2, data: new Float64Array([1, 0, 0, 1]) }),
      (e: unknown) => e instanceof RuntimeFailure && e.exitCode === 1 && /dgesdd.*info=3/.test(e.message),
    );
  });
  test("a NaN produced natively is a RuntimeFailure, never a silent NaN", async () => {
    const be = adaptBinding("cuda", fake({ qr: async () => ({ q: new Float64Array([NaN]), r: new Float64Array([1]) }) }), "fake");
    await assert.rejects(be.qr({ rows: 1, cols: 1, data: new Float64Array([1]) }), RuntimeFailure);
  });
  test("empty shapes are answered without a native call", async () => {
    const be = adaptBinding("cpu", fake({}), "fake");
    const g = await be.gemm({ rows: 3, cols: 0, data: new Float32Array(0) }, { rows: 0, cols: 2, data: new Float32Array(0) });
    assert.deepEqual([g.rows, g.cols, Array.from(g.data)], [3, 2, [0, 0, 0, 0, 0, 0]]);
    const q = await be.qr({ rows: 4, cols: 0, data: new Float64Array(0) });
    assert.deepEqual([q.Q.rows, q.Q.cols, q.R.rows, q.R.cols], [4, 0, 0, 0]);
  });
});

describe("backend resolution", () => {
  test("auto never fails and reports what it skipped", async () => {
    const r = await resolveBackend("auto");
    assert.ok(["cuda", "cpu", "js"].includes(r.backend.name));
    for (const s of r.skipped) assert.ok(s.reason.length > 0);
    // With both, auto is the cpu backend routing the operations above their crossovers to cuda (linalg/native/auto.ts).
    if (cuda.ok && cpu.ok) assert.match(r.backend.detail, /measured crossovers/);
    else if (cuda.ok) assert.equal(r.backend.name, "cuda");
    if (cpu.ok) assert.equal(r.backend.name, "cpu");
  });
  test("an explicit unavailable backend exits 4 with the fix in the message", async () => {
    for (const [name, p] of [
      ["cpu", cpu],
      ["cuda", cuda],
    ] as const) {
      if (p.ok) {
        assert.equal((await resolveBackend(name)).backend.name, name);
      } else {
        await assert.rejects(resolveBackend(name), (e: unknown) => e instanceof BackendUnavailableError && e.exitCode === 4 && /Fix: /.test(e.message));
      }
    }
  });
  test("listBackends has the shape of `lora backends --json`", async () => {
    const list = await listBackends();
    assert.deepEqual(
      list.map((b) => b.name),
      ["cuda", "cpu", "js"],
    );
    for (const b of list) {
      assert.equal(typeof b.available, "boolean");
      assert.equal(typeof b.detail, "string");
      if (b.available) assert.equal("reason" in b, false);
      else assert.equal(typeof b.reason, "string");
      assert.deepEqual(Object.keys(b).sort(), b.available ? ["available", "detail", "name"] : ["available", "detail", "name", "reason"]);
    }
    assert.equal(list.find((b) => b.name === "cpu")!.available, cpu.ok);
  });
  test("cpu: thread count is honoured and calls do not block the event loop", { skip: !cpu.ok && "cpu backend not available" }, async () => {
    const one = (await resolveBackend("cpu", { threads: 1 })).backend;
    assert.match(one.detail, /\b1 thread\b/);
    const rng = new Rng(caseSeed(1000));
    const a = gaussian(rng, 400, 400);
    let immediateRan = false,
      resolvedBeforeImmediate = false;
    const p = one.svd(a).then(() => {
      resolvedBeforeImmediate = !immediateRan;
    });
    setImmediate(() => {
      immediateRan = true;
    });
    await p;
    assert.equal(resolvedBeforeImmediate, false, "the SVD blocked the event loop");
    const all = (await resolveBackend("cpu")).backend; // back to the default (all cores)
    assert.match(all.detail, /\d+ threads?/);
  });
});
