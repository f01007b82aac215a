// k-means with scikit-learn's conventions (the settings LoRA-LEGO reimplementations use,
// docs/algorithms.md §5.6): greedy k-means++ seeding (`_kmeans_plusplus`: 2 + ⌊ln k⌋ local
// trials per centre, each candidate drawn ∝ w·D², the one that lowers the potential most kept),
// n_init restarts keeping the lowest inertia, sample weights, and an absolute tolerance of
// tol × (mean per-feature variance of the points) (sklearn's `_tolerance`). Seeding runs here in
// TypeScript from a seeded Rng, so every backend starts from the same centroids. Lloyd runs in
// Gram form here when there are fewer points than k·d (LoRA-LEGO's case: linalg/kmeans-gram.ts),
// else on the backend (native where available); both routes make the same decisions.
import { mapInLanes } from "../common/map-in-lanes.js";
import { Rng } from "./random.js";
import type { KmeansResult, LinalgBackend, Mat } from "./types.js";
import { searchsortedLeft } from "./search-sorted.js";
import { centroidsOf, clustersAtPoints, exactInertia, lloydOnGram, type PointClusters } from "./kmeans-gram.js";

/** "k-means++" (default), "first" (the first k points: for golden examples), or explicit centroids. */
export type KmeansInit = "k-means++" | "first" | Mat<Float64Array>;

export interface KmeansOptions {
  k: number;
  /** Restarts with k-means++ seeding; forced to 1 for "first" or explicit centroids (as sklearn). Default 10. */
  nInit?: number;
  /** Lloyd iterations per run. Default 300. */
  maxIter?: number;
  /** Relative tolerance, scaled by the mean per-feature variance. Default 1e-4. */
  tol?: number;
  /** Seed of the k-means++ draws. Default 0. */
  seed?: number;
  /** Sample weights (≥ 0, not all 0); default all 1. */
  weights?: Float64Array;
  init?: KmeansInit;
}

export interface KmeansRun extends KmeansResult {
  /** Number of runs made and the index of the one returned. */
  runs: number;
  bestRun: number;
  /** Inertia of every run, in order. */
  inertias: number[];
  /** The absolute tolerance handed to Lloyd. */
  tolAbs: number;
}

/** sklearn `_tolerance`: tol × mean over features of the (unweighted, ddof 0) variance. */
export function sklearnTolerance(points: Mat<Float64Array>, tol: number): number {
  if (tol === 0) return 0;
  const n = points.rows,
    d = points.cols,
    x = points.data;
  if (n === 0 || d === 0) return 0;
  // Two row-major passes (column means, then squared deviations): cache-friendly for wide points.
  // Four rows at a time, each column's sum still taken in row order (the same numbers, a quarter
  // of the loads and stores of the sums).
  const mean = new Float64Array(d),
    ss = new Float64Array(d);
  const n4 = n - (n % 4);
  for (let i = 0; i < n4; i += 4) {
    const o0 = i * d,
      o1 = o0 + d,
      o2 = o1 + d,
      o3 = o2 + d;
    for (let j = 0; j < d; j++) mean[j] = mean[j]! + x[o0 + j]! + x[o1 + j]! + x[o2 + j]! + x[o3 + j]!;
  }
  for (let i = n4; i < n; i++) for (let j = 0, o = i * d; j < d; j++) mean[j] += x[o + j]!;
  for (let j = 0; j < d; j++) mean[j] /= n;
  for (let i = 0; i < n4; i += 4) {
    const o0 = i * d,
      o1 = o0 + d,
      o2 = o1 + d,
      o3 = o2 + d;
    for (let j = 0; j < d; j++) {
      const m = mean[j]!,
        t0 = x[o0 + j]! - m,
        t1 = x[o1 + j]! - m,
        t2 = x[o2 + j]! - m,
        t3 = x[o3 + j]! - m;
      ss[j] = ss[j]! + t0 * t0 + t1 * t1 + t2 * t2 + t3 * t3;
    }
  }
  for (let i = n4; i < n; i++)
    for (let j = 0, o = i * d; j < d; j++) {
      const t = x[o + j]! - mean[j]!;
      ss[j] += t * t;
    }
  let total = 0;
  for (let j = 0; j < d; j++) total += ss[j]! / n;
  return (total / d) * tol;
}

/**
 * Squared distances from point `c` to every point: from the Gram matrix G = XXᵀ when given
 * (Gᵢᵢ + G_cc − 2Gᵢc, clamped at 0: sklearn's `_euclidean_distances` form), else exact differences.
 */
function distancesTo(points: Mat<Float64Array>, c: number, out: Float64Array, gram?: Mat<Float64Array>): void {
  const n = points.rows,
    d = points.cols,
    x = points.data,
    off = c * d;
  if (gram) {
    const g = gram.data,
      gcc = g[c * n + c]!;
    for (let i = 0; i < n; i++) out[i] = i === c ? 0 : Math.max(g[i * n + i]! + gcc - 2 * g[i * n + c]!, 0);
    return;
  }
  for (let i = 0; i < n; i++) {
    let s = 0;
    const o = i * d;
    for (let j = 0; j < d; j++) {
      const t = x[o + j]! - x[off + j]!;
      s += t * t;
    }
    out[i] = s;
  }
}

/** First index whose cumulative sum is ≥ v (numpy searchsorted side="left"), clipped to n−1. */
const searchLeft = (cum: Float64Array, v: number): number => Math.min(searchsortedLeft(cum, v), cum.length - 1);

/**
 * Greedy k-means++ (sklearn `_kmeans_plusplus`): the indices of the k points chosen as initial
 * centres. The first is drawn ∝ w; each next one is the best of `nLocalTrials` candidates drawn
 * ∝ w·D² (best = lowest resulting potential Σ w·min D²; the first among potentials equal to 1e-12 relative, so that both distance routes agree on exact ties). With `gram` (XXᵀ)
 * the distances come from it, which makes every seeding O(n) per candidate instead of O(n·d).
 */
export function kmeansPlusPlus(
  points: Mat<Float64Array>,
  k: number,
  rng: Rng,
  weights?: Float64Array,
  nLocalTrials?: number,
  gram?: Mat<Float64Array>,
): Int32Array {
  const n = points.rows;
  if (k < 1 || k > n) throw new Error(`kmeans++: k = ${k} with ${n} points`);
  const w = weights ?? new Float64Array(n).fill(1);
  const trials = nLocalTrials ?? 2 + Math.floor(Math.log(k));
  const chosen = new Int32Array(k);
  // First centre: numpy's choice(n, p = w/Σw): cdf.searchsorted(u, side="right").
  let wsum = 0;
  const cdf = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    wsum += w[i]!;
    cdf[i] = wsum;
  }
  const u = rng.uniform() * wsum;
  let first = 0;
  while (first < n - 1 && cdf[first]! <= u) first++;
  chosen[0] = first;
  let closest = new Float64Array(n);
  distancesTo(points, first, closest, gram);
  let pot = 0;
  for (let i = 0; i < n; i++) pot += w[i]! * closest[i]!;
  const cum = new Float64Array(n);
  const cand = new Float64Array(n);
  let best = new Float64Array(n);
  for (let c = 1; c < k; c++) {
    let acc = 0;
    for (let i = 0; i < n; i++) {
      acc += w[i]! * closest[i]!;
      cum[i] = acc;
    }
    let bestPot = Infinity,
      bestId = -1;
    for (let t = 0; t < trials; t++) {
      const id = searchLeft(cum, rng.uniform() * pot);
      distancesTo(points, id, cand, gram);
      let p = 0;
      for (let i = 0; i < n; i++) {
        const v = Math.min(closest[i]!, cand[i]!);
        cand[i] = v;
        p += w[i]! * v;
      }
      // Strictly better beyond rounding: candidates whose potentials tie in exact arithmetic (two
      // mutually nearest points, each improving only the pair) keep the first, whichever distance
      // route (exact differences or the Gram identity) computed them.
      if (p < bestPot * (1 - 1e-12)) {
        bestPot = p;
        bestId = id;
        best.set(cand);
      }
    }
    chosen[c] = bestId;
    pot = bestPot;
    const tmp = closest;
    closest = best;
    best = tmp;
  }
  return chosen;
}

/** Largest n² for which the seeding precomputes XXᵀ (32 MiB of float64). */
const GRAM_MAX = 4_194_304;

function gather(points: Mat<Float64Array>, idx: ArrayLike<number>): Mat<Float64Array> {
  const d = points.cols,
    k = idx.length;
  const out = new Float64Array(k * d);
  for (let c = 0; c < k; c++) out.set(points.data.subarray(idx[c]! * d, (idx[c]! + 1) * d), c * d);
  return { rows: k, cols: d, data: out };
}

/**
 * k-means on the backend: nInit seedings from one Rng(seed) (sklearn draws every restart from one
 * random state too), Lloyd from each, the lowest inertia kept (the earliest run on ties).
 */
export async function kmeans(be: LinalgBackend, points: Mat<Float64Array>, o: KmeansOptions): Promise<KmeansRun> {
  const n = points.rows,
    k = o.k;
  if (!Number.isInteger(k) || k < 1) throw new Error(`kmeans: k must be a positive integer (got ${k})`);
  if (k > n) throw new Error(`kmeans: k = ${k} exceeds the ${n} points`);
  if (o.weights) {
    if (o.weights.length !== n) throw new Error(`kmeans: ${o.weights.length} weights for ${n} points`);
    let s = 0;
    for (const x of o.weights) {
      if (!(x >= 0) || !Number.isFinite(x)) throw new Error(`kmeans: weight ${x} is not finite and ≥ 0`);
      s += x;
    }
    if (!(s > 0)) throw new Error("kmeans: the sample weights are all zero");
  }
  const init = o.init ?? "k-means++";
  const maxIter = o.maxIter ?? 300;
  const tolAbs = sklearnTolerance(points, o.tol ?? 1e-4);
  const nInit = init === "k-means++" ? (o.nInit ?? 10) : 1;
  const rng = new Rng(o.seed ?? 0);
  // One Gram matrix on the backend serves every k-means++ draw of every restart (n² ≤ GRAM_MAX),
  // and Lloyd itself when it is the cheaper route (n ≤ k·d: an iteration costs n² on G, n·k·d on X).
  const pointStarts = init === "k-means++" || init === "first";
  const gram = pointStarts && n * n <= GRAM_MAX ? ((await be.gemm(points, points, { transB: true })) as Mat<Float64Array>) : undefined;
  // Every seeding first, from the one Rng in run order (Lloyd draws nothing, so these are the
  // centroids a run-by-run loop would start from).
  const startIdx: Int32Array[] = [];
  for (let run = 0; run < nInit && pointStarts; run++)
    startIdx.push(init === "k-means++" ? kmeansPlusPlus(points, k, rng, o.weights, undefined, gram) : Int32Array.from({ length: k }, (_, i) => i));
  if (gram && n <= k * points.cols) return kmeansOnGram(points, gram.data, startIdx, o.weights ?? new Float64Array(n).fill(1), maxIter, tolAbs);
  const lloydOpts = { maxIter, tol: tolAbs, ...(o.weights ? { weights: o.weights } : {}) };
  let starts: Mat<Float64Array>[];
  if (pointStarts) starts = startIdx.map((idx) => gather(points, idx));
  else {
    const c = init as Mat<Float64Array>;
    if (c.rows !== k || c.cols !== points.cols) throw new Error(`kmeans: initial centroids are ${c.rows}×${c.cols}, expected ${k}×${points.cols}`);
    starts = [{ rows: k, cols: c.cols, data: Float64Array.from(c.data) }];
  }
  // The Lloyd runs side by side in the backend's lanes: the same results as one after another.
  const results = await inLanes(be, starts, (start) => be.kmeansLloyd(points, start, lloydOpts));
  let best: KmeansResult | null = null;
  let bestRun = 0;
  const inertias: number[] = [];
  for (let run = 0; run < results.length; run++) {
    const r = results[run]!;
    inertias.push(r.inertia);
    if (best === null || r.inertia < best.inertia) {
      best = r;
      bestRun = run;
    }
  }
  return { ...best!, runs: nInit, bestRun, inertias, tolAbs };
}

/**
 * Every run's Lloyd in Gram form (linalg/kmeans-gram.ts), then the exact inertia (d-space, as the
 * backends sum it) of every run whose Gram-form inertia is within rounding of the lowest, so that
 * the run kept is the one the d-space loop keeps (lowest exact inertia, earliest on ties).
 */
function kmeansOnGram(points: Mat<Float64Array>, G: Float64Array, startIdx: Int32Array[], w: Float64Array, maxIter: number, tolAbs: number): KmeansRun {
  const n = points.rows,
    d = points.cols;
  const runs = startIdx.map((idx) => lloydOnGram(G, points, clustersAtPoints(idx), w, maxIter, tolAbs));
  const inertias = runs.map((r) => r.inertia);
  let scale = 0;
  for (let i = 0; i < n; i++) scale += w[i]! * G[i * n + i]!;
  const lowest = Math.min(...inertias);
  let best = -1,
    bestInertia = Infinity,
    bestCentroids: Float64Array | null = null;
  const exact: { run: number; inertia: number; centroids: Float64Array }[] = [];
  for (let run = 0; run < runs.length; run++) {
    if (!(inertias[run]! <= lowest + 1e-9 * scale)) continue;
    const r = runs[run]!;
    const same = exact.find((e) => sameValues(runs[e.run]!.labels, r.labels) && sameClusters(runs[e.run]!.clusters, r.clusters));
    const centroids = same ? same.centroids : centroidsOf(points, r.clusters);
    const inertia = same ? same.inertia : exactInertia(points, centroids, r.labels, w);
    exact.push({ run, inertia, centroids });
    inertias[run] = inertia;
    if (inertia < bestInertia) {
      bestInertia = inertia;
      best = run;
      bestCentroids = centroids;
    }
  }
  const r = runs[best]!;
  return {
    centroids: { rows: r.clusters.wsum.length, cols: d, data: bestCentroids! },
    labels: r.labels,
    inertia: bestInertia,
    iterations: r.iterations,
    runs: runs.length,
    bestRun: best,
    inertias,
    tolAbs,
  };
}

function sameValues(x: ArrayLike<number>, y: ArrayLike<number>): boolean {
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

function sameClusters(a: PointClusters, b: PointClusters): boolean {
  return sameValues(a.idx, b.idx) && sameValues(a.coef, b.coef) && sameValues(a.off, b.off) && sameValues(a.wsum, b.wsum);
}

/** fn over every item, at most the backend's lane count at a time (one at a time without withLanes); results in item order. */
async function inLanes<I, R>(be: LinalgBackend, items: I[], fn: (item: I) => Promise<R>): Promise<R[]> {
  const run = (lanes: number) => mapInLanes(items, lanes, (item) => fn(item));
  if (be.withLanes && items.length > 1) return be.withLanes(run);
  return run(1);
}
