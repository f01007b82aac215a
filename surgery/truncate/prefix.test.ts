// DyLoRA prefix truncation (docs/algorithms.md §3.4) against the official forward and golden §9.3.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "../../linalg/random.js";
import type { Mat } from "../../linalg/types.js";
import { prefixAlpha, prefixFactors, splitPath, splitRanks } from "./prefix.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`prefix.test seed=${seed}`);

const mat = (rows: number, cols: number, data: ArrayLike<number>): Mat<Float64Array> => ({ rows, cols, data: Float64Array.from(data) });

/** The official DyLoRA forward at rank b (DyLoRA/loralib: A_b, B_b scaled by √(r/b), then alpha/r). */
function official(B: Mat, A: Mat, alpha: number, b: number): Float64Array {
  const r = A.rows,
    out = B.rows,
    inn = A.cols,
    f = Math.sqrt(r / b);
  const dw = new Float64Array(out * inn);
  for (let i = 0; i < out; i++)
    for (let j = 0; j < inn; j++) {
      let v = 0;
      for (let c = 0; c < b; c++) v += B.data[i * r + c]! * f * (A.data[c * inn + j]! * f);
      dw[i * inn + j] = (alpha / r) * v;
    }
  return dw;
}

/** What a loader computes from the written factors: (alpha'/b)·B'A'. */
function loaded(B: Mat, A: Mat, alpha: number): Float64Array {
  const b = A.rows,
    out = B.rows,
    inn = A.cols;
  const dw = new Float64Array(out * inn);
  for (let i = 0; i < out; i++)
    for (let j = 0; j < inn; j++) {
      let v = 0;
      for (let c = 0; c < b; c++) v += B.data[i * b + c]! * A.data[c * inn + j]!;
      dw[i * inn + j] = (alpha / b) * v;
    }
  return dw;
}

test("golden §9.3: r=4, alpha=8, B=(1..12)/10, A=(1..8)/10 at b = 1, 2, 4", () => {
  const B = mat(
    3,
    4,
    Array.from({ length: 12 }, (_, i) => (i + 1) / 10),
  );
  const A = mat(
    4,
    2,
    Array.from({ length: 8 }, (_, i) => (i + 1) / 10),
  );
  const golden: Record<number, number[]> = {
    1: [0.08, 0.16, 0.4, 0.8, 0.72, 1.44],
    2: [0.28, 0.4, 0.92, 1.36, 1.56, 2.32],
    4: [1.0, 1.2, 2.28, 2.8, 3.56, 4.4],
  };
  for (const b of [1, 2, 4]) {
    const p = prefixFactors(B, A, b);
    const alpha = prefixAlpha(8, 4, b, "keep", 1);
    assert.equal(alpha, 8);
    const got = loaded(p.B, p.A, alpha);
    const off = official(B, A, 8, b);
    got.forEach((v, i) => {
      assert.ok(Math.abs(v - golden[b]![i]!) < 1e-12, `b=${b} [${i}]: ${v} vs golden ${golden[b]![i]}`);
      assert.ok(Math.abs(v - off[i]!) < 1e-12, `b=${b} [${i}]: ${v} vs official ${off[i]}`);
    });
  }
});

test("prefix truncation equals the official forward on random factors; b = r is the identity; nesting holds", () => {
  const rng = new Rng(seed);
  for (let trial = 0; trial < 20; trial++) {
    const r = 2 + rng.int(10),
      out = 1 + rng.int(20),
      inn = 1 + rng.int(20),
      alpha = 0.5 + rng.uniform() * 16;
    const B = mat(out, r, rng.normals(out * r)),
      A = mat(r, inn, rng.normals(r * inn));
    const full = loaded(B, A, alpha);
    for (let b = 1; b <= r; b++) {
      const p = prefixFactors(B, A, b);
      const got = loaded(p.B, p.A, prefixAlpha(alpha, r, b, "keep", 1));
      const off = official(B, A, alpha, b);
      got.forEach((v, i) => assert.ok(Math.abs(v - off[i]!) <= 1e-12 * (1 + Math.abs(off[i]!)), `r=${r} b=${b}`));
      if (b === r) got.forEach((v, i) => assert.equal(v, full[i]));
      // Nesting (docs/algorithms.md §3.4): ΔW_b = (b'/b)·ΔW_{b'} + (alpha/b)·B[:, b':b] A[b':b] for b' < b.
      if (b > 1) {
        const bp = 1 + rng.int(b - 1);
        const pp = prefixFactors(B, A, bp);
        const small = loaded(pp.B, pp.A, alpha);
        for (let i = 0; i < out; i++)
          for (let j = 0; j < inn; j++) {
            let tail = 0;
            for (let c = bp; c < b; c++) tail += B.data[i * r + c]! * A.data[c * inn + j]!;
            const want = (bp / b) * small[i * inn + j]! + (alpha / b) * tail;
            assert.ok(Math.abs(got[i * inn + j]! - want) <= 1e-12 * (1 + Math.abs(want)), "nesting");
          }
      }
    }
  }
});

test("prefix slices are exact copies (kohya's value[:rank] / value[:, :rank])", () => {
  const B = { rows: 2, cols: 3, data: Float32Array.of(1, 2, 3, 4, 5, 6) };
  const A = { rows: 3, cols: 2, data: Float32Array.of(7, 8, 9, 10, 11, 12) };
  const p = prefixFactors(B, A, 2);
  assert.ok(p.B.data instanceof Float32Array);
  assert.deepEqual(Array.from(p.B.data), [1, 2, 4, 5]);
  assert.deepEqual(Array.from(p.A.data), [7, 8, 9, 10]);
});

test("alpha modes (docs/algorithms.md §3.4): keep, kohya-train alpha·√(b/r), lycoris alpha·block", () => {
  assert.equal(prefixAlpha(8, 16, 4, "keep", 4), 8);
  assert.equal(prefixAlpha(8, 16, 4, "kohya-train", 4), 4); // alpha'/b = 1 = alpha/√(r·b) = 8/8
  assert.equal(prefixAlpha(8, 16, 4, "kohya-train", 4) / 4, 8 / Math.sqrt(16 * 4));
  assert.equal(prefixAlpha(8, 16, 8, "lycoris", 4), 32); // 2 blocks: LyCORIS scale alpha/2 = 32/8
  assert.equal(prefixAlpha(8, 16, 8, "lycoris", 4) / 8, 8 / 2);
});

test("kohya split: ranks unit … < max, names {stem}-{rank:04d}{ext}", () => {
  assert.deepEqual(splitRanks(8, 2), [2, 4, 6]);
  assert.deepEqual(splitRanks(16, 4), [4, 8, 12]);
  assert.deepEqual(splitRanks(10, 4), [4, 8]);
  assert.deepEqual(splitRanks(4, 4), []);
  assert.equal(splitPath("out/dylora.safetensors", 4), "out/dylora-0004.safetensors");
  assert.equal(splitPath("x.SAFETENSORS", 12), "x-0012.SAFETENSORS");
  assert.equal(splitPath("out/peft-dir/", 8), "out/peft-dir-0008");
});
