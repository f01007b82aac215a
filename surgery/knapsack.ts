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
// solveGroupedKnapsack: the same over adapters with fixed bytes (passthrough) paid only when the
// adapter keeps a unit (an adapter that keeps none is not written): see its comment.

export interface KnapsackModule {
  /** Bytes one rank unit costs: (out + in) · bytes per element. */
  cost: number;
  /** The value of each rank unit, non-increasing (σᵢ², scale included). */
  values: ArrayLike<number>;
}

/** Modules that are written together (one adapter): `fixed` bytes are paid once if any of its units is kept. */
export interface KnapsackGroup {
  /** Bytes the group carries whatever its ranks, paid only when it keeps at least one unit (0: none). */
  fixed: number;
  modules: KnapsackModule[];
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

export interface GroupedKnapsackResult extends Omit<KnapsackResult, "ranks"> {
  /** Rank units kept per group, per module, in input order. */
  ranks: number[][];
  /** Per group: whether it keeps any unit (its fixed bytes are then part of `bytes`). */
  used: boolean[];
}

interface Class {
  cost: number;
  /** Units of the class, values descending. */
  values: Float64Array;
  owner: Int32Array;
  /** Units with density > λ: the Lagrangian base choice. */
  base: number;
}

function buildClasses(mods: KnapsackModule[], members: Iterable<number>): Class[] {
  const byCost = new Map<number, number[]>();
  for (const i of members) {
    const m = mods[i]!;
    const l = byCost.get(m.cost) ?? [];
    l.push(i);
    byCost.set(m.cost, l);
  }
  const out: Class[] = [];
  for (const [cost, ids] of [...byCost].sort((a, b) => b[0] - a[0])) {
    let n = 0;
    for (const id of ids) n += mods[id]!.values.length;
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

/** Units with value > t (values non-increasing): binary search. */
function countAbove(values: ArrayLike<number>, t: number): number {
  let lo = 0,
    hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (values[mid]! > t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The smallest density λ (to bisection precision) whose "density > λ" choice fits in W; `weightAbove`
 * (the bytes of that choice) is non-increasing in λ, and 0 above `top` (the largest density).
 */
function breakDensity(weightAbove: (lam: number) => number, top: number, W: number): number {
  let hi = 2 * top + Number.MIN_VALUE; // nothing is above: weightAbove(hi) = 0 ≤ W
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
  const r = solveGroupedKnapsack([{ fixed: 0, modules: mods }], capacity, opts);
  return { ranks: r.ranks[0]!, value: r.value, bytes: r.bytes, bound: r.bound, optimal: r.optimal, nodes: r.nodes };
}

/** A group with fixed bytes whose fate the search decides: written (its units as usual) or dropped. */
interface OpenGroup {
  group: number;
  /** Its own classes (indices into the class list). */
  classes: number[];
  /** Written in the base choice (N > 0). */
  base: boolean;
  /** Penalty and byte change of flipping it (written ↔ dropped, with its base units). */
  flipPen: number;
  flipBytes: number;
}

/**
 * The allocation over groups (adapters) whose fixed bytes count only when the group keeps at least one
 * unit (an adapter that keeps none is not written). With N_a(λ) = Σ_{units of a, v > λc}(v − λc) −
 * λ·fixed_a, the Lagrangian bound is L(λ) = λW + Σ_a max(0, N_a) (groups without fixed bytes: their
 * units as above), λ the smallest density whose choice ("units > λ" in every group with N_a > 0)
 * fits; any solution's value is L − Σ penalties − λ·unused, a group's penalty being max(0, N_a) if
 * dropped and max(0, N_a) − N_a + Σ|v − λc| over its units that differ from the base if written.
 * A group whose flip (written ↔ dropped) alone costs more than a first solution (the base choice
 * filled greedily) is settled: written ones are classes like the groups without fixed bytes; the
 * others ("open") are decided by a depth-first search over their flips after the shared classes'
 * dynamic programme, their fixed bytes and penalties kept beside the states (exact whatever the gcd).
 */
export function solveGroupedKnapsack(groups: KnapsackGroup[], capacity: number, opts: { nodeLimit?: number } = {}): GroupedKnapsackResult {
  const W = Math.max(0, capacity);
  const mods: KnapsackModule[] = [],
    first: number[] = [];
  groups.forEach((gr, gi) => {
    if (!(gr.fixed >= 0) || !Number.isFinite(gr.fixed)) throw new Error(`knapsack: group ${gi} has fixed bytes ${gr.fixed}`);
    first.push(mods.length);
    mods.push(...gr.modules);
  });
  first.push(mods.length);
  let top = 0;
  mods.forEach((m, i) => {
    if (!(m.cost > 0) || !Number.isFinite(m.cost)) throw new Error(`knapsack: module ${i} has cost ${m.cost}`);
    const v = m.values;
    for (let j = 1; j < v.length; j++) if (v[j]! > v[j - 1]!) throw new Error(`knapsack: module ${i}'s values are not non-increasing`);
    if (v.length) top = Math.max(top, v[0]! / m.cost);
  });
  const range = (gi: number) => Array.from({ length: first[gi + 1]! - first[gi]! }, (_, k) => first[gi]! + k);
  // Groups with fixed bytes (and modules): "charged"; the others' units are pooled in shared classes.
  const charged = groups.flatMap((gr, gi) => (gr.fixed > 0 && gr.modules.length ? [gi] : []));
  const isCharged = new Uint8Array(groups.length);
  for (const gi of charged) isCharged[gi] = 1;
  const pooled = groups.flatMap((_, gi) => (isCharged[gi] ? [] : range(gi)));
  const shared = buildClasses(mods, pooled);
  // The charged groups' modules, flat: cost and values.
  const chFirst = new Int32Array(charged.length + 1),
    chCost: number[] = [],
    chValues: ArrayLike<number>[] = [];
  charged.forEach((gi, ci) => {
    for (const i of range(gi)) {
      chCost.push(mods[i]!.cost);
      chValues.push(mods[i]!.values);
    }
    chFirst[ci + 1] = chCost.length;
  });
  /**
   * N(λ) of the ci-th charged group (returned; with `exact` false only its sign is exact: the sum stops
   * once it is positive) and the bytes of its "units > λ" choice with its fixed bytes (in chBytes).
   */
  let chBytes = 0;
  const chargedAt = (ci: number, lam: number, exact: boolean): number => {
    const fixed = groups[charged[ci]!]!.fixed,
      owed = lam * fixed;
    let n = 0,
      b = fixed,
      sure = false;
    for (let i = chFirst[ci]!; i < chFirst[ci + 1]!; i++) {
      const c = chCost[i]!,
        v = chValues[i]!,
        lc = lam * c,
        k = countAbove(v, lc);
      b += c * k;
      for (let j = 0; j < k && !sure; j++) {
        n += v[j]! - lc;
        sure = !exact && n > owed;
      }
    }
    chBytes = b;
    return n - owed;
  };
  const weightAbove = (lam: number) => {
    let w = shared.reduce((s, c) => s + c.cost * countAbove(c.values, lam * c.cost), 0);
    for (let ci = 0; ci < charged.length; ci++) if (chargedAt(ci, lam, false) > 0) w += chBytes;
    return w;
  };
  const lam = breakDensity(weightAbove, top, W);
  const N = new Float64Array(groups.length);
  let baseWeight = 0,
    L = lam * W;
  for (const c of shared) {
    c.base = countAbove(c.values, lam * c.cost);
    baseWeight += c.base * c.cost;
    for (let i = 0; i < c.base; i++) L += c.values[i]! - lam * c.cost;
  }
  charged.forEach((gi, ci) => {
    const n = chargedAt(ci, lam, true);
    N[gi] = n;
    if (n > 0) {
      baseWeight += chBytes;
      L += n;
    }
  });
  // Settle what can be settled against a first solution (the base choice, its leftover bytes filled
  // module by module in density order): a group whose flip alone costs more than that solution is
  // flipped in no solution as good. Never written either: a group with no positive value, or whose
  // fixed bytes and cheapest useful unit exceed W.
  const tol = 1e-9 * Math.abs(L);
  const thr =
    fillCost(
      mods,
      groups.flatMap((_, gi) => (!isCharged[gi] || N[gi]! > 0 ? range(gi) : [])),
      lam,
      W - baseWeight,
    ) + tol;
  const committed: number[] = [],
    open: number[] = [];
  for (const gi of charged) {
    let cheapest = Infinity;
    for (const i of range(gi)) if (mods[i]!.values.length && mods[i]!.values[0]! > 0) cheapest = Math.min(cheapest, mods[i]!.cost);
    if (cheapest === Infinity || groups[gi]!.fixed + cheapest > W) continue;
    if (N[gi]! > thr) committed.push(gi);
    else if (-N[gi]! <= thr) open.push(gi);
  }
  // The committed groups' units: classes of their own (same λ: the same base units, bytes and bound),
  // written like the groups without fixed bytes; their fixed bytes are part of the base.
  for (const c of buildClasses(mods, committed.flatMap(range))) {
    c.base = countAbove(c.values, lam * c.cost);
    shared.push(c);
  }
  const classes = [...shared],
    classGroup: number[] = shared.map(() => -1);
  const opens: OpenGroup[] = open.map((gi, o) => {
    const own = buildClasses(mods, range(gi));
    const ids: number[] = [];
    for (const c of own) {
      c.base = countAbove(c.values, lam * c.cost);
      ids.push(classes.length);
      classes.push(c);
      classGroup.push(o);
    }
    return { group: gi, classes: ids, base: N[gi]! > 0, flipPen: 0, flipBytes: 0 };
  });
  const R = W - baseWeight; // ≥ 0
  // Greedy fill of the leftover bytes in density order (units that do not fit are skipped), over the
  // groups written in the base choice: the first incumbent.
  const candidate = classes.map((_, j) => classGroup[j]! < 0 || opens[classGroup[j]!]!.base);
  const greedy = classes.map(() => 0);
  {
    let left = R;
    const next = classes.map((c) => c.base);
    for (;;) {
      let best = -1,
        bestD = -Infinity;
      classes.forEach((c, j) => {
        if (candidate[j] && next[j]! < c.values.length && c.cost <= left) {
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
  let bestDelta = greedy.slice(),
    bestUsed = opens.map((u) => u.base);
  let bestCost = costOf(greedy, fullTables);
  const windows = fullTables.map((t) => {
    let pos = 0,
      neg = 0;
    while (pos + 1 < t.pos.length && t.pos[pos + 1]! < bestCost) pos++;
    while (neg + 1 < t.neg.length && t.neg[neg + 1]! < bestCost) neg++;
    return { pos, neg };
  });
  // Dynamic programme over the net weight change Δ of the classes' deviations (in units of g = gcd of
  // the costs): the least penalty of any deviation with that Δ, class by class; states at or above the
  // incumbent are dropped. The shared classes once; then a depth-first search over which open groups
  // flip (their penalties and bytes kept aside, exact: fixed bytes need not be multiples of g), a
  // branch cut when its flips' penalties reach the incumbent, the classes of the groups written added
  // along the way.
  const g = classes.reduce((x, c) => gcd(x, c.cost), 0) || 1;
  const steps = classes.map((c) => c.cost / g);
  let lo = 0,
    hi = 0,
    freed = 0;
  for (let j = 0; j < J; j++) {
    lo -= windows[j]!.neg * steps[j]!;
    hi += windows[j]!.pos * steps[j]!;
  }
  for (const u of opens) {
    let bytes = groups[u.group]!.fixed;
    for (const j of u.classes) bytes += classes[j]!.base * classes[j]!.cost;
    u.flipBytes = u.base ? -bytes : bytes;
    u.flipPen = u.base ? N[u.group]! : -N[u.group]!;
    if (u.base) freed += bytes;
  }
  // A state above (the most bytes left: R and every open group dropped)/g plus every later removal can never fit.
  hi = Math.min(hi, Math.floor((R + freed) / g + 1e-9) + (0 - lo));
  const size = hi - lo + 1;
  const nodeLimit = opts.nodeLimit ?? 400_000_000;
  let nodes = 0,
    complete = size * J <= 50_000_000;
  if (complete) {
    const choice: Int32Array[] = new Array(J);
    /** One class's deviations added to the states F; states whose penalty reaches `limit` are dropped. */
    const classStep = (F: Float64Array<ArrayBuffer>, j: number, limit: number): Float64Array<ArrayBuffer> => {
      const { pos, neg } = windows[j]!,
        t = fullTables[j]!,
        a = steps[j]!;
      const G = new Float64Array(size).fill(Infinity),
        pick = new Int32Array(size);
      for (let k = 0; k < size && complete; k++) {
        const f = F[k]!;
        if (f >= limit) continue;
        for (let d = 0; d <= pos; d++) {
          const p = f + t.pos[d]!;
          if (p >= limit) break;
          const i = k + d * a;
          if (i >= size) break;
          if (p < G[i]!) {
            G[i] = p;
            pick[i] = d;
          }
        }
        for (let d = 1; d <= neg; d++) {
          const p = f + t.neg[d]!;
          if (p >= limit) break;
          const i = k - d * a;
          if (i < 0) break;
          if (p < G[i]!) {
            G[i] = p;
            pick[i] = -d;
          }
        }
        nodes += pos + neg + 1;
        if (nodes > nodeLimit) complete = false;
      }
      choice[j] = pick;
      return G;
    };
    let F = new Float64Array(size).fill(Infinity);
    F[-lo] = 0;
    for (let j = 0; j < shared.length && complete; j++) F = classStep(F, j, bestCost);
    // The search over flips: `pen` and `bytes` the flips' penalty and byte change so far.
    let bestK = -1,
      bestFlips: boolean[] = [],
      bestChoice = new Map<number, Int32Array>();
    const flips = opens.map(() => false);
    const visit = (o: number, A: Float64Array<ArrayBuffer>, pen: number, bytes: number): void => {
      if (!complete) return;
      if (o === opens.length) {
        const left = R - bytes,
          top = Math.floor(left / g + 1e-9);
        let found = false;
        for (let k = 0; k < size && k + lo <= top; k++) {
          const total = A[k]! + pen + lam * (left - (k + lo) * g);
          if (total < bestCost) {
            bestCost = total;
            bestK = k;
            found = true;
          }
        }
        nodes += size;
        if (found) {
          bestFlips = flips.slice();
          bestChoice = new Map(opens.flatMap((u, x) => (u.base !== flips[x] ? u.classes.map((j) => [j, choice[j]!.slice()] as const) : [])));
        }
        return;
      }
      const u = opens[o]!;
      for (const flip of [false, true]) {
        const p = pen + (flip ? u.flipPen : 0);
        if (p >= bestCost) continue;
        flips[o] = flip;
        let B = A;
        if (u.base !== flip) for (const j of u.classes) if (complete) B = classStep(B, j, bestCost - p);
        visit(o + 1, B, p, bytes + (flip ? u.flipBytes : 0));
        flips[o] = false;
      }
    };
    visit(0, F, 0, 0);
    if (nodes > nodeLimit) complete = false;
    if (complete && bestK >= 0) {
      const d = classes.map(() => 0);
      let k = bestK;
      for (let o = opens.length - 1; o >= 0; o--) {
        const u = opens[o]!;
        if (u.base === bestFlips[o]) continue;
        for (let x = u.classes.length - 1; x >= 0; x--) {
          const j = u.classes[x]!;
          d[j] = bestChoice.get(j)![k]!;
          k -= d[j]! * steps[j]!;
        }
      }
      for (let j = shared.length - 1; j >= 0; j--) {
        d[j] = choice[j]![k]!;
        k -= d[j]! * steps[j]!;
      }
      bestDelta = d;
      bestUsed = opens.map((u, o) => u.base !== bestFlips[o]);
    }
  }
  const flat = mods.map(() => 0);
  let value = 0;
  classes.forEach((c, j) => {
    if (classGroup[j]! >= 0 && !bestUsed[classGroup[j]!]) return;
    const n = c.base + bestDelta[j]!;
    for (let i = 0; i < n; i++) {
      flat[c.owner[i]!]!++;
      value += c.values[i]!;
    }
  });
  const ranks = groups.map((_, gi) => flat.slice(first[gi]!, first[gi + 1]!));
  const used = ranks.map((r) => r.some((k) => k > 0));
  let bytes = 0;
  groups.forEach((gr, gi) => {
    if (used[gi]) bytes += gr.fixed + ranks[gi]!.reduce((s, k, x) => s + k * gr.modules[x]!.cost, 0);
  });
  return { ranks, used, value, bytes, bound: L, optimal: complete, nodes };
}

/**
 * The cost (Σ |v − λc| of the units added + λ·bytes left) of filling `left` bytes from the "units > λ"
 * choice with the next units of the given modules, the densest that fits first (a module whose next
 * unit does not fit is done: the bytes left only shrink).
 */
function fillCost(mods: KnapsackModule[], members: number[], lam: number, left: number): number {
  const next = new Int32Array(members.length),
    heap: number[] = [];
  const density = (x: number) => {
    const m = mods[members[x]!]!;
    return next[x]! < m.values.length ? m.values[next[x]!]! / m.cost : 0;
  };
  const above = (x: number, y: number) => density(x) > density(y);
  const up = (i: number) => {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!above(heap[i]!, heap[p]!)) return;
      [heap[i], heap[p]] = [heap[p]!, heap[i]!];
      i = p;
    }
  };
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1,
        r = l + 1;
      let m = i;
      if (l < heap.length && above(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && above(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  members.forEach((id, x) => {
    next[x] = countAbove(mods[id]!.values, lam * mods[id]!.cost);
    if (density(x) > 0) {
      heap.push(x);
      up(heap.length - 1);
    }
  });
  let pen = 0;
  while (heap.length) {
    const x = heap[0]!,
      m = mods[members[x]!]!;
    if (m.cost <= left) {
      pen += lam * m.cost - m.values[next[x]!]!;
      left -= m.cost;
      next[x]!++;
    }
    if (m.cost > left || density(x) <= 0) {
      heap[0] = heap[heap.length - 1]!;
      heap.pop();
    }
    down(0);
  }
  return pen + lam * left;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return Math.abs(a);
}
