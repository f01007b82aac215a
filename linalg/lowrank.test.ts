// Factor-based SVD (docs/algorithms.md §2.1) against dense float64 references and the golden
// vectors of §9.1–9.2, on fresh random data (seed printed) and rank-deficient inputs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { jsBackend } from "./js/index.js";
import { eigSym64, gemm64 } from "./js/dense.js";
import {
  concatTerms,
  cumulativeEnergy,
  effectiveRank,
  lowRankNorm,
  lowRankSingularValues,
  lowRankSvd,
  relativeError,
  splitFactors,
  type LowRankTerm,
} from "./lowrank.js";
import { Rng } from "./random.js";
import type { Mat } from "./types.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`lowrank.test seed=${seed}`);

const mat = (rows: number, cols: number, data: number[] | Float64Array): Mat<Float64Array> => ({ rows, cols, data: Float64Array.from(data) });

/** Dense Σ sᵢBᵢAᵢ in float64. */
function dense(terms: LowRankTerm[]): Float64Array {
  const { B, A } = concatTerms(terms);
  return gemm64(B.data, B.rows, B.cols, A.data, A.rows, A.cols, false, false, 1).data;
}

/** Reference singular values: √eig(MᵀM) of the dense matrix via Jacobi (a route independent of QR). */
function denseSigma(m: Float64Array, rows: number, cols: number): number[] {
  const g = gemm64(m, rows, cols, m, rows, cols, true, false, 1).data;
  return Array.from(eigSym64(g, cols).values, (x) => Math.sqrt(Math.max(x, 0)));
}

function close(a: number, b: number, rtol: number, atol: number, what: string): void {
  assert.ok(Math.abs(a - b) <= atol + rtol * Math.abs(b), `${what}: ${a} vs ${b}`);
}

test("golden §9.1: σ of 0.5·B·A and the Gram-identity norm", async () => {
  const B = mat(4, 2, [1, 2, 0, 1, 3, -1, 2, 2]);
  const A = mat(2, 3, [1, 0, 2, -1, 1, 0]);
  const s = await lowRankSingularValues(jsBackend, { B, A, scale: 0.5 });
  close(s[0]!, 4.067763, 0, 5e-7, "σ1");
  close(s[1]!, 2.110286, 0, 5e-7, "σ2");
  close(await lowRankNorm(jsBackend, { B, A, scale: 0.5 }), 4.582576, 0, 5e-7, "norm");
  const svd = await lowRankSvd(jsBackend, { B, A, scale: 0.5 });
  const rec = gemm64(svd.U.data, 4, 2, Float64Array.from(svd.Vt.data.map((v, i) => v * svd.S[Math.floor(i / 3)]!)), 2, 3, false, false, 1).data;
  const ref = dense([{ B, A, scale: 0.5 }]);
  rec.forEach((v, i) => close(v, ref[i]!, 0, 1e-12, `ΔW[${i}]`));
});

test("golden §9.2: σ of the weighted sum 0.7·0.5·B1A1 + 0.3·2·B2A2", async () => {
  const t1 = { B: mat(4, 2, [1, 2, 0, 1, 3, -1, 2, 2]), A: mat(2, 3, [1, 0, 2, -1, 1, 0]), scale: 0.7 * 0.5 };
  const t2 = { B: mat(4, 2, [0, 1, 1, 0, 1, 1, 0, -2]), A: mat(2, 3, [0, 1, 1, 2, 0, -1]), scale: 0.3 * 2 };
  const s = await lowRankSingularValues(jsBackend, [t1, t2]);
  [3.751963, 3.420563, 1.035627].forEach((x, i) => close(s[i]!, x, 0, 5e-7, `σ${i + 1}`));
  close(s[3] ?? 0, 0, 0, 1e-12, "σ4");
});

test("random factors: σ, U, V and reconstruction against dense float64 (fresh data)", async () => {
  const rng = new Rng(seed);
  for (const [out, inn, r] of [
    [37, 23, 5],
    [64, 200, 8],
    [150, 40, 16],
    [12, 12, 12],
    [9, 30, 20],
  ] as const) {
    const B = mat(out, r, rng.normals(out * r)),
      A = mat(r, inn, rng.normals(r * inn));
    const scale = 0.25 + rng.uniform();
    const ref = dense([{ B, A, scale }]);
    const sref = denseSigma(ref, out, inn);
    const svd = await lowRankSvd(jsBackend, { B, A, scale });
    const k = svd.S.length;
    for (let i = 0; i < Math.min(k, inn); i++) close(svd.S[i]!, sref[i]!, 1e-9, 1e-9 * sref[0]!, `σ${i} (${out}×${inn} r${r})`);
    // U Σ Vᵀ = ΔW, UᵀU = I.
    const us = new Float64Array(out * k);
    for (let i = 0; i < out; i++) for (let j = 0; j < k; j++) us[i * k + j] = svd.U.data[i * k + j]! * svd.S[j]!;
    const rec = gemm64(us, out, k, svd.Vt.data, k, inn, false, false, 1).data;
    const scaleRef = Math.max(...ref.map(Math.abs));
    rec.forEach((v, i) => close(v, ref[i]!, 0, 1e-11 * scaleRef, "reconstruction"));
    const utu = gemm64(svd.U.data, out, k, svd.U.data, out, k, true, false, 1).data;
    for (let i = 0; i < k; i++)
      for (let j = 0; j < k; j++) if (svd.S[i]! > 1e-12 * svd.S[0]! && svd.S[j]! > 1e-12 * svd.S[0]!) close(utu[i * k + j]!, i === j ? 1 : 0, 0, 1e-10, "UᵀU");
  }
});

test("rank-deficient factors give exact zeros in the spectrum", async () => {
  const rng = new Rng(seed + 1);
  const out = 30,
    inn = 25,
    r = 6;
  const B = mat(out, r, rng.normals(out * r));
  // Columns 4 and 5 of B duplicate columns 0 and 1: rank 4.
  for (let i = 0; i < out; i++) {
    B.data[i * r + 4] = B.data[i * r]!;
    B.data[i * r + 5] = B.data[i * r + 1]!;
  }
  const A = mat(r, inn, rng.normals(r * inn));
  const s = await lowRankSingularValues(jsBackend, { B, A, scale: 1 });
  const sref = denseSigma(dense([{ B, A, scale: 1 }]), out, inn);
  for (let i = 0; i < 4; i++) close(s[i]!, sref[i]!, 1e-9, 0, `σ${i}`);
  assert.ok(s[4]! < 1e-12 * s[0]! && s[5]! < 1e-12 * s[0]!, `σ5,σ6 should vanish: ${s[4]}, ${s[5]}`);
});

test("splitFactors: s'·B'·A' equals the rank-t truncation in both split modes", async () => {
  const rng = new Rng(seed + 2);
  const out = 40,
    inn = 33,
    r = 8,
    t = 3;
  const B = mat(out, r, rng.normals(out * r)),
    A = mat(r, inn, rng.normals(r * inn));
  const svd = await lowRankSvd(jsBackend, { B, A, scale: 2 });
  const us = new Float64Array(out * t);
  for (let i = 0; i < out; i++) for (let j = 0; j < t; j++) us[i * t + j] = svd.U.data[i * svd.U.cols + j]! * svd.S[j]!;
  const want = gemm64(us, out, t, svd.Vt.data.subarray(0, t * inn), t, inn, false, false, 1).data;
  for (const mode of ["balanced", "all-in-up"] as const) {
    for (const sOut of [1, 0.37]) {
      const f = splitFactors(svd, t, sOut, mode);
      const got = dense([{ B: f.B, A: f.A, scale: sOut }]);
      got.forEach((v, i) => close(v, want[i]!, 0, 1e-10, `${mode} s'=${sOut}`));
      // Error of the truncation from the factors equals √(Σ_{i>t} σ²)/‖ΔW‖.
      const tail = Math.sqrt(
        Array.from(svd.S)
          .slice(t)
          .reduce((a, x) => a + x * x, 0),
      );
      const norm = Math.sqrt(Array.from(svd.S).reduce((a, x) => a + x * x, 0));
      close(await relativeError(jsBackend, [{ B, A, scale: 2 }], [{ B: f.B, A: f.A, scale: sOut }]), tail / norm, 1e-8, 1e-12, "relative error");
    }
  }
});

test("energy and effective rank", () => {
  assert.deepEqual(cumulativeEnergy([3, 4]), [9 / 25, 1]);
  assert.deepEqual(cumulativeEnergy([0, 0]), [1, 1]);
  close(effectiveRank([1, 1, 1, 1]), 4, 1e-15, 0, "flat spectrum");
  close(effectiveRank([5, 0, 0]), 1, 1e-15, 0, "one value");
  assert.equal(effectiveRank([0, 0]), 0);
});
