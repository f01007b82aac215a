// truncatedSvd (linalg/truncated-svd.ts) on matrices built with a known spectrum M = U·diag(σ)·Vᵀ
// (random orthonormal U, V), so the Eckart–Young optimum Σ_{i>t} σᵢ² is known by construction,
// not computed by the code under test. Fresh seed printed (LORA_TEST_SEED replays). Checked: the
// default route's Frobenius error within 0.1% of the optimum on easy and hard (slowly decaying,
// fine-tune-like) spectra, in float64 and float32; the reported err2 equals the dense residual
// (1e-9 relative in float64, 1e-4 in float32); --exact within 1e-9 of the optimum; --energy picks the
// fewest components; an exactly low-rank matrix is recovered to rounding.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { gemm64, qr64 } from "./js/dense.js";
import { Rng } from "./random.js";
import type { RowPanelSource } from "./row-panels.js";
import { truncatedSvd } from "./truncated-svd.js";
import type { Mat } from "./types.js";
import { testBackends } from "../test/backends.js";

const SEED = process.env["LORA_TEST_SEED"] !== undefined ? Number(process.env["LORA_TEST_SEED"]) : Date.now() % 1_000_000;
console.log(`truncated-svd.test seed=${SEED} (LORA_TEST_SEED=${SEED} replays this run)`);

function orthonormal(rng: Rng, n: number, k: number): Float64Array {
  return qr64(rng.normals(n * k), n, k).Q;
}

/** d×k matrix with singular values `sig` (length ≤ min(d, k)). */
function withSpectrum(rng: Rng, d: number, k: number, sig: number[]): Float64Array {
  const r = sig.length;
  const U = orthonormal(rng, d, r),
    V = orthonormal(rng, k, r);
  for (let i = 0; i < d; i++) for (let j = 0; j < r; j++) U[i * r + j] *= sig[j]!;
  return gemm64(U, d, r, V, k, r, false, true, 1).data;
}

/** A float32 matrix handed out `rows` rows at a time (the last block shorter), counting the passes. */
function panelsOf(M: Float32Array, d: number, k: number, rows: number): RowPanelSource & { passes: number } {
  const src = {
    rows: d,
    cols: k,
    passes: 0,
    async each(fn: (r0: number, block: Mat<Float32Array>) => Promise<void>): Promise<number> {
      src.passes++;
      let norm2 = 0;
      for (let r0 = 0; r0 < d; r0 += rows) {
        const n = Math.min(rows, d - r0);
        // a copy: the consumer may not keep a block past its call
        const data = M.slice(r0 * k, (r0 + n) * k);
        for (const v of data) norm2 += v * v;
        await fn(r0, { rows: n, cols: k, data });
        data.fill(Number.NaN);
      }
      return norm2;
    },
  };
  return src;
}

const tail2 = (sig: number[], t: number) => sig.slice(t).reduce((s, x) => s + x * x, 0);

/** ‖M − U S Vt‖²_F, dense, float64. */
function residual2(M: ArrayLike<number>, d: number, k: number, U: Mat<Float64Array>, S: Float64Array, Vt: Mat<Float64Array>): number {
  const t = S.length,
    US = new Float64Array(d * t);
  for (let i = 0; i < d; i++) for (let j = 0; j < t; j++) US[i * t + j] = U.data[i * t + j]! * S[j]!;
  const R = gemm64(US, d, t, Vt.data, t, k, false, false, 1).data;
  let s = 0;
  for (let i = 0; i < R.length; i++) s += (M[i]! - R[i]!) ** 2;
  return s;
}

const SPECTRA: Record<string, (n: number) => number[]> = {
  "fast decay": (n) => Array.from({ length: n }, (_, i) => Math.exp(-i / 8)),
  // A full fine-tune's ΔW: a power law over every direction, no gap near t
  "slow power law": (n) => Array.from({ length: n }, (_, i) => 1 / Math.sqrt(i + 1)),
  "flat tail after a knee": (n) => Array.from({ length: n }, (_, i) => (i < 24 ? 10 - i * 0.3 : 0.5 + 0.001 * (n - i))),
};

describe("truncatedSvd", async () => {
  for (const be of await testBackends()) {
    for (const [name, spec] of Object.entries(SPECTRA)) {
      for (const f32 of [false, true]) {
        test(`${be.name}: ${name}, ${f32 ? "float32" : "float64"}: error within 0.1% of the optimum, err2 as reported`, async () => {
          const rng = new Rng(SEED + name.length);
          const d = 260,
            k = 180,
            t = 20;
          const sig = spec(k);
          let M: Float64Array = withSpectrum(rng, d, k, sig);
          // In float32 the matrix itself is rounded: its optimum is that of the rounded matrix,
          // within ‖rounding‖ ≈ 6e-8‖M‖ of the constructed one (far below the tolerance).
          if (f32) M = Float64Array.from(Float32Array.from(M));
          const m: Mat = { rows: d, cols: k, data: f32 ? Float32Array.from(M) : M };
          const r = await truncatedSvd(be, m, { rank: t, seed: SEED });
          assert.equal(r.S.length, t);
          const opt = Math.sqrt(tail2(sig, t));
          const got = Math.sqrt(residual2(M, d, k, r.U, r.S, r.Vt));
          assert.ok(got <= opt * 1.001 + 1e-6 * Math.sqrt(r.norm2), `error ${got} vs optimum ${opt} (ratio ${got / opt}, ${r.powerIters} power iterations)`);
          assert.ok(Math.abs(Math.sqrt(r.err2) - got) <= (f32 ? 1e-4 : 1e-9) * Math.sqrt(r.norm2), `reported ${Math.sqrt(r.err2)} vs dense ${got}`);
          assert.ok(!r.exact && r.powerIters >= 1);
        });
      }
    }

    test(`${be.name}: exact route equals the optimum; energy picks the fewest components`, async () => {
      const rng = new Rng(SEED + 7);
      const d = 120,
        k = 90;
      const sig = SPECTRA["slow power law"]!(k);
      const M = withSpectrum(rng, d, k, sig);
      const r = await truncatedSvd(be, { rows: d, cols: k, data: M }, { rank: 10, exact: true });
      assert.ok(r.exact);
      assert.ok(Math.abs(Math.sqrt(residual2(M, d, k, r.U, r.S, r.Vt)) - Math.sqrt(tail2(sig, 10))) <= 1e-9 * sig[0]!);
      const total = sig.reduce((s, x) => s + x * x, 0);
      let acc = 0,
        want = 0;
      while (acc < 0.5 * total) acc += sig[want++]! ** 2;
      for (const exact of [true, false]) {
        const e = await truncatedSvd(be, { rows: d, cols: k, data: M }, { energy: 0.5, exact, seed: SEED });
        // σ̃ ≤ σ: the randomized route may take one more component, never fewer
        assert.ok(e.S.length === want || (!exact && e.S.length === want + 1), `energy 0.5: ${e.S.length} components, want ${want}`);
      }
    });

    test(`${be.name}: row panels on steep spectra (cond(R) near and past the limit of Z = G·R⁻¹): the optimum, err2 as measured`, async () => {
      const rng = new Rng(SEED + 19);
      const d = 300,
        k = 200,
        t = 20;
      // σᵢ = e^(−i/s): σ_ℓ/σ₁ (ℓ = 30) is 1.6e-3 for s = 4.5 (Z = G·R⁻¹) and 7e-4 for s = 4 (Z by a
      // pass of its own); in both the error is just above where it is measured directly (1e-4·‖M‖²).
      for (const s of [4.5, 4]) {
        const sig = Array.from({ length: k }, (_, i) => Math.exp(-i / s));
        const M = Float32Array.from(withSpectrum(rng, d, k, sig));
        const src = panelsOf(M, d, k, 13);
        const r = await truncatedSvd(be, src, { rank: t, seed: SEED });
        const got = Math.sqrt(residual2(M, d, k, r.U, r.S, r.Vt));
        const opt = Math.sqrt(tail2(sig, t));
        assert.ok(got <= opt * 1.001, `s=${s}: error ${got} vs optimum ${opt}`);
        // float32 products: the energy difference carries ~1e-7·‖M‖² (1e-3 of this err2)
        assert.ok(Math.abs(Math.sqrt(r.err2) / got - 1) <= 1e-3, `s=${s}: reported ${Math.sqrt(r.err2)} vs dense ${got}`);
        // s = 4: cond(R) ≥ σ₁/σ_ℓ > 1e3 at every check, so Z is always a pass of its own; s = 4.5: once the
        // iterate has turned towards the leading subspace cond(R) ≈ σ₁/σ_ℓ < 1e3 and Z = G·R⁻¹, so at least
        // the last check saves its pass (the checks before it, from Ω and early iterates, may need their own:
        // how many depends on the draw).
        const direct = r.err2 < 1e-4 * r.norm2 ? 1 : 0; // and the error measured by a pass of its own
        if (s === 4) assert.equal(src.passes, 2 * (r.powerIters + 1) + direct, `s=${s}: passes`);
        else
          assert.ok(
            src.passes >= r.powerIters + 1 && src.passes <= 2 * (r.powerIters + 1) - 1 + direct,
            `s=${s}: ${src.passes} passes, ${r.powerIters} iterations`,
          );
      }
    });

    test(`${be.name}: a seed gives the same result when its first Ω is kept from an earlier call (rank; energy, which draws again)`, async () => {
      const rng = new Rng(SEED + 17);
      const d = 120,
        k = 90;
      const M = Float32Array.from(withSpectrum(rng, d, k, SPECTRA["slow power law"]!(k)));
      const m: Mat = { rows: d, cols: k, data: M };
      const seed = SEED + 101;
      // Energy 0.9 of this spectrum needs ~54 components: t grows 16 → 32 → 64, three draws of Ω.
      const first = await truncatedSvd(be, m, { energy: 0.9, seed }); // draws Ω afresh
      const again = await truncatedSvd(be, m, { energy: 0.9, seed }); // first Ω kept, the later ones replayed
      assert.ok(first.S.length > 32, `energy 0.9 took ${first.S.length} components (the test wants a third draw)`);
      assert.deepEqual(again.S, first.S);
      assert.deepEqual(again.U.data, first.U.data);
      const r1 = await truncatedSvd(be, m, { rank: 8, seed: seed + 1 });
      const r2 = await truncatedSvd(be, m, { rank: 8, seed: seed + 1 });
      assert.deepEqual(r2.Vt.data, r1.Vt.data);
      // and another seed gives another Ω
      const r3 = await truncatedSvd(be, m, { rank: 8, seed: seed + 2, maxPowerIters: 0 });
      const r4 = await truncatedSvd(be, m, { rank: 8, seed: seed + 1, maxPowerIters: 0 });
      assert.notDeepEqual(r3.S, r4.S);
    });

    test(`${be.name}: an exactly rank-6 float32 matrix is recovered to rounding at rank 6`, async () => {
      const rng = new Rng(SEED + 11);
      const d = 300,
        k = 200;
      const M = Float32Array.from(withSpectrum(rng, d, k, [5, 4, 3, 2, 1, 0.5]));
      const r = await truncatedSvd(be, { rows: d, cols: k, data: M }, { rank: 6, seed: SEED });
      assert.ok(Math.sqrt(residual2(M, d, k, r.U, r.S, r.Vt) / r.norm2) < 1e-6);
    });

    test(`${be.name}: row panels (7 rows a block, read once a product): the dense route's accuracy, σ and err2; low rank, energy and exact`, async () => {
      const rng = new Rng(SEED + 13);
      const d = 260,
        k = 180,
        t = 20;
      const sig = SPECTRA["slow power law"]!(k);
      const M = Float32Array.from(withSpectrum(rng, d, k, sig));
      const src = panelsOf(M, d, k, 7);
      const r = await truncatedSvd(be, src, { rank: t, seed: SEED });
      const dense = await truncatedSvd(be, { rows: d, cols: k, data: M }, { rank: t, seed: SEED });
      const got = Math.sqrt(residual2(M, d, k, r.U, r.S, r.Vt));
      const opt = Math.sqrt(tail2(sig, t));
      assert.ok(got <= opt * 1.001 + 1e-6 * Math.sqrt(r.norm2), `error ${got} vs optimum ${opt}`);
      assert.ok(Math.abs(Math.sqrt(r.err2) - got) <= 1e-4 * Math.sqrt(r.norm2), `reported ${Math.sqrt(r.err2)} vs dense ${got}`);
      // ‖M‖² of the float32 values, float64 sums in another order than the reference's
      assert.ok(Math.abs(r.norm2 / M.reduce((s, v) => s + v * v, 0) - 1) < 1e-12);
      // The same steps as the matrix in memory: float32 products summed in another order
      for (let i = 0; i < t; i++) assert.ok(Math.abs(r.S[i]! / dense.S[i]! - 1) < 1e-4, `σ${i} ${r.S[i]} vs ${dense.S[i]}`);
      assert.equal(r.powerIters, dense.powerIters);
      // One pass a check: Y = M·X and G = Mᵀ·Y together, Z = G·R⁻¹, and the first pass gives ‖M‖²
      // (the dense route's steps read M twice a check).
      assert.equal(src.passes, r.powerIters + 1);

      const L = Float32Array.from(withSpectrum(rng, 300, 200, [5, 4, 3, 2, 1, 0.5]));
      const lsrc = panelsOf(L, 300, 200, 11);
      const low = await truncatedSvd(be, lsrc, { rank: 6, seed: SEED });
      // Rank 6 < ℓ: R is singular, so every check's Z = MᵀQ is a pass of its own; and one pass
      // for the error, measured directly.
      assert.equal(lsrc.passes, 2 * (low.powerIters + 1) + 1);
      assert.ok(Math.sqrt(residual2(L, 300, 200, low.U, low.S, low.Vt) / low.norm2) < 1e-6);
      assert.ok(low.err2 < 1e-10 * low.norm2, `err2 ${low.err2} measured directly, block by block`);

      const ex = await truncatedSvd(be, panelsOf(M, d, k, 7), { rank: 10, exact: true });
      assert.ok(ex.exact);
      assert.ok(Math.abs(Math.sqrt(residual2(M, d, k, ex.U, ex.S, ex.Vt)) - Math.sqrt(tail2(sig, 10))) <= 1e-5 * sig[0]!);
      const total = sig.reduce((s, x) => s + x * x, 0);
      const e = await truncatedSvd(be, panelsOf(M, d, k, 7), { energy: 0.5, seed: SEED });
      let acc = 0;
      for (let i = 0; i < e.S.length; i++) acc += e.S[i]! ** 2;
      assert.ok(acc >= 0.5 * total * (1 - 1e-4), `energy 0.5: kept ${acc / total}`);
    });
  }
});
