// Lloyd in Gram form (linalg/kmeans-gram.ts) against the d-space Lloyd of every available backend
// from the same starts: the same labels, iteration counts and centroids (bit for bit: the
// centroids are summed in the same order), inertia to rounding. Includes an emptied cluster (two
// starts at one point) and a tolerance equal to the shift of the first iteration, where the
// convergence test must take the d-space number. Fresh data per run (seed printed).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { centroidsOf, clustersAtPoints, exactInertia, lloydOnGram } from "./kmeans-gram.js";
import { Rng } from "./random.js";
import type { Mat } from "./types.js";
import { testBackends } from "../test/backends.js";

const SEED = process.env["LORA_TEST_SEED"] !== undefined ? Number(process.env["LORA_TEST_SEED"]) : Date.now() % 1_000_000;
console.log(`kmeans-gram.test seed=${SEED} (LORA_TEST_SEED=${SEED} replays this run)`);

function gramOf(X: Mat<Float64Array>): Float64Array {
  const n = X.rows,
    d = X.cols,
    G = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < d; t++) s += X.data[i * d + t]! * X.data[j * d + t]!;
      G[i * n + j] = s;
    }
  return G;
}

function startAt(X: Mat<Float64Array>, idx: number[]): Mat<Float64Array> {
  const d = X.cols,
    data = new Float64Array(idx.length * d);
  idx.forEach((p, q) => data.set(X.data.subarray(p * d, (p + 1) * d), q * d));
  return { rows: idx.length, cols: d, data };
}

/** The largest double below x (x > 0). */
function below(x: number): number {
  const b = new Float64Array([x]);
  new BigInt64Array(b.buffer)[0]! -= 1n;
  return b[0]!;
}

describe("Lloyd in Gram form against each backend's d-space Lloyd", async () => {
  const rng = new Rng(SEED);
  const n = 40,
    d = 60;
  const X: Mat<Float64Array> = { rows: n, cols: d, data: rng.normals(n * d) };
  const w = Float64Array.from({ length: n }, () => 0.2 + rng.uniform());
  const G = gramOf(X);
  const start5 = startAt(X, [0, 1, 2, 3, 4]);
  const cases: { name: string; idx: number[]; tol: number; maxIter: number }[] = [
    { name: "5 clusters, tol 1e-6", idx: [0, 1, 2, 3, 4], tol: 1e-6, maxIter: 300 },
    { name: "two starts at one point (an emptied cluster keeps its centroid)", idx: [7, 7, 3, 9], tol: 0, maxIter: 50 },
    { name: "maxIter 0 (the starts themselves)", idx: [5, 6, 8], tol: 1e-4, maxIter: 0 },
  ];
  for (const be of await testBackends()) {
    // tol = the first iteration's d-space shift (stop after 1) and the double below it (go on).
    const first = await be.kmeansLloyd(X, start5, { maxIter: 1, tol: 0, weights: w });
    let s = 0;
    for (let i = 0; i < first.centroids.data.length; i++) s += (first.centroids.data[i]! - start5.data[i]!) ** 2;
    const all = [
      ...cases,
      { name: "tol = the first shift", idx: [0, 1, 2, 3, 4], tol: s, maxIter: 300 },
      { name: "tol just below the first shift", idx: [0, 1, 2, 3, 4], tol: below(s), maxIter: 300 },
    ];
    for (const c of all) {
      test(`${be.name}: ${c.name}`, async () => {
        const ref = await be.kmeansLloyd(X, startAt(X, c.idx), { maxIter: c.maxIter, tol: c.tol, weights: w });
        const r = lloydOnGram(G, X, clustersAtPoints(c.idx), w, c.maxIter, c.tol);
        assert.equal(r.iterations, ref.iterations, `seed ${SEED}`);
        assert.deepEqual(Array.from(r.labels), Array.from(ref.labels), `seed ${SEED}`);
        const C = centroidsOf(X, r.clusters);
        assert.deepEqual(Array.from(C), Array.from(ref.centroids.data), `seed ${SEED}`);
        const scale = X.data.reduce((t, v, i) => t + w[Math.floor(i / d)]! * v * v, 0);
        assert.ok(Math.abs(r.inertia - ref.inertia) <= 1e-12 * scale, `${r.inertia} vs ${ref.inertia}`);
        const ex = exactInertia(X, C, r.labels, w);
        assert.ok(Math.abs(ex - ref.inertia) <= 1e-12 * scale);
      });
    }
    test(`${be.name}: the two tolerances around the first shift stop at different iterations`, async () => {
      const stop = lloydOnGram(G, X, clustersAtPoints([0, 1, 2, 3, 4]), w, 300, s);
      const go = lloydOnGram(G, X, clustersAtPoints([0, 1, 2, 3, 4]), w, 300, below(s));
      assert.equal(stop.iterations, 1);
      assert.ok(go.iterations > 1, `seed ${SEED}: the run with tol below the first shift stopped at ${go.iterations}`);
    });
  }
});
