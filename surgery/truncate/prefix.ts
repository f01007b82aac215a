// `lora truncate --method prefix` (DyLoRA, docs/algorithms.md §3.4): keep the first b rows of A and
// the first b columns of B, in index order (DyLoRA trains prefixes to be good, so SVD order would
// be wrong), with alpha unchanged, so the loader's alpha/b is exactly the DyLoRA forward at rank b.
// `--alpha-mode` gives the kohya and LyCORIS training-time scales instead; `--unit U` writes every
// multiple of U below the full rank, named as kohya's extract_lora_from_dylora.py names them.
import { extname } from "node:path";
import type { FloatArray, Mat } from "../../linalg/types.js";

export type AlphaMode = "keep" | "kohya-train" | "lycoris";

/** A[:b, :] and B[:, :b], same element type as the input. */
export function prefixFactors<T extends FloatArray>(B: Mat<T>, A: Mat<T>, b: number): { B: Mat<T>; A: Mat<T> } {
  const r = A.rows,
    out = B.rows,
    inn = A.cols;
  if (b > r || b < 0) throw new Error(`prefixFactors: rank ${b} outside 0..${r}`);
  const ctor = A.data.constructor as { new (n: number): T };
  const Bn = new ctor(out * b);
  for (let i = 0; i < out; i++) for (let c = 0; c < b; c++) Bn[i * b + c] = B.data[i * r + c]!;
  const An = A.data.slice(0, b * inn) as T;
  return { B: { rows: out, cols: b, data: Bn }, A: { rows: b, cols: inn, data: An } };
}

/**
 * alpha' (kohya convention, scale alpha'/b) of a module of rank r and alpha truncated to b:
 *  keep        alpha            → alpha/b, the paper's forward and kohya's extractor (bit-identical);
 *  kohya-train alpha·√(b/r)     → alpha/√(r·b), kohya's networks/dylora.py training-time scale;
 *  lycoris     alpha·unit       → alpha/(b/unit), LyCORIS's alpha per block (unit = block_size).
 */
export function prefixAlpha(alpha: number, r: number, b: number, mode: AlphaMode, unit: number): number {
  if (mode === "kohya-train") return alpha * Math.sqrt(b / r);
  if (mode === "lycoris") return alpha * unit;
  return alpha;
}

/** The ranks kohya's split_lora_model emits: unit, 2·unit, … strictly below maxRank. */
export function splitRanks(maxRank: number, unit: number): number[] {
  const out: number[] = [];
  for (let r = unit; r < maxRank; r += unit) out.push(r);
  return out;
}

/** kohya's output naming `{stem}-{rank:04d}{ext}`; a PEFT directory gets `-0004` appended. */
export function splitPath(output: string, rank: number): string {
  const tag = `-${String(rank).padStart(4, "0")}`;
  const ext = extname(output);
  if (ext.toLowerCase() === ".safetensors") return output.slice(0, -ext.length) + tag + ext;
  return output.replace(/[\\/]+$/, "") + tag;
}
