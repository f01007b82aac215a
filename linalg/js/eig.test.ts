// ml-matrix carries the js backend's symmetric eigenproblem only because it is as exact as the
// cyclic Jacobi it replaced (docs/algorithms.md §8). This
// keeps it so: on fresh random symmetric matrices (plain and Grams of column-graded factors, the
// Gram route's case), its residual ‖Sv − λv‖/λ₁ and orthogonality max|VᵀV − I| stay within 2× the
// Jacobi's or 20 ε, whichever is larger, and its eigenvalues match Jacobi's to 1e-13·λ₁.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../random.js";
import { eigSym64 } from "./dense.js";
import { eigSymTql } from "../../common/eig-sym.js";

const SEED = process.env.LORA_TEST_SEED !== undefined ? Number(process.env.LORA_TEST_SEED) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
console.log(`eig parity: seed ${SEED} (LORA_TEST_SEED=${SEED} replays this run)`);
const EPS = 2.220446049250313e-16;

function quality(s: Float64Array, n: number, values: Float64Array, vectors: Float64Array): { res: number; orth: number } {
  const l1 = Math.max(...Array.from(values, Math.abs), 1e-300);
  let res = 0,
    orth = 0;
  for (let j = 0; j < n; j++)
    for (let i = 0; i < n; i++) {
      let x = 0;
      for (let k = 0; k < n; k++) x += s[i * n + k]! * vectors[k * n + j]!;
      res = Math.max(res, Math.abs(x - values[j]! * vectors[i * n + j]!) / l1);
    }
  for (let a = 0; a < n; a++)
    for (let b = 0; b < n; b++) {
      let x = 0;
      for (let k = 0; k < n; k++) x += vectors[k * n + a]! * vectors[k * n + b]!;
      orth = Math.max(orth, Math.abs(x - (a === b ? 1 : 0)));
    }
  return { res, orth };
}

test("ml-matrix's symmetric eigensolver is as exact as the cyclic Jacobi (residual, orthogonality, eigenvalues)", () => {
  const rng = new Rng(SEED);
  for (const n of [1, 2, 8, 16, 48])
    for (const grade of [0, 8]) {
      const g = rng.normals(n * n, 1);
      const a = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = g[i * n + j]! * 10 ** ((-grade * j) / Math.max(1, n - 1) / 2);
      // S = AᵀA (PSD, eigenvalues spanning 10^-grade when graded) or a plain symmetric matrix
      const s = new Float64Array(n * n);
      for (let i = 0; i < n; i++)
        for (let j = 0; j < n; j++) {
          let x = 0;
          if (grade > 0) for (let k = 0; k < n; k++) x += a[k * n + i]! * a[k * n + j]!;
          else x = (g[i * n + j]! + g[j * n + i]!) / 2;
          s[i * n + j] = x;
        }
      const ml = eigSymTql(s, n),
        jac = eigSym64(s, n);
      const qm = quality(s, n, ml.values, ml.vectors),
        qj = quality(s, n, jac.values, jac.vectors);
      const what = `n=${n} grade=${grade}`;
      assert.ok(qm.res <= Math.max(2 * qj.res, 20 * EPS), `${what}: residual ${qm.res} vs Jacobi ${qj.res}`);
      assert.ok(qm.orth <= Math.max(2 * qj.orth, 20 * EPS * Math.sqrt(n)), `${what}: orthogonality ${qm.orth} vs Jacobi ${qj.orth}`);
      const l1 = Math.max(...Array.from(jac.values, Math.abs));
      for (let i = 0; i < n; i++) assert.ok(Math.abs(ml.values[i]! - jac.values[i]!) <= 1e-13 * l1, `${what}: λ${i} ${ml.values[i]} vs ${jac.values[i]}`);
      for (let i = 1; i < n; i++) assert.ok(ml.values[i - 1]! >= ml.values[i]!, `${what}: descending`);
    }
});
