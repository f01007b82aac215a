// cat: the exact weighted sum Σ wᵢ·sᵢ·Bᵢ·Aᵢ as one LoRA of rank Σ rᵢ (docs/algorithms.md §2.3
// concatenation–summation equivalence; PEFT's combination_type="cat"). PEFT folds wᵢ·sᵢ into A;
// here √|wᵢsᵢ| goes into both halves (the sign into A), which keeps the halves balanced and is
// equally exact.
import { splitWeight, zeroFactors } from "./term-weights.js";
import type { MergedFactors, MergeTerm, TermShape } from "./types.js";

export function catRank(terms: TermShape[]): number {
  return terms.reduce((s, t) => s + t.A.rows, 0);
}

export function mergeCat(terms: MergeTerm[]): MergedFactors {
  const R = catRank(terms);
  const { out, inn, B, A } = zeroFactors(terms, R);
  let off = 0;
  for (const t of terms) {
    const r = t.A.rows;
    const { g, ga } = splitWeight(t);
    for (let i = 0; i < out; i++) for (let j = 0; j < r; j++) B[i * R + off + j] = g * t.B.data[i * r + j]!;
    for (let j = 0; j < r * inn; j++) A[off * inn + j] = ga * t.A.data[j]!;
    off += r;
  }
  return { B: { rows: out, cols: R, data: B }, A: { rows: R, cols: inn, data: A }, exact: true };
}
