// Randomized SVD (linalg/randomized-svd.ts, docs/algorithms.md §2.4) against a dense float64 SVD on
// fresh random matrices (seed printed; LORA_TEST_SEED replays). Tolerances: rank ≤ ℓ matrices are
// recovered exactly (σ within 1e-10 relative, reconstruction 1e-10); low-rank + noise gives σ
// within rtol 1e-3 for q = 2 (the docs/algorithms.md §2.4 acceptance figure); same seed ⇒ identical bits.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { gemm64, svd64 } from "./js/dense.js";
import { randomizedSvd } from "./randomized-svd.js";
import { Rng } from "./random.js";
import type { Mat } from "./types.js";
import { testBackends } from "../test/backends.js";

const SEED = process.env["LORA_TEST_SEED"] !== undefined ? Number(process.env["LORA_TEST_SEED"]) : Date.now() % 1_000_000;
console.log(`randomized-svd.test seed=${SEED} (LORA_TEST_SEED=${SEED} replays this run)`);

/** Σ σᵢ uᵢvᵢᵀ with random orthonormal-ish factors: rank r, spectrum `sig`, plus noise. */
function lowRankPlusNoise(rng: Rng, d: number, k: number, sig: number[], noise: number): Mat<Float64Array> {
  const r = sig.length;
  const U = svd64(rng.normals(d * r), d, r).U,
    V = svd64(rng.normals(k * r), k, r).U;
  const US = new Float64Array(d * r);
  for (let i = 0; i < d; i++) for (let j = 0; j < r; j++) US[i * r + j] = U[i * r + j]! * sig[j]!;
  const M = gemm64(US, d, r, V, k, r, false, true, 1).data;
  for (let i = 0; i < M.length; i++) M[i] += noise * rng.normal();
  return { rows: d, cols: k, data: M };
}

function reconstruct(U: Mat<Float64Array>, S: Float64Array, Vt: Mat<Float64Array>): Float64Array {
  const t = S.length,
    US = new Float64Array(U.rows * t);
  for (let i = 0; i < U.rows; i++) for (let j = 0; j < t; j++) US[i * t + j] = U.data[i * t + j]! * S[j]!;
  return gemm64(US, U.rows, t, Vt.data, t, Vt.cols, false, false, 1).data;
}

describe("randomizedSvd on each backend", async () => {
  for (const be of await testBackends()) {
    test(`${be.name}: exact on a rank-6 matrix (rank ≤ ℓ)`, async () => {
      const rng = new Rng(SEED);
      const M = lowRankPlusNoise(rng, 90, 70, [9, 7, 5, 3, 2, 1], 0);
      const r = await randomizedSvd(be, M, 6, { seed: SEED });
      const ref = svd64(M.data, 90, 70).S;
      for (let i = 0; i < 6; i++) assert.ok(Math.abs(r.S[i]! - ref[i]!) <= 1e-10 * ref[0]!, `σ${i}: ${r.S[i]} vs ${ref[i]}`);
      const rec = reconstruct(r.U, r.S, r.Vt);
      let num = 0,
        den = 0;
      for (let i = 0; i < rec.length; i++) {
        num += (rec[i]! - M.data[i]!) ** 2;
        den += M.data[i]! ** 2;
      }
      assert.ok(Math.sqrt(num / den) < 1e-10);
    });

    test(`${be.name}: low-rank + noise: σ within 1e-3 (q = 2), U and V orthonormal, signs normalised`, async () => {
      const rng = new Rng(SEED + 1);
      const M = lowRankPlusNoise(rng, 150, 120, [20, 15, 12, 10, 8, 6, 5, 4], 0.01);
      const t = 8;
      const r = await randomizedSvd(be, M, t, { seed: SEED, powerIters: 2 });
      const ref = svd64(M.data, 150, 120).S;
      for (let i = 0; i < t; i++) assert.ok(Math.abs(r.S[i]! - ref[i]!) <= 1e-3 * ref[i]!, `σ${i}: ${r.S[i]} vs ${ref[i]}`);
      const UtU = gemm64(r.U.data, 150, t, r.U.data, 150, t, true, false, 1).data;
      const VVt = gemm64(r.Vt.data, t, 120, r.Vt.data, t, 120, false, true, 1).data;
      for (let i = 0; i < t; i++)
        for (let j = 0; j < t; j++) {
          assert.ok(Math.abs(UtU[i * t + j]! - (i === j ? 1 : 0)) < 1e-10);
          assert.ok(Math.abs(VVt[i * t + j]! - (i === j ? 1 : 0)) < 1e-10);
        }
      for (let c = 0; c < t; c++) {
        let best = 0;
        for (let i = 0; i < 150; i++) if (Math.abs(r.U.data[i * t + c]!) > Math.abs(best)) best = r.U.data[i * t + c]!;
        assert.ok(best > 0, "largest |u| entry positive");
      }
    });

    test(`${be.name}: same seed ⇒ identical factors; ℓ ≥ min(d, k) falls back to the exact SVD`, async () => {
      const rng = new Rng(SEED + 2);
      const M = lowRankPlusNoise(rng, 60, 50, [5, 4, 3], 0.1);
      const a = await randomizedSvd(be, M, 3, { seed: 7 });
      const b = await randomizedSvd(be, M, 3, { seed: 7 });
      assert.deepEqual(Array.from(a.U.data), Array.from(b.U.data));
      assert.deepEqual(Array.from(a.S), Array.from(b.S));
      const small = lowRankPlusNoise(rng, 12, 9, [3, 2, 1], 0.1);
      const e = await randomizedSvd(be, small, 4, { seed: 1 });
      const ref = svd64(small.data, 12, 9).S;
      for (let i = 0; i < 4; i++) assert.ok(Math.abs(e.S[i]! - ref[i]!) < 1e-12 * ref[0]!);
    });
  }
});
