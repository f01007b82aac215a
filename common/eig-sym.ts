// The symmetric eigen-decomposition of the js backend (the r×r eigenproblem of the Gram route,
// docs/algorithms.md §2.2): ml-matrix's Householder tridiagonalisation + implicit
// QL (the EISPACK tred2/tql2 pair). Measured against the cyclic Jacobi of dense.ts it is as exact
// or better (residual ‖Sv − λv‖/λ₁ and ‖VᵀV − I‖ within 20 ε up to r = 128; docs/algorithms.md
// §8) and several times faster from r = 16 up.
import { EigenvalueDecomposition, Matrix } from "ml-matrix";

/** Eigenvalues (descending) and eigenvectors (column j belongs to values[j], row-major n×n) of a symmetric n×n matrix (lower triangle used). */
export function eigSymTql(a: ArrayLike<number>, n: number): { values: Float64Array; vectors: Float64Array } {
  const m = new Matrix(n, n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      m.set(i, j, a[i * n + j]!);
      m.set(j, i, a[i * n + j]!);
    }
  const e = new EigenvalueDecomposition(m, { assumeSymmetric: true });
  const lambda = e.realEigenvalues,
    V = e.eigenvectorMatrix;
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => lambda[y]! - lambda[x]! || x - y);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = lambda[src]!;
    for (let k = 0; k < n; k++) vectors[k * n + dst] = V.get(k, src);
  });
  return { values, vectors };
}
