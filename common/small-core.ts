// Small dense float64 products and the SVD of a small square core, for readers that fold a
// family's core into its factors on read (formats/adapter/families/, docs/formats.md "Derived
// modules"). formats/ may not import linalg/, and these are r×r-sized, so plain loops do.

/** C = A·B with A m×k and B k×n, row-major. */
export function matmul(A: ArrayLike<number>, B: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let l = 0; l < k; l++) {
      const a = A[i * k + l]!;
      if (a === 0) continue;
      for (let j = 0; j < n; j++) C[i * n + j]! += a * B[l * n + j]!;
    }
  return C;
}

/** Aᵀ of an m×n row-major matrix. */
export function transpose(A: ArrayLike<number>, m: number, n: number): Float64Array {
  const T = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) T[j * m + i] = A[i * n + j]!;
  return T;
}

/**
 * SVD of an n×n matrix M = U·diag(S)·Vᵀ by one-sided Jacobi (Hestenes): orthogonal rotations of
 * the columns of M until they are mutually orthogonal. U, V are n×n row-major; S descending.
 * Accurate to a few ulps of ‖M‖ for the small cores it serves (r ≤ a few hundred).
 */
export function smallSvd(M: ArrayLike<number>, n: number): { U: Float64Array; S: Float64Array; V: Float64Array } {
  const W = Float64Array.from(M as ArrayLike<number>); // columns rotated in place: W = U·Σ at the end
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++)
      for (let q = p + 1; q < n; q++) {
        let a = 0,
          b = 0,
          c = 0;
        for (let i = 0; i < n; i++) {
          const x = W[i * n + p]!,
            y = W[i * n + q]!;
          a += x * x;
          b += y * y;
          c += x * y;
        }
        if (c === 0 || Math.abs(c) <= 1e-15 * Math.sqrt(a * b)) continue;
        rotated = true;
        const zeta = (b - a) / (2 * c);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const cs = 1 / Math.sqrt(1 + t * t),
          sn = cs * t;
        for (const X of [W, V]) {
          for (let i = 0; i < n; i++) {
            const x = X[i * n + p]!,
              y = X[i * n + q]!;
            X[i * n + p] = cs * x - sn * y;
            X[i * n + q] = sn * x + cs * y;
          }
        }
      }
    if (!rotated) break;
  }
  const norms = Array.from({ length: n }, (_, j) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += W[i * n + j]! ** 2;
    return Math.sqrt(s);
  });
  const order = norms.map((_, j) => j).sort((x, y) => norms[y]! - norms[x]!);
  const U = new Float64Array(n * n),
    Vs = new Float64Array(n * n),
    S = new Float64Array(n);
  order.forEach((j, k) => {
    S[k] = norms[j]!;
    for (let i = 0; i < n; i++) {
      // A zero column leaves U's column zero: U·Σ still equals W there, which is all callers need.
      U[i * n + k] = norms[j]! > 0 ? W[i * n + j]! / norms[j]! : 0;
      Vs[i * n + k] = V[i * n + j]!;
    }
  });
  return { U, S, V: Vs };
}
