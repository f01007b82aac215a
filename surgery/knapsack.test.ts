// The catalog allocation against brute force: every combination of per-module ranks on small
// random catalogs (costs shared and distinct, ties, zero σ), the optimum value equal, the byte
// budget met, ranks within each module's rank; and cases where the density greedy is not optimal.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "../linalg/random.js";
import { solveKnapsack, type KnapsackModule } from "./knapsack.js";

const seed = Number(process.env["LORA_TEST_SEED"] ?? Date.now() % 1_000_000);
console.log(`knapsack.test seed=${seed}`);

function brute(mods: KnapsackModule[], W: number): number {
  let best = 0;
  const k = mods.map(() => 0);
  const rec = (i: number, bytes: number, value: number): void => {
    if (bytes > W) return;
    if (i === mods.length) {
      best = Math.max(best, value);
      return;
    }
    let v = value;
    for (let r = 0; r <= mods[i]!.values.length; r++) {
      if (r > 0) v += mods[i]!.values[r - 1]!;
      k[i] = r;
      rec(i + 1, bytes + r * mods[i]!.cost, v);
    }
  };
  rec(0, 0, 0);
  return best;
}

/** Density greedy: units by value/cost, taken while they fit (the non-exact alternative). */
function greedy(mods: KnapsackModule[], W: number): number {
  const units = mods.flatMap((m) => Array.from(m.values, (v) => ({ v, c: m.cost })));
  units.sort((a, b) => b.v / b.c - a.v / a.c);
  let left = W,
    value = 0;
  for (const u of units)
    if (u.c <= left && u.v > 0) {
      left -= u.c;
      value += u.v;
    }
  return value;
}

function randomCatalog(rng: Rng): KnapsackModule[] {
  const costs = [3, 5, 7, 8, 13].slice(0, 1 + rng.int(5));
  return Array.from({ length: 2 + rng.int(4) }, () => {
    const r = 1 + rng.int(4);
    const vals = Array.from({ length: r }, () => (rng.int(6) === 0 ? 0 : rng.int(3) === 0 ? 4 : Math.abs(rng.normal()) * 10));
    vals.sort((a, b) => b - a);
    return { cost: costs[rng.int(costs.length)]!, values: vals };
  });
}

test("knapsack: the optimum of brute force on 3000 small random catalogs; budget met; ranks valid", () => {
  const rng = new Rng(seed);
  let greedyWorse = 0;
  for (let t = 0; t < 3000; t++) {
    const mods = randomCatalog(rng);
    const total = mods.reduce((s, m) => s + m.cost * m.values.length, 0);
    const W = rng.int(total + 2);
    const r = solveKnapsack(mods, W);
    const opt = brute(mods, W);
    assert.ok(r.optimal, `case ${t}: search did not complete`);
    assert.ok(Math.abs(r.value - opt) <= 1e-9 * Math.max(1, opt), `case ${t}: ${r.value} vs brute force ${opt} (W ${W}, ${JSON.stringify(mods)})`);
    assert.ok(r.bytes <= W);
    assert.equal(
      r.bytes,
      r.ranks.reduce((s, k, i) => s + k * mods[i]!.cost, 0),
    );
    let v = 0;
    r.ranks.forEach((k, i) => {
      assert.ok(k >= 0 && k <= mods[i]!.values.length);
      for (let j = 0; j < k; j++) v += mods[i]!.values[j]!;
    });
    assert.ok(Math.abs(v - r.value) <= 1e-9 * Math.max(1, v));
    assert.ok(r.bound >= r.value - 1e-9 * Math.max(1, r.value));
    if (greedy(mods, W) < opt - 1e-9) greedyWorse++;
  }
  assert.ok(greedyWorse > 0, "the density greedy was optimal everywhere: these cases do not exercise the exact search");
  console.log(`knapsack: greedy by energy per byte below the optimum in ${greedyWorse} of 3000 cases`);
});

test("knapsack: a hand case where energy per byte misleads", () => {
  // Module a: one unit of value 10 at cost 6 (density 1.67); b: two units of 6 at cost 4 (1.5 each). W = 8.
  // Greedy takes a (6 bytes) and then nothing fits: 10. Optimal: both units of b: 12.
  const r = solveKnapsack(
    [
      { cost: 6, values: [10] },
      { cost: 4, values: [6, 6] },
    ],
    8,
  );
  assert.deepEqual(r.ranks, [0, 2]);
  assert.equal(r.value, 12);
  assert.equal(
    greedy(
      [
        { cost: 6, values: [10] },
        { cost: 4, values: [6, 6] },
      ],
      8,
    ),
    10,
  );
});

test("knapsack: everything fits, nothing fits, bad input", () => {
  const mods = [
    { cost: 2, values: [3, 1] },
    { cost: 3, values: [2, 0] },
  ];
  assert.deepEqual(solveKnapsack(mods, 100).ranks, [2, 1]);
  assert.deepEqual(solveKnapsack(mods, 1).ranks, [0, 0]);
  assert.throws(() => solveKnapsack([{ cost: 2, values: [1, 3] }], 5), /non-increasing/);
  assert.throws(() => solveKnapsack([{ cost: 0, values: [1] }], 5), /cost/);
});
