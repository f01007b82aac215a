// Independent float64 references for tests: dense ΔW from factors and singular values by a route
// that shares nothing with the factor-QR path (Jacobi eigenvalues of the small Gram matrix), plus an
// optional numpy cross-check when python3 with numpy is on the machine.
import { spawnSync } from "node:child_process";
import { eigSym64, gemm64, qr64, svd64 } from "../linalg/js/dense.js";
import type { Rng } from "../linalg/random.js";
import type { Mat } from "../linalg/types.js";

/** Dense s·B·A (out×in) in float64. */
export function denseDelta(B: ArrayLike<number>, A: ArrayLike<number>, out: number, r: number, inn: number, scale: number): Float64Array {
  const d = gemm64(B, out, r, A, r, inn, false, false, scale).data;
  return d;
}

/** Singular values (descending, min(out,in) of them) of a dense out×in matrix via eig of the smaller Gram matrix. */
export function denseSingularValues(m: Float64Array, out: number, inn: number): number[] {
  const tall = out >= inn;
  const g = tall ? gemm64(m, out, inn, m, out, inn, true, false, 1).data : gemm64(m, out, inn, m, out, inn, false, true, 1).data;
  const n = tall ? inn : out;
  return Array.from(eigSym64(g, n).values, (x) => Math.sqrt(Math.max(0, x)));
}

/**
 * Singular values of s·B·A by the Gram route (docs/algorithms.md §2.2):
 * σ² = eig(Lᵀ (s²BᵀB) L) with AAᵀ = LLᵀ (Cholesky). Shares nothing with the QR-core path.
 * Requires A of full row rank (true for trained adapters).
 */
export function gramSingularValues(B: ArrayLike<number>, A: ArrayLike<number>, out: number, r: number, inn: number, scale: number): number[] {
  const gb = gemm64(B, out, r, B, out, r, true, false, scale * scale).data;
  const ga = gemm64(A, r, inn, A, r, inn, false, true, 1).data;
  const L = new Float64Array(r * r);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = ga[i * r + j]!;
      for (let k = 0; k < j; k++) sum -= L[i * r + k]! * L[j * r + k]!;
      if (i === j) {
        if (!(sum > 0)) throw new Error("gramSingularValues: A is rank-deficient");
        L[i * r + i] = Math.sqrt(sum);
      } else L[i * r + j] = sum / L[j * r + j]!;
    }
  }
  const t = gemm64(L, r, r, gemm64(gb, r, r, L, r, r, false, false, 1).data, r, r, true, false, 1).data;
  return Array.from(eigSym64(t, r).values, (x) => Math.sqrt(Math.max(0, x)));
}

let numpyOk: boolean | null = null;
export function hasNumpy(): boolean {
  if (numpyOk === null) numpyOk = spawnSync("python3", ["-c", "import numpy"], { stdio: "ignore" }).status === 0;
  return numpyOk;
}

/** Run a python snippet with numpy; `input` is passed as JSON on stdin; returns parsed JSON stdout. */
export function numpy<T>(code: string, input: unknown): T {
  const r = spawnSync("python3", ["-c", `import sys, json\nimport numpy as np\ninp = json.load(sys.stdin)\n${code}`], {
    input: JSON.stringify(input),
    encoding: "utf8",
    maxBuffer: 1 << 28,
  });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

export function relClose(a: number, b: number, rtol: number, atol = 0): boolean {
  return Math.abs(a - b) <= atol + rtol * Math.abs(b);
}

// Low-rank test data and the dense optimum (commands/truncate tests).

/** The optimal rank-t approximation of an out×in matrix, from its dense SVD. */
export function optimal(W: Float64Array, out: number, inn: number, t: number): { P: Float64Array; S: Float64Array } {
  const { U, S, Vt, k } = svd64(W, out, inn);
  const P = new Float64Array(out * inn);
  for (let c = 0; c < Math.min(t, k); c++) {
    for (let i = 0; i < out; i++) {
      const u = U[i * k + c]! * S[c]!;
      if (u === 0) continue;
      for (let j = 0; j < inn; j++) P[i * inn + j] += u * Vt[c * inn + j]!;
    }
  }
  return { P, S };
}

export function relDiff(x: Float64Array, y: Float64Array): number {
  let d = 0,
    n = 0;
  for (let i = 0; i < x.length; i++) {
    d += (x[i]! - y[i]!) ** 2;
    n += y[i]! ** 2;
  }
  return n === 0 ? Math.sqrt(d) : Math.sqrt(d / n);
}

/** Random orthonormal n×k (QR of a Gaussian). */
export function orth(rng: Rng, n: number, k: number): Float64Array {
  return qr64(rng.normals(n * k), n, k).Q;
}

/** n×r matrix with singular values sv: U diag(sv) Wᵀ. */
export function withSpectrum(rng: Rng, n: number, r: number, sv: number[], left: boolean): Mat<Float64Array> {
  const U = orth(rng, n, r),
    W = orth(rng, r, r);
  const X = new Float64Array(n * r);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < r; j++) {
      let v = 0;
      for (let k = 0; k < r; k++) v += U[i * r + k]! * sv[k]! * W[j * r + k]!;
      X[i * r + j] = v;
    }
  if (left) return { rows: n, cols: r, data: X };
  // r×n: the transpose
  const T = new Float64Array(r * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < r; j++) T[j * n + i] = X[i * r + j]!;
  return { rows: r, cols: n, data: T };
}

export const logspace = (n: number, from: number, to: number) => Array.from({ length: n }, (_, i) => 10 ** (from + ((to - from) * i) / Math.max(1, n - 1)));
