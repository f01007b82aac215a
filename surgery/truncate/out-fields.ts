// The fields every truncated module's output spec shares, whichever route computed its factors:
// its names in the output format (a kohya input keeps its stems; others get theirs from the naming
// maps on write), rank, alpha, shape, dtype and carried extras.
import type { Adapter, LoraModule } from "../../formats/adapter/index.js";
import type { OutModule } from "../../formats/adapter/write.js";
import type { DType } from "../../formats/safetensors/index.js";
import { kernelOf } from "../kernels.js";

export function outFields(
  c: { a: Adapter; format: string; te2: boolean },
  m: LoraModule,
  rank: number,
  alpha: number,
  dtype: DType,
  extras: OutModule["extras"],
): Omit<OutModule, "produce" | "rawFactors"> {
  const kernel = kernelOf(m.A.shape);
  return {
    path: m.path,
    // Other inputs get their kohya stem from the naming maps on write (formats/adapter/split-fuse.ts).
    ...(c.format === "kohya" && c.a.format === "kohya" ? { stem: m.name } : {}),
    kind: m.kind,
    rank,
    alpha,
    out: m.out,
    in: m.in,
    dtype,
    ...(kernel ? { kernel } : {}),
    extras,
  };
}
