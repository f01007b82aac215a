// Exact factors B·A of a ΔW built from stored pieces (docs/formats.md "LyCORIS"): the
// face-splitting (row-wise Khatri–Rao) form of a Hadamard product of two low-rank matrices, and
// the dense form (ΔW against an identity) when that is the smaller one.
import { matmul } from "../../../common/dense.js";
import type { ExactFactors, Float64Alloc } from "../derived.js";

/** (P1·Q1) ⊙ (P2·Q2) · s, a LoHa ΔW in its pieces: P out×r, Q r×n, row-major. */
export interface HadamardPair {
  P1: Float64Array;
  Q1: Float64Array;
  r1: number;
  P2: Float64Array;
  Q2: Float64Array;
  r2: number;
  out: number;
  n: number;
  s: number;
}

/**
 * h = B·A with B[o, i·r2+j] = P1[o,i]·P2[o,j] and A[i·r2+j, c] = s·Q1[i,c]·Q2[j,c]: rank r1·r2.
 * Every element is written, so `alloc` may hand out reused memory.
 */
export function faceSplit(h: HadamardPair, alloc: Float64Alloc = (k) => new Float64Array(k)): ExactFactors {
  const { P1, Q1, r1, P2, Q2, r2, out, n, s } = h;
  const R = r1 * r2;
  const B = alloc(out * R),
    A = alloc(R * n);
  for (let o = 0; o < out; o++)
    for (let i = 0; i < r1; i++) {
      const p = P1[o * r1 + i]!;
      for (let j = 0; j < r2; j++) B[o * R + i * r2 + j] = p * P2[o * r2 + j]!;
    }
  for (let i = 0; i < r1; i++)
    for (let j = 0; j < r2; j++) {
      const row = (i * r2 + j) * n;
      for (let c = 0; c < n; c++) A[row + c] = s * Q1[i * n + c]! * Q2[j * n + c]!;
    }
  return { B, A };
}

/** h dense, out×n. */
export function hadamardDense(h: HadamardPair): Float64Array {
  const { P1, Q1, r1, P2, Q2, r2, out, n, s } = h;
  const F1 = matmul(P1, out, r1, Q1, n),
    F2 = matmul(P2, out, r2, Q2, n);
  for (let i = 0; i < F1.length; i++) F1[i] = s * F1[i]! * F2[i]!;
  return F1;
}

/** Rank of the dense form of an out×n ΔW: the identity goes on the smaller side. */
export const denseRank = (out: number, n: number) => Math.min(out, n);

/** ΔW = B·A with B = I (out ≤ n, A = ΔW) or A = I (B = ΔW): exact, rank min(out, n). */
export function denseFactors(D: Float64Array, out: number, n: number): ExactFactors {
  if (out <= n) {
    const B = new Float64Array(out * out);
    for (let i = 0; i < out; i++) B[i * out + i] = 1;
    return { B, A: D };
  }
  const A = new Float64Array(n * n);
  for (let i = 0; i < n; i++) A[i * n + i] = 1;
  return { B: D, A };
}
