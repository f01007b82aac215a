// cat: the exact weighted sum Σ wᵢ·sᵢ·Bᵢ·Aᵢ as one LoRA of rank Σ rᵢ (docs/algorithms.md §2.3
// concatenation–summation equivalence; PEFT's combination_type="cat"). PEFT folds wᵢ·sᵢ into A;
// here √|wᵢsᵢ| goes into both halves (the sign into A), which keeps the halves balanced and is
// equally exact.
import type { MergedFactors, MergeTerm, TermShape } from "./types.js";

export function catRank(terms: TermShape[]): number {
  return terms.reduce((s, t) => s + t.A.rows, 0);
}

export function mergeCat(terms: MergeTerm[]): MergedFactors {
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols;
  const R = catRank(terms);
  const B = new Float64Array(out * R),
    A = new Float64Array(R * inn);
  let off = 0;
  for (const t of terms) {
    const r = t.A.rows,
      f = t.weight * t.scale;
    const g = Math.sqrt(Math.abs(f)),
      ga = f < 0 ? -g : g;
    for (let i = 0; i < out; i++) for (let j = 0; j < r; j++) B[i * R + off + j] = g * t.B.data[i * r + j]!;
    for (let j = 0; j < r * inn; j++) A[off * inn + j] = ga * t.A.data[j]!;
    off += r;
  }
  return { B: { rows: out, cols: R, data: B }, A: { rows: R, cols: inn, data: A } };
}
