// k-means (linalg/kmeans.ts): sklearn's tolerance scaling, greedy k-means++ seeding, n_init
// restarts and sample weights, on every available backend's Lloyd. Fresh data per run (seed
// printed; LORA_TEST_SEED replays). Tolerances: exact equality for labels, indices and
// determinism; 1e-12 for centroids, and for inertias relative to Σ‖x‖² (the Lloyd kernels use the
// ‖x‖² + ‖c‖² − 2x·c form), against a direct float64 computation.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jsBackend } from "./js/index.js";
import { kmeans, kmeansPlusPlus, sklearnTolerance } from "./kmeans.js";
import { Rng } from "./random.js";
import type { Mat } from "./types.js";
import { testBackends } from "../test/backends.js";

const SEED = process.env["LORA_TEST_SEED"] !== undefined ? Number(process.env["LORA_TEST_SEED"]) : Date.now() % 1_000_000;
console.log(`kmeans.test seed=${SEED} (LORA_TEST_SEED=${SEED} replays this run)`);

/** `c` tight blobs of `per` points around far-apart centres in `d` dims. */
function blobs(rng: Rng, c: number, per: number, d: number, spread = 0.01): { X: Mat<Float64Array>; centres: Float64Array } {
  const centres = rng.normals(c * d, 10);
  const X = new Float64Array(c * per * d);
  for (let q = 0; q < c; q++) for (let p = 0; p < per; p++) for (let j = 0; j < d; j++) X[(q * per + p) * d + j] = centres[q * d + j]! + spread * rng.normal();
  return { X: { rows: c * per, cols: d, data: X }, centres };
}

function inertiaOf(X: Mat<Float64Array>, C: Mat<Float64Array>, labels: Int32Array, w?: Float64Array): number {
  let s = 0;
  for (let i = 0; i < X.rows; i++) {
    let d2 = 0;
    for (let j = 0; j < X.cols; j++) d2 += (X.data[i * X.cols + j]! - C.data[labels[i]! * X.cols + j]!) ** 2;
    s += (w ? w[i]! : 1) * d2;
  }
  return s;
}

test("sklearnTolerance = tol × mean per-feature variance (ddof 0)", () => {
  const X: Mat<Float64Array> = { rows: 4, cols: 2, data: Float64Array.from([1, 10, 2, 20, 3, 30, 4, 40]) };
  // var(col0) = 1.25, var(col1) = 125 → mean 63.125
  assert.ok(Math.abs(sklearnTolerance(X, 1e-4) - 63.125e-4) < 1e-15);
  assert.equal(sklearnTolerance(X, 0), 0);
});

test("k-means++: deterministic per seed, k distinct points, one per well-separated blob", () => {
  const rng = new Rng(SEED);
  const { X } = blobs(rng, 5, 20, 7);
  const a = kmeansPlusPlus(X, 5, new Rng(SEED + 1));
  const b = kmeansPlusPlus(X, 5, new Rng(SEED + 1));
  assert.deepEqual(Array.from(a), Array.from(b));
  assert.equal(new Set(a).size, 5);
  assert.deepEqual(new Set(Array.from(a, (i) => Math.floor(i / 20))).size, 5, "one seed per blob");
});

test("k-means++: distances from the Gram matrix pick the same seeds as exact differences", () => {
  const rng = new Rng(SEED + 6);
  const X: Mat<Float64Array> = { rows: 40, cols: 9, data: rng.normals(360) };
  const G = new Float64Array(1600);
  for (let i = 0; i < 40; i++)
    for (let j = 0; j < 40; j++) {
      let s = 0;
      for (let c = 0; c < 9; c++) s += X.data[i * 9 + c]! * X.data[j * 9 + c]!;
      G[i * 40 + j] = s;
    }
  for (let s = 0; s < 20; s++) {
    const a = kmeansPlusPlus(X, 7, new Rng(SEED + s));
    const b = kmeansPlusPlus(X, 7, new Rng(SEED + s), undefined, undefined, { rows: 40, cols: 40, data: G });
    assert.deepEqual(Array.from(b), Array.from(a));
  }
});

test("k-means++: zero-weight points are never chosen; duplicates of a chosen point neither", () => {
  const rng = new Rng(SEED + 2);
  const { X } = blobs(rng, 3, 10, 4);
  const w = new Float64Array(30).fill(1);
  for (let i = 0; i < 10; i++) w[i] = 0; // blob 0 weightless
  for (let s = 0; s < 20; s++) {
    const idx = kmeansPlusPlus(X, 2, new Rng(SEED + s), w);
    for (const i of idx) assert.ok(i >= 10, `picked zero-weight point ${i}`);
  }
  // Two copies of each of 3 points: k = 3 must pick 3 different locations.
  const base = rng.normals(3 * 5);
  const dup: Mat<Float64Array> = { rows: 6, cols: 5, data: new Float64Array(30) };
  for (let i = 0; i < 6; i++) dup.data.set(base.subarray((i % 3) * 5, (i % 3) * 5 + 5), i * 5);
  for (let s = 0; s < 20; s++) {
    const idx = kmeansPlusPlus(dup, 3, new Rng(SEED + s));
    assert.equal(new Set(Array.from(idx, (i) => i % 3)).size, 3);
  }
});

describe("kmeans on each backend", async () => {
  for (const be of await testBackends()) {
    test(`${be.name}: recovers separated blobs; inertia, labels and centroids consistent`, async () => {
      const rng = new Rng(SEED + 3);
      const { X } = blobs(rng, 4, 15, 6);
      const r = await kmeans(be, X, { k: 4, seed: SEED, nInit: 3 });
      // each blob in one cluster
      for (let q = 0; q < 4; q++) assert.equal(new Set(Array.from(r.labels.subarray(q * 15, q * 15 + 15))).size, 1);
      assert.equal(new Set(Array.from(r.labels)).size, 4);
      const direct = inertiaOf(X, r.centroids, r.labels);
      // Lloyd's distances use ‖x‖² + ‖c‖² − 2x·c, exact to ~ε·‖x‖² per point: compare on that scale.
      const scale = X.data.reduce((s, v) => s + v * v, 0);
      assert.ok(Math.abs(r.inertia - direct) <= 1e-12 * (scale + direct), `${r.inertia} vs ${direct}`);
      // centroids are the cluster means
      for (let c = 0; c < 4; c++) {
        const members = Array.from(r.labels)
          .map((l, i) => (l === c ? i : -1))
          .filter((i) => i >= 0);
        for (let j = 0; j < 6; j++) {
          const mean = members.reduce((s, i) => s + X.data[i * 6 + j]!, 0) / members.length;
          assert.ok(Math.abs(r.centroids.data[c * 6 + j]! - mean) < 1e-12 * (1 + Math.abs(mean)));
        }
      }
    });

    test(`${be.name}: n_init keeps the lowest inertia; same seed ⇒ identical result`, async () => {
      const rng = new Rng(SEED + 4);
      const X: Mat<Float64Array> = { rows: 60, cols: 5, data: rng.normals(300) }; // no structure: restarts differ
      const r = await kmeans(be, X, { k: 6, seed: SEED, nInit: 8 });
      assert.equal(r.runs, 8);
      assert.equal(r.inertias.length, 8);
      assert.equal(r.inertia, Math.min(...r.inertias));
      assert.equal(r.inertias.indexOf(r.inertia), r.bestRun);
      const again = await kmeans(be, X, { k: 6, seed: SEED, nInit: 8 });
      assert.deepEqual(Array.from(again.labels), Array.from(r.labels));
      assert.deepEqual(Array.from(again.centroids.data), Array.from(r.centroids.data));
      const one = await kmeans(be, X, { k: 6, seed: SEED, nInit: 1 });
      assert.equal(one.inertia, r.inertias[0], "run 0 of n_init 8 is the n_init 1 run (one stream)");
    });

    test(`${be.name}: Lloyd in Gram form (n < k·d) makes the backend's d-space decisions, run by run`, async () => {
      const rng = new Rng(SEED + 6);
      const n = 96,
        d = 40,
        k = 7;
      const X: Mat<Float64Array> = { rows: n, cols: d, data: rng.normals(n * d) };
      const w = Float64Array.from({ length: n }, () => 0.25 + rng.uniform());
      const r = await kmeans(be, X, { k, seed: SEED, nInit: 6, weights: w });
      // Reference: each seeding from one stream, then the backend's Lloyd on X, one run after another.
      const seeds = new Rng(SEED);
      const tol = sklearnTolerance(X, 1e-4);
      const scale = X.data.reduce((s, v, i) => s + w[Math.floor(i / d)]! * v * v, 0);
      let bestRun = -1,
        bestInertia = Infinity;
      const ref: Awaited<ReturnType<typeof be.kmeansLloyd>>[] = [];
      for (let run = 0; run < 6; run++) {
        const idx = kmeansPlusPlus(X, k, seeds, w);
        const start = new Float64Array(k * d);
        idx.forEach((p, c) => start.set(X.data.subarray(p * d, (p + 1) * d), c * d));
        const one = await be.kmeansLloyd(X, { rows: k, cols: d, data: start }, { maxIter: 300, tol, weights: w });
        ref.push(one);
        // Gram-form inertias are the d-space ones to rounding (‖x‖² + ‖c‖² − 2x·c on either side).
        assert.ok(Math.abs(r.inertias[run]! - one.inertia) <= 1e-12 * scale, `run ${run}: ${r.inertias[run]} vs ${one.inertia} (seed ${SEED})`);
        if (one.inertia < bestInertia) {
          bestInertia = one.inertia;
          bestRun = run;
        }
      }
      assert.equal(r.bestRun, bestRun, `seed ${SEED}`);
      const b = ref[bestRun]!;
      assert.equal(r.iterations, b.iterations);
      assert.deepEqual(Array.from(r.labels), Array.from(b.labels));
      // The centroids are summed as the d-space M-step sums them: the same numbers.
      assert.deepEqual(Array.from(r.centroids.data), Array.from(b.centroids.data));
      assert.ok(Math.abs(r.inertia - inertiaOf(X, r.centroids, r.labels, w)) <= 1e-12 * r.inertia);
    });

    test(`${be.name}: an integer sample weight equals repeating the point`, async () => {
      const rng = new Rng(SEED + 5);
      const base: Mat<Float64Array> = { rows: 12, cols: 3, data: rng.normals(36) };
      const w = new Float64Array(12).fill(1);
      w[0] = 3;
      w[5] = 2;
      const rep: number[] = [];
      for (let i = 0; i < 12; i++) for (let c = 0; c < w[i]!; c++) rep.push(...base.data.subarray(i * 3, i * 3 + 3));
      const X2: Mat<Float64Array> = { rows: rep.length / 3, cols: 3, data: Float64Array.from(rep) };
      const init: Mat<Float64Array> = { rows: 3, cols: 3, data: Float64Array.from(base.data.subarray(0, 9)) };
      // tol 0 on both so that the differing variances (tol scaling) do not matter
      const a = await kmeans(be, base, { k: 3, init, weights: w, tol: 0 });
      const b = await kmeans(be, X2, { k: 3, init, tol: 0 });
      assert.ok(Math.abs(a.inertia - b.inertia) <= 1e-12 * b.inertia);
      a.centroids.data.forEach((v, i) => assert.ok(Math.abs(v - b.centroids.data[i]!) < 1e-12));
    });
  }
});

test("init 'first' runs Lloyd once from the first k points", async () => {
  const X: Mat<Float64Array> = { rows: 4, cols: 1, data: Float64Array.from([0, 10, 1, 11]) };
  const r = await kmeans(jsBackend, X, { k: 2, init: "first", nInit: 5 });
  assert.equal(r.runs, 1);
  assert.deepEqual(Array.from(r.labels), [0, 1, 0, 1]);
  assert.deepEqual(Array.from(r.centroids.data), [0.5, 10.5]);
  assert.equal(r.inertia, 1);
});

test("errors: k > points, bad weights", async () => {
  const X: Mat<Float64Array> = { rows: 2, cols: 1, data: Float64Array.from([0, 1]) };
  await assert.rejects(kmeans(jsBackend, X, { k: 3 }), /exceeds/);
  await assert.rejects(kmeans(jsBackend, X, { k: 1, weights: Float64Array.from([0, 0]) }), /all zero/);
  await assert.rejects(kmeans(jsBackend, X, { k: 1, weights: Float64Array.from([-1, 1]) }), /≥ 0/);
});
