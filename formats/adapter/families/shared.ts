// What the family readers share (docs/formats.md "Adapter families"): folding a module's core into
// its two factors exactly (float64, scale included), the config a converted output starts from, and
// the one-line summary of how a rank budget was spread over the layers.
import { jacobiSvd, matmul } from "../../../common/dense.js";
import type { SafetensorsFile, TensorInfo } from "../../safetensors/index.js";
import type { DerivedModuleSpec, ExactFactors } from "../derived.js";
import { matchKeyFor } from "../names.js";
import type { PeftConfig } from "../peft-config.js";
import type { ModuleFamily } from "../types.js";

export { stripPeftPrefix } from "../names.js";

/** A Linear module of a family file, named by its dotted path, with its exact factors computed on read. */
export function linearModule(
  path: string,
  out: number,
  inn: number,
  rank: number,
  family: ModuleFamily,
  factors: () => Promise<ExactFactors>,
): DerivedModuleSpec {
  return { name: path, path, matchKey: matchKeyFor(path), kind: "linear", out, in: inn, rank, family, factors };
}

export const readF64 = (file: SafetensorsFile, t: TensorInfo) => file.readFloat64(t);

/**
 * ΔW = B·diag(d)·A with only the columns `keep` of B (rows of A): B' = B·diag(sign(d)·√|d|),
 * A' = diag(√|d|)·A, so both halves carry the same magnitude (B out×r, A r×in, d length r).
 */
export function foldDiagonal(B: Float64Array, d: ArrayLike<number>, A: Float64Array, out: number, r: number, inn: number, keep: readonly number[]) {
  const k = keep.length;
  const Bp = new Float64Array(out * k),
    Ap = new Float64Array(k * inn);
  keep.forEach((l, c) => {
    const v = d[l]!,
      root = Math.sqrt(Math.abs(v)),
      sb = Math.sign(v) * root;
    for (let i = 0; i < out; i++) Bp[i * k + c] = B[i * r + l]! * sb;
    for (let j = 0; j < inn; j++) Ap[c * inn + j] = A[l * inn + j]! * root;
  });
  return { B: Bp, A: Ap };
}

/** The live triplets of an SVD-style module (AdaLoRA, IncreLoRA): the indices of the non-zero E. */
export const liveTriplets = (e: Float64Array): number[] => [...e.keys()].filter((i) => e[i] !== 0);

/** ΔW = B·diag(scale·e)·A (B out×r, A r×in, e length r) kept to the live triplets `keep`. */
export interface Triplets {
  path: string;
  out: number;
  inn: number;
  r: number;
  e: Float64Array;
  scale: number;
  keep: readonly number[];
}

/** The Linear module of `t` (AdaLoRA, IncreLoRA): rank keep.length, its factors B and A (read on demand) folded with the diagonal. */
export function tripletModule(t: Triplets, family: ModuleFamily, read: () => Promise<{ B: Float64Array; A: Float64Array }>): DerivedModuleSpec {
  return linearModule(t.path, t.out, t.inn, t.keep.length, family, async () => {
    const { B, A } = await read();
    return foldDiagonal(
      B,
      Array.from(t.e, (x) => x * t.scale),
      A,
      t.out,
      t.r,
      t.inn,
      t.keep,
    );
  });
}

/**
 * ΔW = s·B·R·A with a full r×r core (LoRA-XS/SB, NLoRA): R's SVD U·Σ·Vᵀ split √Σ into both halves,
 * B' = B·U·√Σ and A' = √Σ·Vᵀ·A (the form `convert` writes; docs/formats.md "Adapter families").
 */
export function foldCore(B: Float64Array, R: Float64Array, A: Float64Array, out: number, r: number, inn: number, s: number) {
  const { U, S, V } = jacobiSvd(R, r, r);
  const left = new Float64Array(r * r),
    right = new Float64Array(r * r);
  for (let i = 0; i < r; i++)
    for (let k = 0; k < r; k++) {
      const root = Math.sqrt(Math.abs(s) * S[k]!);
      left[i * r + k] = U[i * r + k]! * root * Math.sign(s || 1);
      right[k * r + i] = V[i * r + k]! * root; // (√Σ·Vᵀ)[k, i]
    }
  return { B: matmul(B, out, r, left, r), A: matmul(right, r, r, A, inn) };
}

/** PEFT LoraConfig keys a converted output may keep from a family's config (everything else is the family's own). */
const KEPT = [
  "base_model_name_or_path",
  "revision",
  "task_type",
  "target_modules",
  "modules_to_save",
  "fan_in_fan_out",
  "bias",
  "layers_to_transform",
  "layers_pattern",
];

/** The config a converted standard-LoRA output starts from (peft_type LORA, r/alpha set by the writer). */
export function loraBaseConfig(cfg: PeftConfig | null): PeftConfig | null {
  if (!cfg) return null;
  const out: PeftConfig = { peft_type: "LORA" };
  for (const k of KEPT) if (cfg[k] !== undefined) out[k] = cfg[k];
  return out;
}

/** The layer index of a module path (first purely numeric component), or "-" when none. */
export function layerOf(path: string): string {
  return path.split(".").find((p) => /^\d+$/.test(p)) ?? "-";
}

/** "live ranks per layer: 0:18 1:12 …" for the given per-module live ranks. */
export function budgetByLayer(mods: readonly { path: string; live: number }[]): string {
  const per = new Map<string, number>();
  for (const m of mods) per.set(layerOf(m.path), (per.get(layerOf(m.path)) ?? 0) + m.live);
  const keys = [...per.keys()].sort((a, b) => (a === "-" ? 1 : b === "-" ? -1 : Number(a) - Number(b)));
  return keys.map((k) => `${k}:${per.get(k)}`).join(" ");
}
