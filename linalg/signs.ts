// Deterministic signs for singular vectors (docs/algorithms.md §2.5, sklearn's svd_flip on u):
// component i is flipped so that the entry of largest magnitude of u_i is positive (the first
// such entry on ties). Every backend's output goes through this, so all backends agree.
import type { FloatArray, Mat } from "./types.js";

export function flipSigns<T extends FloatArray>(U: Mat<T>, Vt: Mat<T>): void {
  const k = U.cols;
  for (let c = 0; c < k; c++) {
    let best = 0,
      bestAbs = -1;
    for (let i = 0; i < U.rows; i++) {
      const v = U.data[i * k + c]!;
      if (Math.abs(v) > bestAbs) {
        bestAbs = Math.abs(v);
        best = v;
      }
    }
    if (best < 0) {
      for (let i = 0; i < U.rows; i++) U.data[i * k + c] = -U.data[i * k + c]!;
      const n = Vt.cols;
      for (let j = 0; j < n; j++) Vt.data[c * n + j] = -Vt.data[c * n + j]!;
    }
  }
}
