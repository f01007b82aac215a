// Weighted Lloyd iterations in float64 (sklearn semantics): assign each point to its nearest
// centroid, move each centroid to the weighted mean of its points, stop when the squared
// centroid shift is ≤ tol or after maxIter. An empty cluster keeps its previous centroid.
import type { KmeansLloydOptions, KmeansResult, Mat } from "../types.js";

export function lloyd64(points: Mat<Float64Array>, init: Mat<Float64Array>, opts: KmeansLloydOptions): KmeansResult {
  const n = points.rows,
    d = points.cols,
    k = init.rows;
  if (init.cols !== d) throw new Error("kmeans: centroid dimension differs from the points'");
  const x = points.data;
  const w = opts.weights ?? new Float64Array(n).fill(1);
  let c = Float64Array.from(init.data);
  const labels = new Int32Array(n);
  const xx = rowSquares(x, n, d);
  let iterations = 0;
  const assign = (cent: Float64Array): number => {
    const cc = rowSquares(cent, k, d);
    let inertia = 0;
    for (let i = 0; i < n; i++) {
      let best = 0,
        bestD = Infinity;
      for (let q = 0; q < k; q++) {
        let dot = 0;
        const xi = i * d,
          cq = q * d;
        for (let j = 0; j < d; j++) dot += x[xi + j]! * cent[cq + j]!;
        const dist = xx[i]! + cc[q]! - 2 * dot;
        if (dist < bestD) {
          bestD = dist;
          best = q;
        }
      }
      labels[i] = best;
      inertia += w[i]! * Math.max(bestD, 0);
    }
    return inertia;
  };
  for (let it = 0; it < opts.maxIter; it++) {
    assign(c);
    iterations = it + 1;
    const next = new Float64Array(k * d);
    const wsum = new Float64Array(k);
    for (let i = 0; i < n; i++) {
      const q = labels[i]!,
        wi = w[i]!;
      wsum[q] += wi;
      for (let j = 0; j < d; j++) next[q * d + j] += wi * x[i * d + j]!;
    }
    let shift = 0;
    for (let q = 0; q < k; q++) {
      if (wsum[q]! > 0) for (let j = 0; j < d; j++) next[q * d + j] /= wsum[q]!;
      else for (let j = 0; j < d; j++) next[q * d + j] = c[q * d + j]!;
      for (let j = 0; j < d; j++) shift += (next[q * d + j]! - c[q * d + j]!) ** 2;
    }
    c = next;
    if (shift <= opts.tol) break;
  }
  // Final labels and inertia are those of the returned centroids (as sklearn's final E-step).
  const inertia = assign(c);
  return { centroids: { rows: k, cols: d, data: c }, labels, inertia, iterations };
}

/** ‖row‖² of each of the `rows` rows of a row-major rows×d matrix. */
function rowSquares(a: Float64Array, rows: number, d: number): Float64Array {
  const out = new Float64Array(rows);
  for (let i = 0; i < rows; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += a[i * d + j]! ** 2;
    out[i] = s;
  }
  return out;
}
