// kohya resize_lora.py rank rules (docs/algorithms.md §3.3, golden §9.9) and the clean rules.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "../../linalg/random.js";
import { cleanDynamicRank, kohyaDynamicRank, kohyaIndex, searchsortedLeft, type DynamicMethod } from "./kohya-rules.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`kohya-rules.test seed=${seed}`);

const S = [4, 2, 1, 0.5, 0.25, 0.1];

test("golden §9.9: S=[4,2,1,.5,.25,.1] → sv_ratio(5) 4, sv_cumulative(0.9) 5, sv_fro(0.95) 3", () => {
  assert.equal(kohyaDynamicRank(S, "sv_ratio", 5, { cap: 6 }), 4);
  assert.equal(kohyaDynamicRank(S, "sv_cumulative", 0.9, { cap: 6 }), 5);
  assert.equal(kohyaDynamicRank(S, "sv_fro", 0.95, { cap: 6 }), 3);
  // The clean rule is the minimal rank meeting the criterion: one less on this spectrum.
  assert.equal(cleanDynamicRank(S, "sv_ratio", 5), 3);
  assert.equal(cleanDynamicRank(S, "sv_cumulative", 0.9), 4);
  assert.equal(cleanDynamicRank(S, "sv_fro", 0.95), 2);
});

test("kohya clamps, cap and MIN_SV", () => {
  // idx clamped to len(S) − 1 before the +1: never more than len(S).
  assert.equal(kohyaDynamicRank(S, "sv_ratio", 1000), 6);
  assert.equal(kohyaIndex(S, "sv_ratio", 1000), 5);
  // idx ≥ 1 ⇒ rank ≥ 2 unless the matrix is "zero".
  assert.equal(kohyaDynamicRank(S, "sv_ratio", 1.0001), 2);
  assert.equal(kohyaDynamicRank([1e-7, 1e-8], "sv_fro", 0.5), 1);
  // MIN_SV looks at the un-scaled σ: σ₀ = 4e-6 at scale 8 is 5e-7 un-scaled → rank 1.
  assert.equal(kohyaDynamicRank([4e-6, 2e-6, 1e-6], "sv_fro", 0.99, { scale: 8 }), 1);
  assert.equal(kohyaDynamicRank([4e-6, 2e-6, 1e-6], "sv_fro", 0.99, { scale: 1 }), 3);
  // --new_rank cap
  assert.equal(kohyaDynamicRank(S, "sv_cumulative", 0.9, { cap: 3 }), 3);
  // A short spectrum (r = 4) in a 6-wide matrix: kohya's S has trailing zeros, so the clamp is at 5 and
  // the rank can exceed the 4 stored components.
  assert.equal(kohyaDynamicRank([4, 2, 1, 0.5], "sv_ratio", 100, { length: 6 }), 5);
  assert.equal(kohyaDynamicRank([4, 2, 1, 0.5], "sv_ratio", 100), 4);
  // Fixed rank (no dynamic method): kohya's --new_rank.
  assert.equal(kohyaDynamicRank(S, undefined, 0, { cap: 3 }), 3);
  assert.equal(kohyaDynamicRank([0, 0, 0], undefined, 0, { cap: 3 }), 1);
});

test("searchsorted(side=left) semantics", () => {
  assert.equal(searchsortedLeft([0.1, 0.5, 0.5, 1], 0.5), 1);
  assert.equal(searchsortedLeft([0.1, 0.5, 1], 0.05), 0);
  assert.equal(searchsortedLeft([0.1, 0.5, 1], 2), 3);
});

/** A literal port of golden_examples.py::kohya_new_rank (numpy semantics, written independently). */
function reference(Sv: number[], method: DynamicMethod, param: number, maxRank: number): number {
  let idx: number;
  if (method === "sv_ratio") idx = Sv.filter((x) => x > Sv[0]! / param).length;
  else {
    const v = method === "sv_fro" ? Sv.map((x) => x * x) : Sv;
    const tot = v.reduce((a, b) => a + b, 0);
    let acc = 0;
    const cum = v.map((x) => (acc += x) / tot);
    const target = method === "sv_fro" ? param ** 2 : param;
    let i = 0;
    while (i < cum.length && cum[i]! < target) i++;
    idx = i + 1;
  }
  idx = Math.max(1, Math.min(idx, Sv.length - 1));
  let nr = idx + 1;
  if (Sv[0]! <= 1e-6) nr = 1;
  else if (nr > maxRank) nr = maxRank;
  return nr;
}

test("random spectra: kohya rule equals the reference port; clean rule is the minimal rank meeting the criterion", () => {
  const rng = new Rng(seed);
  for (let trial = 0; trial < 300; trial++) {
    const n = 2 + rng.int(12);
    const Sv = Array.from({ length: n }, () => rng.uniform() * 10).sort((a, b) => b - a);
    for (const method of ["sv_ratio", "sv_cumulative", "sv_fro"] as const) {
      const param = method === "sv_ratio" ? 1 + rng.uniform() * 20 : 0.05 + rng.uniform() * 0.95;
      const cap = 1 + rng.int(n);
      assert.equal(kohyaDynamicRank(Sv, method, param, { cap }), reference(Sv, method, param, cap), `${method}(${param}) on [${Sv}] cap ${cap}`);
      const k = cleanDynamicRank(Sv, method, param);
      const meets = (j: number) => {
        if (method === "sv_ratio") return Sv.slice(j).every((x) => x <= Sv[0]! / param);
        const v = method === "sv_fro" ? Sv.map((x) => x * x) : Sv;
        const tot = v.reduce((a, b) => a + b, 0);
        return v.slice(0, j).reduce((a, b) => a + b, 0) >= (method === "sv_fro" ? param ** 2 : param) * tot * (1 - 1e-12);
      };
      assert.ok(meets(k), `${method} clean ${k} meets`);
      assert.ok(k === 1 || !meets(k - 1), `${method} clean ${k} is minimal`);
    }
  }
  assert.equal(cleanDynamicRank([0, 0], "sv_fro", 0.9), 0);
});
