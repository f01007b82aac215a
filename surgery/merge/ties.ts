// ties, dare (= PEFT's dare_linear), dare_ties and magnitude_prune on the dense ΔWᵢ = sᵢ·Bᵢ·Aᵢ
// of one module (PEFT's ties_svd / dare_linear_svd / dare_ties_svd / magnitude_prune_svd route,
// docs/algorithms.md §5.4), then back to rank K by randomized SVD (docs/algorithms.md §2.4). Only this module's
// dense matrices exist at a time, and never N of them: the sign election and the disjoint merge
// are two streaming passes over the inputs (each ΔWᵢ is recomputed and re-pruned identically;
// DARE masks come from a stream seeded by (seed, module, input)), so memory is O(out·in)
// whatever the number of inputs.
//
// Semantics (--ties-mode), with Tᵢ the pruned ΔWᵢ and wᵢ the weights:
//   magnitude prune: keep the ⌊density·numel⌋ largest |·| (ties broken by index), zero the rest;
//   random (DARE):   keep each entry with probability density, divide the kept ones by density.
//   peft (default; peft/utils/merge_utils.py):
//     ties       = magnitude prune → majority sign of ΣTᵢ ("total") or Σsign(Tᵢ) ("frequency"),
//                  elected on the UNWEIGHTED pruned tensors, ≥ 0 counts as + → disjoint mean
//                  Σ wᵢTᵢ·[sign Tᵢ = elected] / max(1, #agreeing)  (a mean over the COUNT)
//     dare_ties  = random prune → same election → same disjoint mean
//     dare       = random prune → Σ wᵢTᵢ          magnitude_prune = magnitude prune → Σ wᵢTᵢ
//   mergekit (mergekit/merge_methods/generalized_task_arithmetic.py):
//     the sign is elected on the WEIGHTED pruned tensors wᵢTᵢ (sum, or count of signs), the mask
//     compares sign(wᵢTᵢ), and ties normalises by Σ wᵢ·maskᵢ (0 → 1) instead of the count;
//     dare_ties is not normalised (Σ wᵢTᵢ·maskᵢ); dare and magnitude_prune are as in peft.
import { randomizedSvd } from "../../linalg/randomized-svd.js";
import { Rng } from "../../linalg/random.js";
import type { LinalgBackend, Mat } from "../../linalg/types.js";
import { truncatedFactors } from "./svd.js";
import type { MergedFactors, MergeTerm } from "./types.js";

export type DenseMethod = "ties" | "dare" | "dare_ties" | "magnitude_prune";

export interface TiesOptions {
  method: DenseMethod;
  /** Fraction of entries kept by the pruning, in (0, 1]; ≥ 1 keeps everything (as PEFT). */
  density: number;
  mode: "peft" | "mergekit";
  majoritySign: "total" | "frequency";
  /** Output rank K. */
  rank: number;
  seed: number;
  /** Identifies the module in the DARE streams (so masks do not depend on module order). */
  moduleKey: string;
  oversample?: number;
  powerIters?: number;
}

/** 32-bit FNV-1a of a string. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** A per-purpose seed derived from the user's seed and labels (module key, input index, …). */
export function deriveSeed(seed: number, ...labels: (string | number)[]): number {
  let h = (seed >>> 0) ^ 0x5bd1e995;
  for (const l of labels) h = Math.imul(h ^ fnv1a(String(l)), 0x9e3779b1) >>> 0;
  return h >>> 0;
}

/** The stream of DARE's Bernoulli draws for input `input` of a module: one uniform per entry, row-major. */
export function dareRng(seed: number, moduleKey: string, input: number): Rng {
  return new Rng(deriveSeed(seed, "dare", moduleKey, input));
}

/** k-th largest of values (0-based), by iterative quickselect; values is reordered. */
function kthLargest(values: Float64Array, k: number): number {
  let lo = 0,
    hi = values.length - 1;
  while (true) {
    if (lo === hi) return values[lo]!;
    // median of three as pivot (deterministic)
    const mid = (lo + hi) >>> 1;
    const a = values[lo]!,
      b = values[mid]!,
      c = values[hi]!;
    const pivot = a > b ? (b > c ? b : Math.min(a, c)) : a > c ? a : Math.min(b, c);
    let i = lo,
      j = hi;
    while (i <= j) {
      while (values[i]! > pivot) i++;
      while (values[j]! < pivot) j--;
      if (i <= j) {
        const t = values[i]!;
        values[i] = values[j]!;
        values[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return values[k]!;
  }
}

/** PEFT's magnitude_based_pruning in place: keep the ⌊density·n⌋ largest |t| (lower index first on ties). */
export function magnitudePrune(t: Float64Array, density: number): void {
  const n = t.length;
  if (density >= 1) return;
  const keep = Math.floor(density * n);
  if (keep <= 0) {
    t.fill(0);
    return;
  }
  const abs = new Float64Array(n);
  for (let i = 0; i < n; i++) abs[i] = Math.abs(t[i]!);
  const thr = kthLargest(abs, keep - 1);
  let above = 0;
  for (let i = 0; i < n; i++) if (Math.abs(t[i]!) > thr) above++;
  let tiesLeft = keep - above;
  for (let i = 0; i < n; i++) {
    const a = Math.abs(t[i]!);
    if (a > thr) continue;
    if (a === thr && tiesLeft > 0) {
      tiesLeft--;
      continue;
    }
    t[i] = 0;
  }
}

/** PEFT's random_pruning(rescale=True) in place, with the seeded stream: keep if u < density, then ÷ density. */
export function randomPrune(t: Float64Array, density: number, rng: Rng): void {
  if (density >= 1) return;
  for (let i = 0; i < t.length; i++) t[i] = rng.uniform() < density ? t[i]! / density : 0;
}

async function denseDelta(be: LinalgBackend, t: MergeTerm): Promise<Float64Array> {
  return (await be.gemm(t.B, t.A, { alpha: t.scale })).data as Float64Array;
}

/** Pruned task tensor Tᵢ of term `i` (recomputed identically on every call). */
async function pruned(be: LinalgBackend, t: MergeTerm, o: TiesOptions): Promise<Float64Array> {
  const d = await denseDelta(be, t);
  if (o.method === "ties" || o.method === "magnitude_prune") magnitudePrune(d, o.density);
  else randomPrune(d, o.density, dareRng(o.seed, o.moduleKey, t.input));
  return d;
}

/** The merged dense matrix (out×in) of the chosen method and mode. */
export async function mergeDense(be: LinalgBackend, terms: MergeTerm[], o: TiesOptions): Promise<Mat<Float64Array>> {
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols,
    n = out * inn;
  const merged = new Float64Array(n);
  if (o.method === "dare" || o.method === "magnitude_prune") {
    for (const t of terms) {
      const d = await pruned(be, t, o);
      for (let i = 0; i < n; i++) merged[i] += t.weight * d[i]!;
    }
    return { rows: out, cols: inn, data: merged };
  }
  // Pass 1: elect the sign.
  const mk = o.mode === "mergekit";
  const elect = new Float64Array(n);
  for (const t of terms) {
    const d = await pruned(be, t, o);
    const f = mk ? t.weight : 1;
    if (o.majoritySign === "total") for (let i = 0; i < n; i++) elect[i] += f * d[i]!;
    else for (let i = 0; i < n; i++) elect[i] += Math.sign(f * d[i]!);
  }
  const major = new Int8Array(n);
  for (let i = 0; i < n; i++) major[i] = elect[i]! >= 0 ? 1 : -1;
  // Pass 2: disjoint merge of the entries that agree with the elected sign.
  const den = new Float64Array(n);
  for (const t of terms) {
    const d = await pruned(be, t, o);
    const w = t.weight;
    for (let i = 0; i < n; i++) {
      const v = d[i]!;
      const s = Math.sign(mk ? w * v : v);
      if (s !== major[i]) continue;
      merged[i] += w * v;
      den[i] += mk ? w : 1;
    }
  }
  if (!mk) for (let i = 0; i < n; i++) merged[i] /= Math.max(den[i]!, 1);
  else if (o.method === "ties") for (let i = 0; i < n; i++) merged[i] /= den[i] === 0 ? 1 : den[i]!;
  return { rows: out, cols: inn, data: merged };
}

export function denseRank(k: number, out: number, inn: number): number {
  return Math.max(1, Math.min(k, out, inn));
}

export async function mergeTies(be: LinalgBackend, terms: MergeTerm[], o: TiesOptions): Promise<MergedFactors> {
  const out = terms[0]!.B.rows,
    inn = terms[0]!.A.cols;
  const dense = await mergeDense(be, terms, o);
  let denseNorm2 = 0;
  for (const v of dense.data) denseNorm2 += v * v;
  const t = denseRank(o.rank, out, inn);
  const svd = await randomizedSvd(be, dense, t, {
    seed: deriveSeed(o.seed, "rsvd", o.moduleKey),
    oversample: o.oversample ?? 10,
    powerIters: o.powerIters ?? 2,
  });
  let kept = 0;
  for (const s of svd.S) kept += s * s;
  return { ...truncatedFactors(svd, t), details: { retained_energy: denseNorm2 > 0 ? Math.min(1, kept / denseNorm2) : 1 } };
}
