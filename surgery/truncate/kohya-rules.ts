// Per-module dynamic rank rules, after kohya sd-scripts `networks/resize_lora.py`
// (docs/algorithms.md §3.3, golden §9.9). Two flavours of the same three criteria:
//
//  * clean (the default): the fewest ranks that meet the criterion;
//  * kohya-compat (`--kohya-compat`): kohya's exact choice, off-by-one included —
//      sv_ratio:       idx = #{σ > σ₀/X}
//      sv_cumulative:  idx = searchsorted(cumsum(σ)/Σσ, X) + 1
//      sv_fro:         idx = searchsorted(cumsum(σ²)/Σσ², X²) + 1
//    idx clamped to [1, len(S) − 1], new_rank = idx + 1, capped by --new_rank (our --rank), and a
//    module whose un-scaled σ₀ ≤ 1e-6 (kohya's MIN_SV) gets rank 1.
//
// kohya takes S from a dense SVD of the un-scaled up@down, so len(S) = min(out, in) (trailing
// zeros included) and the MIN_SV test sees σ/scale. Ratios do not depend on the scale.
import { searchsortedLeft } from "../../linalg/search-sorted.js";

export type DynamicMethod = "sv_ratio" | "sv_cumulative" | "sv_fro";
export const DYNAMIC_METHODS: readonly DynamicMethod[] = ["sv_ratio", "sv_cumulative", "sv_fro"];

/** kohya's MIN_SV: a matrix whose largest singular value is at most this is "zero" (rank 1). */
export const KOHYA_MIN_SV = 1e-6;

export { searchsortedLeft };

function cumulativeFractions(S: ArrayLike<number>, squared: boolean): number[] {
  let total = 0;
  for (let i = 0; i < S.length; i++) total += squared ? S[i]! ** 2 : S[i]!;
  const out: number[] = [];
  let acc = 0;
  for (let i = 0; i < S.length; i++) {
    acc += squared ? S[i]! ** 2 : S[i]!;
    out.push(total > 0 ? acc / total : NaN);
  }
  return out;
}

/** kohya's index_sv_* (before the +1 of rank_resize), including the [1, len−1] clamp. */
export function kohyaIndex(S: ArrayLike<number>, method: DynamicMethod, param: number): number {
  let idx: number;
  if (method === "sv_ratio") {
    const min = S[0]! / param;
    idx = 0;
    for (let i = 0; i < S.length; i++) if (S[i]! > min) idx++;
  } else if (method === "sv_cumulative") {
    idx = searchsortedLeft(cumulativeFractions(S, false), param) + 1;
  } else {
    idx = searchsortedLeft(cumulativeFractions(S, true), param * param) + 1;
  }
  return Math.max(1, Math.min(idx, S.length - 1));
}

export interface KohyaRankOptions {
  /** kohya's --new_rank cap (our --rank); omitted = no cap beyond len(S). */
  cap?: number;
  /** The module's scale (σ of ΔW are divided by it for the MIN_SV test); default 1. */
  scale?: number;
  /** len(S) of kohya's dense SVD = min(out, in); S is padded with zeros up to it. Default S.length. */
  length?: number;
}

/**
 * The rank kohya's resize_lora.py gives a module with singular values S (descending, of the scaled
 * ΔW; `scale` undoes that for the MIN_SV test). May exceed the number of non-zero σ (kohya then
 * keeps zero components) but never `length`.
 */
export function kohyaDynamicRank(S: ArrayLike<number>, method: DynamicMethod | undefined, param: number, opts: KohyaRankOptions = {}): number {
  const length = Math.max(opts.length ?? S.length, S.length);
  const full = new Float64Array(length);
  for (let i = 0; i < S.length; i++) full[i] = S[i]!;
  let rank = method === undefined ? (opts.cap ?? length) : kohyaIndex(full, method, param) + 1;
  const s0 = (full[0] ?? 0) / (opts.scale ?? 1);
  if (!(Math.abs(s0) > KOHYA_MIN_SV)) rank = 1;
  else if (opts.cap !== undefined && rank > opts.cap) rank = opts.cap;
  return Math.min(rank, length);
}

/**
 * The clean rule: the fewest ranks meeting the criterion. sv_ratio keeps every σ > σ₀/X;
 * sv_cumulative the fewest k with Σ_{i<k} σᵢ ≥ X·Σσ; sv_fro the fewest k with Σ_{i<k} σᵢ² ≥ X²·Σσ²
 * (= --energy X²). 0 for an all-zero spectrum.
 */
export function cleanDynamicRank(S: ArrayLike<number>, method: DynamicMethod, param: number): number {
  if (S.length === 0 || !(S[0]! > 0)) return 0;
  if (method === "sv_ratio") {
    const min = S[0]! / param;
    let k = 0;
    for (let i = 0; i < S.length; i++) if (S[i]! > min) k++;
    return Math.max(1, k);
  }
  const squared = method === "sv_fro";
  const target = squared ? param * param : param;
  const cum = cumulativeFractions(S, squared);
  for (let i = 0; i < cum.length; i++) if (cum[i]! >= target * (1 - 1e-12)) return i + 1;
  return S.length;
}
