// The global rank allocation of catalog truncation (docs/algorithms.md §12): keep k_m of module
// m's rank units (its largest σ² first) to maximise the kept
// energy Σ_m Σ_{i≤k_m} σ²_{m,i} subject to Σ_m k_m·c_m ≤ W, where c_m = (out+in)·bytes per element.
// A knapsack with concave profits, solved exactly:
//  1. units of equal cost form a class; within a class the best n units are the n largest σ² (each
//     module's σ² are non-increasing, so these are prefixes of every module);
//  2. the Lagrangian bound at the LP's break density λ: for any feasible choice x,
//       value(x) = L(λ) − Σ_{units where x differs from "density > λ"} |v − λc| − λ·(unused bytes),
//     with L(λ) = λW + Σ max(0, v − λc) (Martello & Toth, Knapsack Problems, 1990, §3);
//  3. a dynamic programme over the net byte change of the classes' deviations δ_j from "density > λ"
//     (costs in units of their gcd): each class's penalty is convex in δ_j, and deviations whose
//     penalty alone reaches the incumbent's (the greedy fill gives the first) are never optimal.
//     Exact whenever it runs to the end; a work limit guards pathological inputs, and then the
//     result says so, with its proven gap to the bound.

export interface KnapsackModule {
  /** Bytes one rank unit costs: (out + in) · bytes per element. */
  cost: number;
  /** The value of each rank unit, non-increasing (σᵢ², scale included). */
  values: ArrayLike<number>;
}

export interface KnapsackResult {
  /** Rank units kept per module, in input order. */
  ranks: number[];
  /** Σ kept values. */
  value: number;
  /** Bytes used: Σ ranks·cost. */
  bytes: number;
  /** An upper bound on the optimum (the Lagrangian bound); value = bound when the search proved it. */
  bound: number;
  /** Whether the search completed (value is the optimum). */
  optimal: boolean;
  nodes: number;
}

interface Class {
  cost: number;
  /** Units of the class, values descending. */
  values: Float64Array;
  owner: Int32Array;
  /** Units with density > λ: the Lagrangian base choice. */
  base: number;
}

function buildClasses(mods: KnapsackModule[]): Class[] {
  const byCost = new Map<number, number[]>();
  mods.forEach((m, i) => {
    if (!(m.cost > 0) || !Number.isFinite(m.cost)) throw new Error(`knapsack: module ${i} has cost ${m.cost}`);
    const l = byCost.get(m.cost) ?? [];
    l.push(i);
    byCost.set(m.cost, l);
  });
  const out: Class[] = [];
  for (const [cost, ids] of [...byCost].sort((a, b) => b[0] - a[0])) {
    let n = 0;
    for (const id of ids) {
      const v = mods[id]!.values;
      for (let i = 1; i < v.length; i++) if (v[i]! > v[i - 1]!) throw new Error(`knapsack: module ${id}'s values are not non-increasing`);
      n += v.length;
    }
    // k-way merge of the modules' non-increasing sequences (a binary heap on each module's next
    // value, ties to the lower module index), so each module's units stay a prefix of the class.
    const flat = new Float64Array(n),
      start = new Int32Array(ids.length + 1);
    ids.forEach((id, k) => {
      const v = mods[id]!.values;
      start[k + 1] = start[k]! + v.length;
      for (let i = 0; i < v.length; i++) flat[start[k]! + i] = v[i]!;
    });
    const pos = start.slice(0, ids.length); // next unit of each module (index into flat)
    const heap = new Int32Array(ids.length);
    let size = 0;
    for (let k = 0; k < ids.length; k++) if (start[k + 1]! > start[k]!) heap[size++] = k;
    const above = (x: number, y: number) => flat[pos[x]!]! > flat[pos[y]!]! || (flat[pos[x]!]! === flat[pos[y]!]! && x < y);
    const down = (i: number) => {
      for (;;) {
        const l = 2 * i + 1,
          r = l + 1;
        let m = i;
        if (l < size && above(heap[l]!, heap[m]!)) m = l;
        if (r < size && above(heap[r]!, heap[m]!)) m = r;
        if (m === i) return;
        const t = heap[i]!;
        heap[i] = heap[m]!;
        heap[m] = t;
        i = m;
      }
    };
    for (let i = (size >> 1) - 1; i >= 0; i--) down(i);
    const values = new Float64Array(n),
      owner = new Int32Array(n);
    for (let u = 0; u < n; u++) {
      const k = heap[0]!;
      values[u] = flat[pos[k]!]!;
      owner[u] = ids[k]!;
      if (++pos[k]! >= start[k + 1]!) heap[0] = heap[--size]!;
      down(0);
    }
    out.push({ cost, values, owner, base: 0 });
  }
  return out;
}

/** Units of a class with value > t (values descending): binary search. */
function countAbove(values: Float64Array, t: number): number {
  let lo = 0,
    hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (values[mid]! > t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The smallest density λ (to bisection precision) whose "density > λ" choice fits in W. */
function breakDensity(classes: Class[], W: number): number {
  const weightAbove = (lam: number) => classes.reduce((s, c) => s + c.cost * countAbove(c.values, lam * c.cost), 0);
  let hi = 0;
  for (const c of classes) if (c.values.length) hi = Math.max(hi, c.values[0]! / c.cost);
  hi = 2 * hi + Number.MIN_VALUE; // nothing is above: weightAbove(hi) = 0 ≤ W
  if (weightAbove(0) <= W) return 0; // everything with positive value fits
  let lo = 0;
  for (let it = 0; it < 200 && hi - lo > 1e-300; it++) {
    const mid = lo + (hi - lo) / 2;
    if (mid === lo || mid === hi) break;
    if (weightAbove(mid) <= W) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** Penalty |v − λc| of moving a class δ units away from its base, for δ in [−base, size − base]. */
function penaltyTable(c: Class, lam: number, lo: number, hi: number): { neg: Float64Array; pos: Float64Array } {
  const lc = lam * c.cost;
  const neg = new Float64Array(lo + 1),
    pos = new Float64Array(hi + 1);
  for (let d = 1; d <= lo; d++) neg[d] = neg[d - 1]! + (c.values[c.base - d]! - lc);
  for (let d = 1; d <= hi; d++) pos[d] = pos[d - 1]! + (lc - c.values[c.base + d - 1]!);
  return { neg, pos };
}

export function solveKnapsack(mods: KnapsackModule[], capacity: number, opts: { nodeLimit?: number } = {}): KnapsackResult {
  const W = Math.max(0, capacity);
  const classes = buildClasses(mods);
  const lam = breakDensity(classes, W);
  let baseWeight = 0,
    L = lam * W;
  for (const c of classes) {
    c.base = countAbove(c.values, lam * c.cost);
    baseWeight += c.base * c.cost;
    for (let i = 0; i < c.base; i++) L += c.values[i]! - lam * c.cost;
  }
  const R = W - baseWeight; // ≥ 0
  // Greedy fill of the leftover bytes in density order (units that do not fit are skipped): the first incumbent.
  const greedy = classes.map(() => 0);
  {
    let left = R;
    const next = classes.map((c) => c.base);
    for (;;) {
      let best = -1,
        bestD = -Infinity;
      classes.forEach((c, j) => {
        if (next[j]! < c.values.length && c.cost <= left) {
          const d = c.values[next[j]!]! / c.cost;
          if (d > bestD) {
            bestD = d;
            best = j;
          }
        }
      });
      if (best < 0 || bestD <= 0) break;
      next[best]!++;
      greedy[best]!++;
      left -= classes[best]!.cost;
    }
  }
  const J = classes.length;
  const costOf = (delta: number[], tables: { neg: Float64Array; pos: Float64Array }[]) => {
    let pen = 0,
      used = 0;
    delta.forEach((d, j) => {
      pen += d >= 0 ? tables[j]!.pos[d]! : tables[j]!.neg[-d]!;
      used += d * classes[j]!.cost;
    });
    return pen + lam * (R - used);
  };
  // Each class's deviations worth considering: those whose own penalty is below the incumbent's cost.
  const fullTables = classes.map((c) => penaltyTable(c, lam, c.base, c.values.length - c.base));
  let bestDelta = greedy.slice();
  let bestCost = costOf(greedy, fullTables);
  const windows = fullTables.map((t) => {
    let pos = 0,
      neg = 0;
    while (pos + 1 < t.pos.length && t.pos[pos + 1]! < bestCost) pos++;
    while (neg + 1 < t.neg.length && t.neg[neg + 1]! < bestCost) neg++;
    return { pos, neg };
  });
  // Dynamic programme over the net weight change Δ (in units of g = gcd of the costs): the least
  // penalty of any deviation with that Δ, class by class; states at or above the incumbent are dropped.
  const g = classes.reduce((x, c) => gcd(x, c.cost), 0) || 1;
  const steps = classes.map((c) => c.cost / g);
  let lo = 0,
    hi = 0;
  for (let j = 0; j < J; j++) {
    lo -= windows[j]!.neg * steps[j]!;
    hi += windows[j]!.pos * steps[j]!;
  }
  const Rg = Math.floor(R / g + 1e-9);
  hi = Math.min(hi, Rg + (0 - lo)); // a state above R/g plus every later removal can never fit
  const size = hi - lo + 1;
  const nodeLimit = opts.nodeLimit ?? 400_000_000;
  let nodes = 0,
    complete = size * J <= 50_000_000;
  if (complete) {
    let F = new Float64Array(size).fill(Infinity);
    F[-lo] = 0;
    const choice: Int32Array[] = [];
    for (let j = 0; j < J && complete; j++) {
      const { pos, neg } = windows[j]!,
        t = fullTables[j]!,
        a = steps[j]!;
      const G = new Float64Array(size).fill(Infinity),
        pick = new Int32Array(size);
      for (let k = 0; k < size; k++) {
        const f = F[k]!;
        if (f >= bestCost) continue;
        for (let d = 0; d <= pos; d++) {
          const p = f + t.pos[d]!;
          if (p >= bestCost) break;
          const i = k + d * a;
          if (i >= size) break;
          if (p < G[i]!) {
            G[i] = p;
            pick[i] = d;
          }
        }
        for (let d = 1; d <= neg; d++) {
          const p = f + t.neg[d]!;
          if (p >= bestCost) break;
          const i = k - d * a;
          if (i < 0) break;
          if (p < G[i]!) {
            G[i] = p;
            pick[i] = -d;
          }
        }
        nodes += pos + neg + 1;
        if (nodes > nodeLimit) {
          complete = false;
          break;
        }
      }
      choice.push(pick);
      F = G;
    }
    if (complete) {
      let bestK = -1;
      for (let k = 0; k < size && k + lo <= Rg; k++) {
        const total = F[k]! + lam * (R - (k + lo) * g);
        if (total < bestCost) {
          bestCost = total;
          bestK = k;
        }
      }
      if (bestK >= 0) {
        const d = classes.map(() => 0);
        for (let j = J - 1, k = bestK; j >= 0; j--) {
          d[j] = choice[j]![k]!;
          k -= d[j]! * steps[j]!;
        }
        bestDelta = d;
      }
    }
  }
  const ranks = mods.map(() => 0);
  let value = 0,
    bytes = 0;
  classes.forEach((c, j) => {
    const n = c.base + bestDelta[j]!;
    for (let i = 0; i < n; i++) {
      ranks[c.owner[i]!]!++;
      value += c.values[i]!;
    }
    bytes += n * c.cost;
  });
  return { ranks, value, bytes, bound: L, optimal: complete, nodes };
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return Math.abs(a);
}
