// Rank allocation (docs/algorithms.md §3.2) against the golden example docs/algorithms.md §9.7 and a brute-force optimum.
import { test } from "node:test";
import assert from "node:assert/strict";
import { allocate, energyRank } from "./allocate.js";
import { Rng } from "../../linalg/random.js";

const golden = [
  { name: "q", sigma: [5, 1, 0.5, 0.1], in: 10, out: 10, rank: 4 },
  { name: "v", sigma: [3, 2.5, 2, 0.05], in: 10, out: 10, rank: 4 },
  { name: "o", sigma: [0.2, 0.1, 0.05, 0.01], in: 10, out: 10, rank: 4 },
];

test("golden §9.7: energy budget 6 → q3 v3 o0, squared error 0.0651", () => {
  const a = allocate(golden, { budget: 6, score: "energy", minRank: 0, rho: 2 });
  assert.deepEqual(Object.fromEntries(a.ranks), { q: 3, v: 3, o: 0 });
  let err = 0;
  for (const m of golden) m.sigma.slice(a.ranks.get(m.name)).forEach((s) => (err += s * s));
  assert.ok(Math.abs(err - 0.0651) < 1e-4, String(err));
});

test("golden §9.7: ratio budget 6 → q1 v3 o2", () => {
  const a = allocate(golden, { budget: 6, score: "ratio", minRank: 0, rho: 2 });
  assert.deepEqual(Object.fromEntries(a.ranks), { q: 1, v: 3, o: 2 });
});

test("energy allocation equals the global greedy top-K and is optimal (brute force, random spectra)", () => {
  const rng = new Rng(Date.now() % 100000);
  for (let trial = 0; trial < 30; trial++) {
    const mods = Array.from({ length: 3 }, (_, i) => {
      const r = 1 + rng.int(4);
      const s = Array.from({ length: r }, () => rng.uniform() * 3).sort((a, b) => b - a);
      return { name: `m${i}`, sigma: s, in: 8, out: 8, rank: r };
    });
    const total = mods.reduce((s, m) => s + m.rank, 0);
    const K = rng.int(total + 1);
    const a = allocate(mods, { budget: K, score: "energy", minRank: 0, rho: 2 });
    const kept = (ranks: number[]) => ranks.reduce((s, k, i) => s + mods[i]!.sigma.slice(0, k).reduce((x, y) => x + y * y, 0), 0);
    let best = -1;
    const rec = (i: number, left: number, acc: number[]) => {
      if (i === mods.length) {
        if (left === 0 || acc.reduce((s, x) => s + x, 0) === Math.min(K, total)) best = Math.max(best, kept(acc));
        return;
      }
      for (let k = 0; k <= Math.min(mods[i]!.rank, left); k++) rec(i + 1, left - k, [...acc, k]);
    };
    rec(0, K, []);
    const got = kept(mods.map((m) => a.ranks.get(m.name)!));
    assert.ok(Math.abs(got - best) < 1e-12, `trial ${trial}: ${got} vs optimum ${best}`);
    assert.equal(
      [...a.ranks.values()].reduce((s, x) => s + x, 0),
      Math.min(K, total),
    );
  }
});

test("--min-rank floors count against the budget; --energy is per module", () => {
  const a = allocate(golden, { budget: 6, score: "energy", minRank: 1, rho: 2 });
  assert.deepEqual(Object.fromEntries(a.ranks), { q: 2, v: 3, o: 1 });
  assert.throws(() => allocate(golden, { budget: 2, score: "energy", minRank: 1, rho: 2 }), /smaller than the --min-rank floors/);
  const e = allocate(golden, { energy: 0.9, score: "energy", minRank: 0, rho: 2 });
  assert.deepEqual(Object.fromEntries(e.ranks), { q: 1, v: 3, o: 2 });
  assert.equal(energyRank([0, 0], 0.5), 0);
});
