// What every LyCORIS module reader starts from: the module's names (from its kohya stem), its
// scale rule, and the shape fields of the derived module it returns.
import type { ModuleKind } from "../types.js";

export interface ModuleId {
  name: string;
  path: string;
  matchKey: string;
  kohyaStem?: string;
}

export type ScaleOf = (dim: number) => Promise<{ scale: number; alpha: number; dim: number }>;

/** The shape fields of a derived module: a conv when it has kernel dims (ΔW out × n, n = in·Πkernel). */
export function moduleShape(
  id: ModuleId,
  out: number,
  n: number,
  kernel: number[] | undefined,
  rank: number,
): ModuleId & { kind: ModuleKind; out: number; in: number; kernel?: number[]; rank: number } {
  return { ...id, kind: kernel ? "conv" : "linear", out, in: n, ...(kernel ? { kernel } : {}), rank };
}
