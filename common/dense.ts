// Small dense float64 matrices (row-major) for the readers that derive exact factors on read
// (formats/adapter/lycoris/ and families/): a product and a one-sided Jacobi SVD. They serve matrices
// of a few hundred rows at most (LyCORIS's Kronecker factors and Tucker cores, the r×r cores of
// LoRA-XS/NLoRA); the big linear algebra
// stays in linalg/, which formats/ may not import (test/layers.test.ts).
import { eigSymTql } from "./eig-sym.js";

/** C = A·B with A m×k and B k×n, row-major. */
export function matmul(A: Float64Array, m: number, k: number, B: Float64Array, n: number): Float64Array {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const ci = i * n;
    for (let p = 0; p < k; p++) {
      const a = A[i * k + p]!;
      if (a === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) C[ci + j]! += a * B[bp + j]!;
    }
  }
  return C;
}

/** The transpose of an m×n row-major matrix. */
export function transpose(A: Float64Array, m: number, n: number): Float64Array {
  const T = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) T[j * m + i] = A[i * n + j]!;
  return T;
}

/** A thin SVD: U m×k, S (descending), V n×k, k = min(m, n), all row-major. */
export interface SmallSvd {
  U: Float64Array;
  S: Float64Array;
  V: Float64Array;
  k: number;
}

/**
 * The thin SVD of an m×n matrix by one-sided Jacobi (Hestenes): columns are rotated pairwise until
 * orthogonal; σ are their norms. High relative accuracy, O(m·n²) a sweep; for small matrices.
 * A left vector of a zero singular value is left zero.
 */
export function jacobiSvd(M: Float64Array, m: number, n: number): SmallSvd {
  if (m < n) {
    const t = jacobiSvd(transpose(M, m, n), n, m);
    return { U: t.V, S: t.S, V: t.U, k: t.k };
  }
  // Column-major working copies: W (m×n) and V (n×n).
  const W = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) W[j * m + i] = M[i * n + j]!;
  const Vc = new Float64Array(n * n);
  for (let j = 0; j < n; j++) Vc[j * n + j] = 1;
  jacobiSweeps(W, Vc, m, n);
  const norms = Array.from({ length: n }, (_, j) => {
    let s = 0;
    for (let i = 0; i < m; i++) s += W[j * m + i]! ** 2;
    return Math.sqrt(s);
  });
  const order = norms.map((_, j) => j).sort((x, y) => norms[y]! - norms[x]!);
  const k = n;
  const U = new Float64Array(m * k),
    S = new Float64Array(k),
    V = new Float64Array(n * k);
  order.forEach((j, c) => {
    const s = norms[j]!;
    S[c] = s;
    for (let i = 0; i < m; i++) U[i * k + c] = s > 0 ? W[j * m + i]! / s : 0;
    for (let i = 0; i < n; i++) V[i * k + c] = Vc[j * n + i]!;
  });
  return { U, S, V, k };
}

/**
 * The thin SVD of P·Q (P m×r, Q r×n) from those of P and Qᵀ and of the small core between them:
 * P = Up·Sp·Vpᵀ, Qᵀ = Uq·Sq·Vqᵀ, C = Sp·Vpᵀ·Vq·Sq = Uc·Sc·Vcᵀ, so P·Q = (Up·Uc)·Sc·(Uq·Vc)ᵀ.
 * O((m + n)·r²) instead of O(m·n·min(m, n)).
 */
export function lowRankSvd(P: Float64Array, m: number, r: number, Q: Float64Array, n: number): SmallSvd {
  const p = jacobiSvd(P, m, r),
    q = jacobiSvd(transpose(Q, r, n), n, r);
  const kp = p.k,
    kq = q.k;
  // C = diag(Sp)·Vpᵀ·Vq·diag(Sq): kp×kq
  const C = new Float64Array(kp * kq);
  for (let i = 0; i < kp; i++)
    for (let j = 0; j < kq; j++) {
      let s = 0;
      for (let l = 0; l < r; l++) s += p.V[l * kp + i]! * q.V[l * kq + j]!;
      C[i * kq + j] = p.S[i]! * s * q.S[j]!;
    }
  const c = jacobiSvd(C, kp, kq);
  return { U: matmul(p.U, m, kp, c.U, c.k), S: c.S, V: matmul(q.U, n, kq, c.V, c.k), k: c.k };
}

/**
 * One-sided Jacobi (Hestenes) sweeps in place: the n columns of W (m×n, column-major) are rotated
 * pairwise until mutually orthogonal to rounding, and the same rotations applied to the n columns
 * of Vc (n×n, column-major; start from the identity). Afterwards σⱼ = ‖W[:, j]‖ and
 * W[:, j]/σⱼ, Vc[:, j] are the singular pairs. The one copy of the rotation both the readers'
 * small SVD (jacobiSvd) and the js backend's SVD (linalg/js/dense.ts) run.
 */
export function jacobiSweeps(W: Float64Array, Vc: Float64Array, m: number, n: number): void {
  const eps = 2.220446049250313e-16;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let a = 0,
          b = 0,
          g = 0;
        const op = p * m,
          oq = q * m;
        for (let i = 0; i < m; i++) {
          const x = W[op + i]!,
            y = W[oq + i]!;
          a += x * x;
          b += y * y;
          g += x * y;
        }
        if (g === 0 || Math.abs(g) <= eps * Math.sqrt(a * b)) continue;
        rotated = true;
        const zeta = (b - a) / (2 * g);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t),
          s = c * t;
        rotate(W, op, oq, m, c, s);
        rotate(Vc, p * n, q * n, n, c, s);
      }
    }
    if (!rotated) break;
  }
}

/** The two `len`-long columns of X (column-major) at op and oq turned by the plane rotation [c −s; s c]: jacobiSweeps' step. */
function rotate(X: Float64Array, op: number, oq: number, len: number, c: number, s: number): void {
  for (let i = 0; i < len; i++) {
    const x = X[op + i]!,
      y = X[oq + i]!;
    X[op + i] = c * x - s * y;
    X[oq + i] = s * x + c * y;
  }
}

/**
 * The thin SVD of an m×n matrix from the eigen-decomposition of its Gram MᵀM (n ≤ m; else of MMᵀ):
 * σ = √λ, V the eigenvectors, U = M·V/σ. ~10× cheaper than Jacobi for LoKr's 768×192 factors. σ
 * carry an absolute error ≈ ε·σ₁²/σ (relative 1e-8 at σ = 1e-4·σ₁): enough for spectra, energies
 * and the leading pairs a truncation keeps; and Σ σ·u·vᵀ = M·V·Vᵀ = M, so keeping every pair is
 * still exact. Pairs with σ = 0 get a zero u.
 */
export function gramSvd(M: Float64Array, m: number, n: number): SmallSvd {
  if (m < n) {
    const t = gramSvd(transpose(M, m, n), n, m);
    return { U: t.V, S: t.S, V: t.U, k: t.k };
  }
  const G = new Float64Array(n * n);
  for (let i = 0; i < m; i++) {
    const o = i * n;
    for (let a = 0; a < n; a++) {
      const x = M[o + a]!;
      if (x === 0) continue;
      const ga = a * n;
      for (let b = 0; b <= a; b++) G[ga + b]! += x * M[o + b]!;
    }
  }
  const { values, vectors: V } = eigSymTql(G, n);
  const S = Float64Array.from(values, (l) => Math.sqrt(Math.max(l, 0)));
  const U = matmul(M, m, n, V, n);
  for (let k = 0; k < n; k++) {
    const inv = S[k]! > 0 ? 1 / S[k]! : 0;
    for (let i = 0; i < m; i++) U[i * n + k]! *= inv;
  }
  return { U, S, V, k: n };
}
