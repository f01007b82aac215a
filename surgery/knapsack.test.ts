// The catalog allocation against brute force: every combination of per-module ranks on small
// random catalogs (costs shared and distinct, ties, zero σ), the optimum value equal, the byte
// budget met, ranks within each module's rank; and cases where the density greedy is not optimal.
// Groups with fixed bytes (adapters: passthrough paid only when the adapter keeps a unit) against a
// brute force that pays them only for the groups it writes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Rng } from "../linalg/random.js";
import { solveGroupedKnapsack, solveKnapsack, type KnapsackGroup, type KnapsackModule } from "./knapsack.js";

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

/** Brute force over groups: every rank combination; a group's fixed bytes count when it keeps any unit. */
function bruteGroups(groups: KnapsackGroup[], W: number, alwaysPay = false): number {
  const mods = groups.flatMap((g, gi) => g.modules.map((m) => ({ m, gi })));
  let best = 0;
  const kept = groups.map(() => 0);
  const rec = (i: number, bytes: number, value: number): void => {
    if (i === mods.length) {
      const fixed = groups.reduce((s, g, gi) => s + (alwaysPay || kept[gi]! > 0 ? g.fixed : 0), 0);
      if (bytes + fixed <= W) best = Math.max(best, value);
      return;
    }
    const { m, gi } = mods[i]!;
    let v = value;
    for (let r = 0; r <= m.values.length && bytes + r * m.cost <= W; r++) {
      if (r > 0) v += m.values[r - 1]!;
      kept[gi]! += r;
      rec(i + 1, bytes + r * m.cost, v);
      kept[gi]! -= r;
    }
  };
  rec(0, 0, 0);
  return best;
}

function randomGroups(rng: Rng): KnapsackGroup[] {
  const costs = [3, 5, 7, 8, 13].slice(0, 1 + rng.int(5));
  return Array.from({ length: 1 + rng.int(4) }, () => {
    const modules = Array.from({ length: 1 + rng.int(3) }, () => {
      const r = 1 + rng.int(3);
      const vals = Array.from({ length: r }, () => (rng.int(6) === 0 ? 0 : rng.int(3) === 0 ? 4 : Math.abs(rng.normal()) * 10));
      vals.sort((a, b) => b - a);
      return { cost: costs[rng.int(costs.length)]!, values: vals };
    });
    // No fixed bytes, a few, or more than the group's units (a passthrough-heavy adapter).
    const fixed = [0, 1 + rng.int(6), 10 + rng.int(40)][rng.int(3)]!;
    return { fixed, modules };
  });
}

test("grouped knapsack: the optimum of brute force with fixed bytes paid only by the groups written, on 3000 small random catalogs", () => {
  const rng = new Rng(seed + 1);
  let upfrontWorse = 0;
  for (let t = 0; t < 3000; t++) {
    const groups = randomGroups(rng);
    const total = groups.reduce((s, g) => s + g.fixed + g.modules.reduce((x, m) => x + m.cost * m.values.length, 0), 0);
    const W = rng.int(total + 2);
    const r = solveGroupedKnapsack(groups, W);
    const opt = bruteGroups(groups, W);
    const what = `case ${t}: W ${W}, ${JSON.stringify(groups)}`;
    assert.ok(r.optimal, `${what}: search did not complete`);
    assert.ok(Math.abs(r.value - opt) <= 1e-9 * Math.max(1, opt), `${what}: ${r.value} vs brute force ${opt}`);
    let bytes = 0,
      v = 0;
    groups.forEach((g, gi) => {
      const ks = r.ranks[gi]!;
      assert.equal(ks.length, g.modules.length);
      assert.equal(
        r.used[gi],
        ks.some((k) => k > 0),
        what,
      );
      if (r.used[gi]) bytes += g.fixed;
      ks.forEach((k, i) => {
        assert.ok(k >= 0 && k <= g.modules[i]!.values.length, what);
        bytes += k * g.modules[i]!.cost;
        for (let j = 0; j < k; j++) v += g.modules[i]!.values[j]!;
      });
    });
    assert.equal(r.bytes, bytes, what);
    assert.ok(r.bytes <= W, what);
    assert.ok(Math.abs(v - r.value) <= 1e-9 * Math.max(1, v), what);
    assert.ok(r.bound >= r.value - 1e-9 * Math.max(1, r.value), what);
    if (bruteGroups(groups, W, true) < opt - 1e-9) upfrontWorse++;
  }
  // Reserving every group's fixed bytes up front (the rule before) falls short in some of these cases.
  assert.ok(upfrontWorse > 100, `reserving the fixed bytes up front was optimal in all but ${upfrontWorse} cases`);
  console.log(`grouped knapsack: reserving every fixed cost up front below the optimum in ${upfrontWorse} of 3000 cases`);
});

test("grouped knapsack: a heavy group is dropped when its fixed bytes buy more elsewhere; none fits; no fixed bytes is the plain knapsack", () => {
  // Two adapters with 100 fixed bytes and one unit of 5 at cost 10; a third without fixed bytes, ten units of 4 at cost 10. W = 200.
  // Both heavy ones: 220 > W. One heavy one (110) and 9 units: 5 + 36 = 41. Neither: 10 units = 40.
  const heavy = () => ({ fixed: 100, modules: [{ cost: 10, values: [5] }] });
  const light = { fixed: 0, modules: [{ cost: 10, values: Array(10).fill(4) }] };
  const r = solveGroupedKnapsack([heavy(), heavy(), light], 200);
  assert.ok(r.optimal);
  assert.equal(r.value, 41);
  assert.equal(r.used.filter((u) => u).length, 2);
  assert.deepEqual(r.ranks[2], [9]);
  assert.equal(r.bytes, 200);
  const none = solveGroupedKnapsack([heavy()], 109);
  assert.deepEqual(none.ranks, [[0]]);
  assert.deepEqual(none.used, [false]);
  assert.equal(none.bytes, 0);
  const rng = new Rng(seed + 2);
  for (let t = 0; t < 200; t++) {
    const mods = randomCatalog(rng);
    const W = rng.int(mods.reduce((s, m) => s + m.cost * m.values.length, 0) + 2);
    const a = solveKnapsack(mods, W),
      b = solveGroupedKnapsack(
        [
          { fixed: 0, modules: mods.slice(0, 2) },
          { fixed: 0, modules: mods.slice(2) },
        ],
        W,
      );
    assert.deepEqual(b.ranks.flat(), a.ranks);
    assert.equal(b.value, a.value);
  }
  assert.throws(() => solveGroupedKnapsack([{ fixed: -1, modules: [] }], 5), /fixed/);
});
