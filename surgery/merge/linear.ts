// linear: PEFT's factor-wise weighted average (add_weighted_adapter combination_type="linear";
// docs/algorithms.md §5.3): B' = Σ √|wᵢsᵢ|·Bᵢ and A' = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ, so
// B'A' = Σᵢⱼ √|wᵢsᵢ|√|wⱼsⱼ|·BᵢAⱼ carries cross terms: an approximation of Σ wᵢsᵢBᵢAᵢ, exact only
// for one adapter (PEFT's own docstring calls it "a very rough approximation"). Kept for parity
// with PEFT; the error report says how far it is. PEFT requires equal ranks; here a smaller rank
// is zero-padded to the largest, which is the same thing for equal ranks.
import { splitWeight, zeroFactors } from "./term-weights.js";
import type { MergedFactors, MergeTerm, TermShape } from "./types.js";

export function linearRank(terms: TermShape[]): number {
  return Math.max(...terms.map((t) => t.A.rows));
}

export function mergeLinear(terms: MergeTerm[]): MergedFactors {
  const r = linearRank(terms);
  const { out, inn, B, A } = zeroFactors(terms, r);
  for (const t of terms) {
    const ri = t.A.rows;
    const { g, ga } = splitWeight(t);
    for (let i = 0; i < out; i++) for (let j = 0; j < ri; j++) B[i * r + j] += g * t.B.data[i * ri + j]!;
    for (let j = 0; j < ri * inn; j++) A[j] += ga * t.A.data[j]!;
  }
  return { B: { rows: out, cols: r, data: B }, A: { rows: r, cols: inn, data: A } };
}
