// Deterministic signs for singular vectors (docs/algorithms.md §2.5, sklearn's svd_flip on u):
// component i is flipped so that the entry of largest magnitude of u_i is positive (the first
// such entry on ties). Every backend's output goes through this, so all backends agree.
import type { FloatArray, Mat } from "./types.js";

export function flipSigns<T extends FloatArray>(U: Mat<T>, Vt: Mat<T>): void {
  const k = U.cols,
    u = U.data;
  // One pass over U's rows (row-major) with a running best per column: the same first-largest
  // entry as scanning each column, without k strided passes over U.
  const best = new Float64Array(k),
    bestAbs = new Float64Array(k).fill(-1);
  for (let i = 0; i < U.rows; i++) {
    const row = i * k;
    for (let c = 0; c < k; c++) {
      const v = u[row + c]!,
        a = Math.abs(v);
      if (a > bestAbs[c]!) {
        bestAbs[c] = a;
        best[c] = v;
      }
    }
  }
  const sign = new Float64Array(k);
  let any = false;
  for (let c = 0; c < k; c++) {
    sign[c] = best[c]! < 0 ? -1 : 1;
    if (best[c]! < 0) any = true;
  }
  if (!any) return;
  for (let i = 0; i < U.rows; i++) {
    const row = i * k;
    for (let c = 0; c < k; c++) if (sign[c]! < 0) u[row + c] = -u[row + c]!;
  }
  const n = Vt.cols;
  for (let c = 0; c < k; c++) {
    if (sign[c]! > 0) continue;
    for (let j = 0; j < n; j++) Vt.data[c * n + j] = -Vt.data[c * n + j]!;
  }
}
