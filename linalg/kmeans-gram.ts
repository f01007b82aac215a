// Lloyd's k-means carried out on the Gram matrix G = XXᵀ of the points (docs/algorithms.md §5.6,
// "k-means in Gram form"). Every centroid Lloyd produces is a weighted mean of points, or a point
// itself for a k-means++ start, so c_q = Σ_{j∈S_q} w_j x_j / W_q and
//   x_i·c_q = Σ_{j∈S_q} w_j G_ij / W_q,   ‖c_q‖² = Σ_{j,l∈S_q} w_j w_l G_jl / W_q²,
// which makes one iteration O(n²) instead of O(n·k·d): for LoRA-LEGO's 128 rank units of
// dimension 15,104 the d-space work is one Gram matrix (already formed for the seeding) and one
// pass over the points for the centroids that are returned. The decisions are those of the
// d-space loop (linalg/js/kmeans.ts, the native kmeansLloyd): the same distance formula, ties to
// the lowest centroid, an emptied cluster keeping its centroid, and a convergence test that falls
// back to the d-space shift whenever the Gram form's rounding could change its outcome.
import type { Mat } from "./types.js";

/** k centroids as weighted sets of points: centroid q = Σ_{a∈[off[q], off[q+1])} coef[a]·x_{idx[a]} / wsum[q]. */
export interface PointClusters {
  idx: Int32Array;
  coef: Float64Array;
  off: Int32Array;
  wsum: Float64Array;
}

export interface GramLloydRun {
  /** The centroids at the end (those the final labels were assigned to). */
  clusters: PointClusters;
  labels: Int32Array;
  /** Σ wᵢ·max(dᵢ, 0) with dᵢ from the Gram form (to rounding; the caller makes the chosen run's exact). */
  inertia: number;
  iterations: number;
}

/** Centroids at the given points (a k-means++ start): coefficient 1, weight 1. */
export function clustersAtPoints(points: ArrayLike<number>): PointClusters {
  const k = points.length;
  return {
    idx: Int32Array.from(points),
    coef: new Float64Array(k).fill(1),
    off: Int32Array.from({ length: k + 1 }, (_, q) => q),
    wsum: new Float64Array(k).fill(1),
  };
}

/** c_q·c'_q from G: Σ_{a∈x_q} Σ_{b∈y_q} coef_a coef_b G[idx_a, idx_b] / (W_q W'_q). */
function centroidDot(G: Float64Array, n: number, x: PointClusters, y: PointClusters, q: number): number {
  let s = 0;
  for (let a = x.off[q]!; a < x.off[q + 1]!; a++) {
    const row = x.idx[a]! * n;
    let t = 0;
    for (let b = y.off[q]!; b < y.off[q + 1]!; b++) t += y.coef[b]! * G[row + y.idx[b]!]!;
    s += x.coef[a]! * t;
  }
  return s / (x.wsum[q]! * y.wsum[q]!);
}

/** ‖c_q‖² of every centroid from G. */
function centroidSquares(G: Float64Array, n: number, c: PointClusters, out: Float64Array): void {
  for (let q = 0; q < c.wsum.length; q++) out[q] = centroidDot(G, n, c, c, q);
}

/** Nearest centroid of every point (ties to the lowest q); returns Σ wᵢ·max(dᵢ, 0). */
function assign(G: Float64Array, n: number, c: PointClusters, w: Float64Array, labels: Int32Array, dots: Float64Array, cc: Float64Array): number {
  const k = c.wsum.length;
  centroidSquares(G, n, c, cc);
  dots.fill(0, 0, k * n);
  for (let q = 0; q < k; q++) {
    const o = q * n;
    for (let a = c.off[q]!; a < c.off[q + 1]!; a++) {
      const row = c.idx[a]! * n,
        f = c.coef[a]!;
      for (let i = 0; i < n; i++) dots[o + i] += f * G[row + i]!;
    }
    const inv = c.wsum[q]!;
    for (let i = 0; i < n; i++) dots[o + i] /= inv;
  }
  let inertia = 0;
  for (let i = 0; i < n; i++) {
    const gii = G[i * n + i]!;
    let best = 0,
      bestD = Infinity;
    for (let q = 0; q < k; q++) {
      const dist = gii + cc[q]! - 2 * dots[q * n + i]!;
      if (dist < bestD) {
        bestD = dist;
        best = q;
      }
    }
    labels[i] = best;
    inertia += w[i]! * Math.max(bestD, 0);
  }
  return inertia;
}

/** The M-step: each cluster's members in point order with their weights; a cluster of zero weight keeps `prev`'s centroid. */
function meansOf(labels: Int32Array, w: Float64Array, prev: PointClusters): PointClusters {
  const n = labels.length,
    k = prev.wsum.length;
  const wsum = new Float64Array(k),
    count = new Int32Array(k);
  for (let i = 0; i < n; i++) {
    wsum[labels[i]!] += w[i]!;
    count[labels[i]!]!++;
  }
  const off = new Int32Array(k + 1);
  for (let q = 0; q < k; q++) off[q + 1] = off[q]! + (wsum[q]! > 0 ? count[q]! : prev.off[q + 1]! - prev.off[q]!);
  const idx = new Int32Array(off[k]!),
    coef = new Float64Array(off[k]!);
  const at = off.slice(0, k);
  for (let i = 0; i < n; i++) {
    const q = labels[i]!;
    if (!(wsum[q]! > 0)) continue;
    idx[at[q]!] = i;
    coef[at[q]!++] = w[i]!;
  }
  for (let q = 0; q < k; q++) {
    if (wsum[q]! > 0) continue;
    wsum[q] = prev.wsum[q]!;
    for (let a = prev.off[q]!, b = off[q]!; a < prev.off[q + 1]!; a++, b++) {
      idx[b] = prev.idx[a]!;
      coef[b] = prev.coef[a]!;
    }
  }
  return { idx, coef, off, wsum };
}

function sameCentroid(a: PointClusters, b: PointClusters, q: number): boolean {
  const len = a.off[q + 1]! - a.off[q]!;
  if (len !== b.off[q + 1]! - b.off[q]! || a.wsum[q] !== b.wsum[q]) return false;
  for (let t = 0; t < len; t++) if (a.idx[a.off[q]! + t] !== b.idx[b.off[q]! + t] || a.coef[a.off[q]! + t] !== b.coef[b.off[q]! + t]) return false;
  return true;
}

/**
 * The centroids as a k×d matrix, summed as the d-space M-step sums them (Σ wᵢxᵢ in point order,
 * then divided by W), so that they are the same numbers.
 */
export function centroidsOf(points: Mat<Float64Array>, c: PointClusters): Float64Array {
  const d = points.cols,
    x = points.data,
    k = c.wsum.length;
  const out = new Float64Array(k * d);
  for (let q = 0; q < k; q++) {
    const o = q * d;
    const end = c.off[q + 1]!;
    let a = c.off[q]!;
    // Four members at a time, each element's sum still in member order (the same numbers).
    for (; a + 4 <= end; a += 4) {
      const x0 = c.idx[a]! * d,
        x1 = c.idx[a + 1]! * d,
        x2 = c.idx[a + 2]! * d,
        x3 = c.idx[a + 3]! * d;
      const f0 = c.coef[a]!,
        f1 = c.coef[a + 1]!,
        f2 = c.coef[a + 2]!,
        f3 = c.coef[a + 3]!;
      for (let j = 0; j < d; j++) out[o + j] = out[o + j]! + f0 * x[x0 + j]! + f1 * x[x1 + j]! + f2 * x[x2 + j]! + f3 * x[x3 + j]!;
    }
    for (; a < end; a++) {
      const xo = c.idx[a]! * d,
        f = c.coef[a]!;
      for (let j = 0; j < d; j++) out[o + j] += f * x[xo + j]!;
    }
    const inv = c.wsum[q]!;
    for (let j = 0; j < d; j++) out[o + j] /= inv;
  }
  return out;
}

/**
 * Σ_q ‖c_q − c'_q‖² from G; when the result is within its rounding of `tol`, the d-space sum
 * (the number the d-space loop compares) decides instead.
 */
function shiftOf(G: Float64Array, n: number, points: Mat<Float64Array>, next: PointClusters, prev: PointClusters, tol: number): number {
  const k = next.wsum.length;
  const ccN = new Float64Array(k),
    ccP = new Float64Array(k);
  centroidSquares(G, n, next, ccN);
  centroidSquares(G, n, prev, ccP);
  let shift = 0,
    scale = 0;
  for (let q = 0; q < k; q++) {
    if (sameCentroid(next, prev, q)) continue;
    const cross = centroidDot(G, n, next, prev, q);
    shift += ccN[q]! + ccP[q]! - 2 * cross;
    scale += ccN[q]! + ccP[q]!;
  }
  shift = Math.max(shift, 0);
  // Rounding of the Gram form: a few ε per term of G, relative to ‖c‖² + ‖c'‖²; 1e-10 is far above it.
  if (Math.abs(shift - tol) > 1e-10 * scale) return shift;
  const a = centroidsOf(points, next),
    b = centroidsOf(points, prev);
  let exact = 0;
  for (let i = 0; i < a.length; i++) exact += (a[i]! - b[i]!) ** 2;
  return exact;
}

/**
 * Lloyd from `start` (sklearn semantics, as linalg/js/kmeans.ts): assign, move each centroid to
 * the weighted mean of its points, stop when the squared shift is ≤ tol or after maxIter; the
 * final labels are those of the returned centroids. `G` is XXᵀ (n×n, row-major).
 */
export function lloydOnGram(G: Float64Array, points: Mat<Float64Array>, start: PointClusters, w: Float64Array, maxIter: number, tol: number): GramLloydRun {
  const n = points.rows,
    k = start.wsum.length;
  const labels = new Int32Array(n),
    dots = new Float64Array(k * n),
    cc = new Float64Array(k);
  let c = start,
    iterations = 0;
  for (let it = 0; it < maxIter; it++) {
    assign(G, n, c, w, labels, dots, cc);
    iterations = it + 1;
    const next = meansOf(labels, w, c);
    const shift = shiftOf(G, n, points, next, c, tol);
    c = next;
    if (shift <= tol) break;
  }
  const inertia = assign(G, n, c, w, labels, dots, cc);
  return { clusters: c, labels, inertia, iterations };
}

/**
 * Σ wᵢ‖xᵢ − c_{labelᵢ}‖² from exact differences, summed per block of 256 points and then over the
 * blocks: the order of the native backend's sum, so that both report the same number.
 */
export function exactInertia(points: Mat<Float64Array>, centroids: Float64Array, labels: Int32Array, w: Float64Array): number {
  const n = points.rows,
    d = points.cols,
    x = points.data;
  let total = 0;
  for (let p = 0; p < n; p += 256) {
    let s = 0;
    for (let i = p; i < Math.min(n, p + 256); i++) {
      const xo = i * d,
        co = labels[i]! * d;
      let di = 0;
      for (let j = 0; j < d; j++) {
        const t = x[xo + j]! - centroids[co + j]!;
        di += t * t;
      }
      s += w[i]! * di;
    }
    total += s;
  }
  return total;
}
