// Rank redistribution from spectra alone (docs/algorithms.md §3.2). `--energy F` is per module: the
// fewest ranks whose σ² hold fraction F of the module's energy. `--budget K` is global: K ranks in
// total, taken greedily by score — energy σ² (exactly optimal for the total squared error, the
// problem being separable with non-increasing gains), ratio σ²/Σσ² capped by ρ·r̄ (EVA's pooling),
// or params σ²/(in+out) (greedy by density for a parameter budget).
import { UsageError } from "../../common/errors.js";

export type Score = "energy" | "ratio" | "params";

export interface SpectrumInfo {
  name: string;
  /** Singular values of ΔW, descending. */
  sigma: ArrayLike<number>;
  in: number;
  out: number;
  /** Current rank (the cap of any weights-only truncation). */
  rank: number;
}

export interface AllocationRequest {
  budget?: number;
  energy?: number;
  score: Score;
  minRank: number;
  rho: number;
}

export interface Allocation {
  ranks: Map<string, number>;
  /** Σ kept σ² / Σ σ² over all modules. */
  retainedEnergy: number;
}

/** Fewest k with Σ_{i<k} σᵢ² ≥ F·Σσᵢ² (0 for an all-zero spectrum). */
export function energyRank(sigma: ArrayLike<number>, fraction: number): number {
  let total = 0;
  for (let i = 0; i < sigma.length; i++) total += sigma[i]! ** 2;
  if (total === 0) return 0;
  let acc = 0;
  for (let i = 0; i < sigma.length; i++) {
    acc += sigma[i]! ** 2;
    if (acc >= fraction * total * (1 - 1e-12)) return i + 1;
  }
  return sigma.length;
}

function retained(mods: SpectrumInfo[], ranks: Map<string, number>): number {
  let kept = 0,
    total = 0;
  for (const m of mods) {
    const k = ranks.get(m.name) ?? 0;
    for (let i = 0; i < m.sigma.length; i++) {
      const e = m.sigma[i]! ** 2;
      total += e;
      if (i < k) kept += e;
    }
  }
  return total > 0 ? kept / total : 1;
}

export function allocate(mods: SpectrumInfo[], req: AllocationRequest): Allocation {
  const ranks = new Map<string, number>();
  if (req.energy !== undefined) {
    for (const m of mods) ranks.set(m.name, Math.max(Math.min(req.minRank, m.rank), Math.min(m.rank, energyRank(m.sigma, req.energy))));
    return { ranks, retainedEnergy: retained(mods, ranks) };
  }
  if (req.budget === undefined) throw new UsageError("allocation needs --budget or --energy");
  const K = req.budget;
  const meanRank = mods.reduce((s, m) => s + m.rank, 0) / Math.max(1, mods.length);
  const cap = (m: SpectrumInfo) => (req.score === "ratio" ? Math.min(m.rank, Math.max(1, Math.round(req.rho * meanRank))) : m.rank);
  // Floors first; they count against the budget.
  let used = 0;
  for (const m of mods) {
    const f = Math.min(req.minRank, cap(m));
    ranks.set(m.name, f);
    used += f;
  }
  if (used > K) throw new UsageError(`--budget ${K} is smaller than the --min-rank floors (${used} ranks)`);
  interface Cand {
    score: number;
    mod: number;
    idx: number;
  }
  const cands: Cand[] = [];
  mods.forEach((m, mi) => {
    let total = 0;
    for (let i = 0; i < m.sigma.length; i++) total += m.sigma[i]! ** 2;
    const c = cap(m);
    for (let i = ranks.get(m.name)!; i < Math.min(c, m.sigma.length); i++) {
      const e = m.sigma[i]! ** 2;
      const score = req.score === "energy" ? e : req.score === "ratio" ? (total > 0 ? e / total : 0) : e / (m.in + m.out);
      cands.push({ score, mod: mi, idx: i });
    }
  });
  // Highest score first; ties by module order then index (deterministic). Within a module scores
  // are non-increasing, so taking the top set always takes prefixes.
  cands.sort((a, b) => b.score - a.score || a.mod - b.mod || a.idx - b.idx);
  for (const c of cands.slice(0, Math.max(0, K - used))) {
    const name = mods[c.mod]!.name;
    ranks.set(name, ranks.get(name)! + 1);
  }
  return { ranks, retainedEnergy: retained(mods, ranks) };
}
