// What the factor-stacking merges (cat, linear) share: a term's weight·scale f carried by both
// factors as √|f| on B and sign(f)·√|f| on A, and zeroed output factors of the terms' shape.
import type { MergeTerm } from "./types.js";

export function splitWeight(t: MergeTerm): { g: number; ga: number } {
  const f = t.weight * t.scale;
  const g = Math.sqrt(Math.abs(f));
  return { g, ga: f < 0 ? -g : g };
}

/** B (out×R) and A (R×in) of zeros for terms of one module. */
export function zeroFactors(terms: MergeTerm[], R: number): { out: number; inn: number; B: Float64Array; A: Float64Array } {
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols;
  return { out, inn, B: new Float64Array(out * R), A: new Float64Array(R * inn) };
}
